"""How compiled networks train: room for every graph a multi-round stage needs.

`model.compile()` compiles nn.Module's call, one code object shared by every network of
the process, and dynamo keeps at most `recompile_limit` graphs of a code object (8 by
default). Each round of a stage makes new ones (the bit-widths are constants of the
graph): per network a training step per batch shape (full batches, a last partial
one), an evaluation per batch shape, so up to 4. Bit decay over [16, 8, 4, 2] needs
about 12, TS+PQ+KD over the same schedule 8 rounds of a student beside its teacher,
about 36. Past the limit dynamo would run the rest *uncompiled*, with one warning in
the log; here it stops the stage instead, with an error that says what to do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from lowbit.errors import TrainingError

# graphs of the shared code object: 16 rounds of 4, e.g. TS+PQ+KD over 8 bit-widths
RECOMPILE_LIMIT = 64


@contextlib.contextmanager
def room(compiled: bool) -> Iterator[None]:
    """While training compiled networks: dynamo keeps up to RECOMPILE_LIMIT graphs of a
    code object (at least its own limit), and failing to compile one is an error."""
    if not compiled:
        yield
        return
    import torch._dynamo.config as dynamo

    limit = max(RECOMPILE_LIMIT, dynamo.recompile_limit)
    patch = dynamo.patch(
        recompile_limit=limit,
        accumulated_recompile_limit=max(dynamo.accumulated_recompile_limit, 4 * limit),
        # incompatible with suppress_errors (TORCHDYNAMO_SUPPRESS_ERRORS), which asks
        # for the eager fallback on purpose
        fail_on_recompile_limit_hit=not dynamo.suppress_errors,
    )
    try:
        with patch:
            yield
    except torch._dynamo.exc.FailOnRecompileLimitHit as e:
        raise TrainingError(
            f"torch.compile: this stage needs more than {limit} graphs of one network "
            "(dynamo's recompile limit, lowbit.engine.compiling); set common.compile: false "
            "or train fewer rounds per stage"
        ) from e
