"""Progressive bit decay, PQ (paper §3.2).

Train at a high bit-width and use the result to initialise the next lower one, down to
the target; weights and activations decay together. Decaying changes the bit-width of
every quantizer and trains on with the same parameters. With `two_stage=True` each step
first lowers the weights, then the activations (TS inside PQ) [lowbit combination].

Example:
    >>> from lowbit.methods import decay_rounds
    >>> [(r.w_bits, r.a_bits) for r in decay_rounds([(8, 8), (4, 4), (2, 2)], epochs=5)]
    [(8, 8), (4, 4), (2, 2)]
    >>> [(r.w_bits, r.a_bits) for r in decay_rounds([(8, 8), (4, 4)], 5, two_stage=True)]
    [(8, 32), (8, 8), (4, 8), (4, 4)]
    >>> [r.epochs for r in decay_rounds([(8, 8), (4, 4), (2, 2)], 12, step_epochs=3)]
    [3, 3, 12]
"""

from __future__ import annotations

from collections.abc import Sequence

from lowbit.identity import bits_token
from lowbit.methods.base import Context, Recipe
from lowbit.methods.rounds import Round
from lowbit.quant.functional import MAX_BITS, check_bits


def split_epochs(total: int, n: int) -> list[int]:
    """`total` epochs over `n` rounds as evenly as possible, the remainder to the last
    (lowest-bit) rounds: split_epochs(8, 3) == [2, 3, 3]."""
    if n < 1 or total < n:
        raise ValueError(f"cannot split {total} epochs over {n} rounds (need >= 1 each)")
    base, rest = divmod(total, n)
    return [base + (i >= n - rest) for i in range(n)]


def decay_rounds(
    steps: Sequence[tuple[int, int]],
    epochs: int,
    two_stage: bool = False,
    total_epochs: int | None = None,
    step_epochs: int | None = None,
) -> list[Round]:
    """Rounds for a decay sequence of (w_bits, a_bits) steps: the final round trains
    `epochs` and every earlier one `step_epochs` (default `epochs`), the paper's
    protocol; or `total_epochs` split over all rounds (equal-cost accounting)."""
    if not steps:
        raise ValueError("bit decay needs at least one step")
    prev_a = MAX_BITS
    rounds: list[Round] = []
    for i, (w, a) in enumerate(steps):
        check_bits(w, "w_bits")
        check_bits(a, "a_bits")
        if i and (w > steps[i - 1][0] or a > steps[i - 1][1]):
            raise ValueError(f"bit decay steps must not increase, got {list(steps)}")
        if two_stage and a != prev_a:
            rounds.append(Round(w, prev_a, epochs, name=bits_token(w, prev_a)))
        rounds.append(Round(w, a, epochs, name=bits_token(w, a)))
        prev_a = a
    if step_epochs is not None:
        rounds = [
            Round(r.w_bits, r.a_bits, step_epochs, r.a_enabled, r.name) for r in rounds[:-1]
        ] + rounds[-1:]
    if total_epochs is not None:
        split = split_epochs(total_epochs, len(rounds))
        rounds = [
            Round(r.w_bits, r.a_bits, e, r.a_enabled, r.name)
            for r, e in zip(rounds, split, strict=True)
        ]
    return rounds


class BitDecay:
    """Stage method of `bit-decay` and `ts-pq-kd`: the decay rounds down to the target
    ("ts+pq" when every step quantizes weights first)."""

    name = "pq"

    def recipe(self, ctx: Context) -> Recipe:
        p = ctx.cfg.params
        rounds = decay_rounds(p.steps(), p.epochs, p.two_stage, p.total_epochs, p.step_epochs)
        return Recipe("ts+pq" if p.two_stage else self.name, rounds)


BIT_DECAY = BitDecay()
