"""Whether FFCV can be used here, decided once per process without importing it eagerly."""

from __future__ import annotations

import functools
import os
from importlib import metadata

from lowbit.data.cpus import available_cpus


def single_cpu_threading_layer() -> None:
    """On one CPU, numba runs no parallel kernel (FFCV compiles `parallel=True` only for
    more than one loader thread, and common.workers is bounded by the CPUs), but FFCV's
    import still starts numba's threading layer, TBB where libtbb is installed; and with
    one CPU in the affinity mask TBB's shutdown waits forever, so `lowbit stage prepare`
    under `taskset -c 0` or a 1-CPU SLURM task printed its summary and never exited
    (numba 0.68.1, libtbb 12; measured: killed after 240 s, 19-21 s with another layer).
    A value the user set is kept. Runs before any lowbit module imports numba."""
    if available_cpus()[0] == 1:
        os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")


single_cpu_threading_layer()


@functools.cache
def _ffcv_import_error() -> str | None:
    """None when `import ffcv` and its loader work, else the reason (one line).

    FFCV's C extension needs opencv and libturbojpeg; on a machine without them the
    import fails with an ImportError/OSError, which is the signal to fall back.
    """
    import torch

    # ffcv.pipeline.compiler sets torch's (and numba's) thread count to 1 when imported;
    # left alone, every stage that reads a .beton would train on one core.
    threads = torch.get_num_threads()
    try:
        import ffcv.loader
        import ffcv.writer  # noqa: F401
    except Exception as e:  # ImportError, OSError (missing .so), numba errors
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    finally:
        torch.set_num_threads(threads)
    return None


def ffcv_available() -> bool:
    """True when FFCV (and its system libraries) can be imported."""
    return _ffcv_import_error() is None


def ffcv_unavailable_reason() -> str:
    return _ffcv_import_error() or ""


def ffcv_version() -> str | None:
    try:
        return metadata.version("ffcv")
    except metadata.PackageNotFoundError:
        return None
