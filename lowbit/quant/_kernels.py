"""Build (once per user, machine kind and torch version) and load the fused C++ kernels.

The kernels in csrc/quant_cpu.cpp make each activation quantizer one pass forward
and one backward (see fused.py). They are compiled on first use with
torch.utils.cpp_extension (ninja + the system C++ compiler, about 30 s) into a
per-user cache, `$LOWBIT_EXTENSIONS_DIR`, else `$XDG_CACHE_HOME/lowbit/extensions`,
else `~/.cache/lowbit/extensions`; the build directory is named after a hash of the
source, flags and versions, so a changed source never loads a stale library, and
torch's build lock makes concurrent first builds (pytest-xdist, several jobs)
wait for one another instead of racing.

Once built, later processes import the library directly (no compiler needed, e.g. on
cluster nodes that share the cache with a login node). When the compiler or ninja is
missing, or the build fails, the pure-PyTorch path is chosen automatically and the
reason is logged (INFO for a missing tool, WARNING for a failed build); nothing is
raised. `LOWBIT_KERNELS=torch` forces the fallback,
`LOWBIT_KERNELS=cpp` makes a failed build an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "quant_cpu.cpp"
# -ffp-contract=off: no fused multiply-add, so every float op rounds as in the reference.
# No -march=native: the cache may sit on a home directory shared by different CPUs.
CFLAGS = ("-O3", "-fopenmp", "-ffp-contract=off", "-Wno-psabi")
LDFLAGS = ("-fopenmp",)
BACKENDS = ("auto", "cpp", "torch")


def cache_root() -> Path:
    if os.environ.get("LOWBIT_EXTENSIONS_DIR"):
        return Path(os.environ["LOWBIT_EXTENSIONS_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lowbit" / "extensions"


def extension_name(source: Path | None = None) -> str:
    """Module name that changes whenever the sources (the .cpp and the headers beside
    it), flags or toolchain versions do."""
    source = SOURCE if source is None else source
    h = hashlib.sha256(source.read_bytes())
    for header in sorted(source.parent.glob("*.h")):
        h.update(header.read_bytes())
    for part in (*CFLAGS, *LDFLAGS, torch.__version__, sys.version, os.environ.get("CXX", "")):
        h.update(part.encode())
    return f"lowbit_quant_cpu_{h.hexdigest()[:12]}"


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Mute a logger below ERROR (cpp_extension warns about CUDA on CPU-only hosts)."""
    lg = logging.getLogger(logger_name)
    old = lg.level
    lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lg.setLevel(old)


