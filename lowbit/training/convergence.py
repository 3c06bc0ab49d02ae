"""Whether a run finished converging: the gain of its last quarter.

A result is only comparable if its curve is flat at the end. For a run whose final
round trains E epochs, the last quarter is its last q = max(1, round(E / 4)) epochs;
the late gain is validation top-1 after the final epoch minus top-1 after epoch E - q
of that round, in points. A run that gained more than LATE_GAIN_LIMIT there was still
improving: the report flags it "not converged". The engine always validates after
epoch E - q (`eval_epochs`) so the gain can be measured at any eval cadence.

>>> rows = [{"round": 1, "net/val_top1": v} for v in (50.0, 60.0, 70.0, 70.4)]
>>> late_gain(rows, "net"), converged(late_gain(rows, "net"))
(0.4, True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

LATE_GAIN_LIMIT = 1.0  # top-1 points gained over the last quarter that still count as flat


def quarter_start(epochs: int) -> int:
    """The epoch (1-based, of the round) after which the last quarter starts; 0: none."""
    return epochs - max(1, round(epochs / 4)) if epochs > 1 else 0


def eval_epochs(epochs: int) -> tuple[int, ...]:
    """Epochs a round must validate after (besides its cadence) to measure its late gain."""
    q = quarter_start(epochs)
    return (q,) if q > 0 else ()


def late_gain(rows: Sequence[Mapping[str, float]], net: str) -> float | None:
    """Top-1 gained over the last quarter of the final round (None: cannot be measured,
    e.g. a one-epoch round or no validation at the quarter point)."""
    if not rows:
        return None
    final = [r for r in rows if r.get("round", 1) == rows[-1].get("round", 1)]
    q = quarter_start(len(final))
    key = f"{net}/val_top1"
    if q == 0:
        return None
    before = [float(r[key]) for r in final[:q] if math.isfinite(float(r.get(key, math.nan)))]
    after = float(final[-1].get(key, math.nan))
    if not before or not math.isfinite(after):
        return None
    return round(after - before[-1], 4)


def converged(gain: float | None) -> bool | None:
    """True / False by LATE_GAIN_LIMIT; None when the gain could not be measured."""
    return None if gain is None else gain <= LATE_GAIN_LIMIT
