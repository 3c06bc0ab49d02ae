"""Whether a run finished converging: the gain of its last quarter, beyond noise.

A result is only comparable if its curve is flat at the end. For a run whose final
round trains E epochs, the last quarter is its last q = max(1, round(E / 4)) epochs;
the late gain is validation top-1 after the final epoch minus top-1 after epoch E - q
of that round, in points. The engine always validates after epoch E - q (`eval_epochs`)
so the gain can be measured at any eval cadence.

A gain above LATE_GAIN_LIMIT flags the run "not converged" only if it is also more than
evaluation noise: the engine counts the images the final evaluation answers right and
the epoch-(E - q) one wrong (gained), and the reverse (lost); under "no change" each of
those gained + lost images falls either way with probability 1/2, and McNemar's exact
one-sided test gives the p-value of a gain at least this large (`late_p`). On a small
validation set (360 digits images: 1 image = 0.28 points) a 2-bit network at its lowest
learning rate flips a dozen images between epochs, so a 1-point gain alone is noise; on
CIFAR-10's 10,000 test images the limit decides. Runs without the counts (written before
lowbit recorded them) are judged by the limit alone.

>>> rows = [{"round": 1, "net/val_top1": v} for v in (50.0, 60.0, 70.0, 70.4)]
>>> late_gain(rows, "net"), converged(late_gain(rows, "net"))
(0.4, True)
>>> rows[-1].update({"net/val_top1": 72.0, "net/val_gained": 9.0, "net/val_lost": 3.0})
>>> round(late_p(rows, "net"), 3), converged(late_gain(rows, "net"), late_p(rows, "net"))
(0.073, True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

LATE_GAIN_LIMIT = 1.0  # top-1 points gained over the last quarter that still count as flat
LATE_GAIN_ALPHA = 0.05  # a larger gain counts as still rising only if McNemar's p is below


def quarter_start(epochs: int) -> int:
    """The epoch (1-based, of the round) after which the last quarter starts; 0: none."""
    return epochs - max(1, round(epochs / 4)) if epochs > 1 else 0


def eval_epochs(epochs: int) -> tuple[int, ...]:
    """Epochs a round must validate after (besides its cadence) to measure its late gain."""
    q = quarter_start(epochs)
    return (q,) if q > 0 else ()


def _final_round(rows: Sequence[Mapping[str, float]]) -> list[Mapping[str, float]]:
    return [r for r in rows if r.get("round", 1) == rows[-1].get("round", 1)]


def _value(row: Mapping[str, float], key: str) -> float:
    try:
        return float(row.get(key, math.nan))
    except (TypeError, ValueError):  # an empty history.csv cell
        return math.nan


def late_gain(rows: Sequence[Mapping[str, float]], net: str) -> float | None:
    """Top-1 gained over the last quarter of the final round (None: cannot be measured,
    e.g. a one-epoch round or no validation at the quarter point)."""
    if not rows:
        return None
    final = _final_round(rows)
    q = quarter_start(len(final))
    key = f"{net}/val_top1"
    if q == 0:
        return None
    before = [_value(r, key) for r in final[:q] if math.isfinite(_value(r, key))]
    after = _value(final[-1], key)
    if not before or not math.isfinite(after):
        return None
    return round(after - before[-1], 4)


def late_p(rows: Sequence[Mapping[str, float]], net: str) -> float | None:
    """McNemar's exact one-sided p of the final evaluation's gain over the quarter-point
    one: P(at least `gained` of the gained + lost changed images were gains | no change).
    None where the engine did not count them."""
    if not rows:
        return None
    gained, lost = (_value(rows[-1], f"{net}/val_{k}") for k in ("gained", "lost"))
    if not (math.isfinite(gained) and math.isfinite(lost)):
        return None
    return binomial_tail(int(gained), int(gained + lost))


def binomial_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2), exactly: sum of C(n, i) for i >= k over 2^n in
    integers (scipy.stats would add a second to every stage's start-up).

    >>> binomial_tail(9, 12), binomial_tail(0, 0), binomial_tail(5001, 10000) < 0.5
    (0.072998046875, 1.0, True)
    """
    if k <= 0:
        return 1.0
    term = math.comb(n, k)  # C(n, i), updated in place for i = k, k + 1, ..., n
    total = 0
    for i in range(k, n + 1):
        total += term
        term = term * (n - i) // (i + 1)
    return total / 2**n


def converged(gain: float | None, p: float | None = None) -> bool | None:
    """False when the late gain is above LATE_GAIN_LIMIT and (where counted) McNemar's p
    below LATE_GAIN_ALPHA; None when the gain could not be measured."""
    if gain is None:
        return None
    return gain <= LATE_GAIN_LIMIT or (p is not None and p >= LATE_GAIN_ALPHA)