class ExtensionLoader:
    """Builds and imports the extension at most once; remembers a failure."""

    def __init__(self, root: Path | None = None, cxx: str | None = None) -> None:
        self.root = root
        self.cxx = cxx
        self.reason = "not loaded yet"
        self._module: ModuleType | None = None
        self._tried = False
        self._lock = threading.Lock()

    def load(self, strict: bool = False) -> ModuleType | None:
        with self._lock:
            if not self._tried:
                self._tried = True
                self._module = self._build(strict)
            elif strict and self._module is None:
                raise RuntimeError(f"lowbit C++ kernels unavailable: {self.reason}")
            return self._module

    def _missing_tool(self) -> str | None:
        cxx = self.cxx or os.environ.get("CXX", "c++")
        if shutil.which(cxx) is None:
            return f"no C++ compiler ({cxx!r} not on PATH)"
        if shutil.which("ninja") is None and importlib.util.find_spec("ninja") is None:
            return "ninja not found"
        return None

    def _build(self, strict: bool) -> ModuleType | None:
        try:
            name = extension_name()
        except OSError as e:  # an install without the csrc/ package data
            return self._fail(f"kernel source missing: {e}", strict, logging.INFO, e)
        tag = f"py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__}"
        build_dir = (self.root or cache_root()) / tag / name
        module = _import_built(name, build_dir)  # built before: no compiler, no ninja needed
        if module is not None:
            self.reason = f"loaded from {build_dir}"
            return module
        missing = self._missing_tool()
        if missing is not None:
            return self._fail(missing, strict, logging.INFO)
        try:
            module = self._compile(name, build_dir)
        except Exception as e:  # compiler errors, missing headers, unwritable cache, ...
            reason = f"build failed: {type(e).__name__}: {str(e).strip()[-500:]}"
            return self._fail(reason, strict, logging.WARNING, e)
        self.reason = f"built in {build_dir}"
        logger.debug("lowbit: C++ kernels %s", self.reason)
        return module

    def _compile(self, name: str, build_dir: Path) -> ModuleType:
        build_dir.mkdir(parents=True, exist_ok=True)
        env = {"CXX": self.cxx} if self.cxx else {}
        # cpp_extension runs `ninja` from PATH; the pip package's binary lies beside this
        # interpreter, which is not on PATH when the venv is not activated (the installer)
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
        with _quiet("torch.utils.cpp_extension"), _env(env):
            from torch.utils import cpp_extension

            # cpp_extension holds an OS file lock in build_dir while it builds, so
            # concurrent first uses wait for one build instead of racing.
            module = cpp_extension.load(
                name=name,
                sources=[str(SOURCE)],
                extra_cflags=list(CFLAGS),
                extra_ldflags=list(LDFLAGS),
                build_directory=str(build_dir),
                verbose=False,
            )
        tmp = build_dir / f"{_DONE}.{os.getpid()}.tmp"
        tmp.write_text(name + "\n")
        os.replace(tmp, build_dir / _DONE)  # atomic: others now import without building
        return module

    def _fail(self, reason: str, strict: bool, level: int, cause: Exception | None = None) -> None:
        self.reason = reason
        logger.log(level, "lowbit: C++ kernels unavailable (%s); using the PyTorch path", reason)
        if strict:
            raise RuntimeError(f"lowbit C++ kernels unavailable: {reason}") from cause
        return None


_DONE = "BUILD_OK"  # written after a successful build; the library is complete


def _import_built(name: str, build_dir: Path) -> ModuleType | None:
    """Import an already built library, or None if there is none (or it fails to load)."""
    lib = build_dir / f"{name}.so"
    if not (build_dir / _DONE).is_file() or not lib.is_file():
        return None
    try:
        spec = importlib.util.spec_from_file_location(name, lib)
        if spec is None or spec.loader is None:
            return None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except ImportError as e:
        logger.debug("lowbit: rebuilding %s: %s", lib, e)
        return None
    return module


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_LOADER = ExtensionLoader()


def requested_backend() -> str:
    choice = os.environ.get("LOWBIT_KERNELS", "auto").strip().lower() or "auto"
    if choice not in BACKENDS:
        raise ValueError(f"LOWBIT_KERNELS must be one of {', '.join(BACKENDS)}, got {choice!r}")
    return choice


def cpu_extension() -> ModuleType | None:
    """The compiled kernels, or None when the PyTorch path is to be used."""
    choice = requested_backend()
    if choice == "torch":
        return None
    return _LOADER.load(strict=choice == "cpp")


def backend_name() -> str:
    """ "cpp" when the CPU kernels are in use, else "torch" (builds on first call)."""
    return "cpp" if cpu_extension() is not None else "torch"


def backend_reason() -> str:
    """Why the current backend is in use (for logs and benchmark reports)."""
    if requested_backend() == "torch":
        return "PyTorch path forced (LOWBIT_KERNELS=torch)"
    return _LOADER.reason


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Temporarily force "torch", "cpp" or "auto" (tests, benchmarks): LOWBIT_KERNELS for
    the duration of the block, so child processes see the same choice."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    old = os.environ.get("LOWBIT_KERNELS")
    os.environ["LOWBIT_KERNELS"] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LOWBIT_KERNELS", None)
        else:
            os.environ["LOWBIT_KERNELS"] = old


def prebuild() -> str:
    """Build the kernels now (or find them built) and say which: the installer runs this
    beside pip, so the first quantized stage does not wait ~30 s for the compiler."""
    cpu_extension()
    return backend_reason()
