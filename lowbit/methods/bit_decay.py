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
"""

from __future__ import annotations

from collections.abc import Sequence

from lowbit.methods.rounds import Round
from lowbit.quant.functional import MAX_BITS, check_bits


def decay_rounds(
    steps: Sequence[tuple[int, int]], epochs: int, two_stage: bool = False
) -> list[Round]:
    """Rounds for a decay sequence of (w_bits, a_bits) steps, `epochs` each."""
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
            rounds.append(Round(w, prev_a, epochs, name=f"w{w}a{prev_a}"))
        rounds.append(Round(w, a, epochs, name=f"w{w}a{a}"))
        prev_a = a
    return rounds
