"""Optional compiled CPU kernels for the NB201 space, in C++: the exact average pools (3x3
searchable, 2x2 shortcut; ``csrc/avgpool.cpp``) and batch norm with batch statistics, forward and
backward (``csrc/batchnorm.cpp``).

Each gives ATen's bits (tests compare them with ATen bit for bit, and train through both paths to
identical weights): the pools do ATen's additions in ATen's order in one pass instead of nine shifted
views; batch norm interleaves ATen's per-channel sums, and its backward reproduces ATen's vector
lanes (the variant that does is found against ATen on first use, else ATen's own backward runs).
Built with OpenMP so ``at::parallel_for`` uses torch's threads. Compiled on first use with the C++
compiler PyTorch's extensions use (about a minute, once per machine and torch build; cached under
``HARNESS_CACHE_DIR/torch_extensions``). Without a compiler, or with ``HARNESS_CPU_KERNELS=0``, the
PyTorch path runs: slower, same numbers.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import threading
import time
from pathlib import Path

import torch

from harness.core.paths import default_cache_dir

SOURCE = Path(__file__).with_name("csrc") / "avgpool.cpp"  # the bindings; with batchnorm.cpp
SOURCES = (SOURCE, SOURCE.with_name("batchnorm.cpp"))
# -fopenmp: ATen's parallel_for is a header template whose threads are an OpenMP pragma; without the
# flag it compiles to a plain loop and every kernel ran on one thread. The library links the
# libgomp.so.1 torch already loaded (same soname), so torch's thread pool and setting are shared.
CFLAGS = ("-O3", "-fopenmp")
LDFLAGS = ("-fopenmp",)
log = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict = {}  # "module": the loaded extension or None; "error": why not


def enabled() -> bool:
    return os.environ.get("HARNESS_CPU_KERNELS", "1") != "0"


STALE_LOCK_S = 15 * 60  # a build takes about a minute; a lock this old was left by a killed build


def build_dir() -> Path:
    """One folder per source text, compiler flags, torch build and Python environment: a changed kernel or torch
    never loads a stale one, and two virtual environments sharing a cache (a study's worktree and
    the main checkout) do not rebuild the library under each other's running processes (the
    build files name the environment's include paths, so each would rebuild the other's)."""
    key = hashlib.sha256(b"".join(p.read_bytes() for p in SOURCES) + torch.__version__.encode()
                         + sys.prefix.encode() + " ".join(CFLAGS + LDFLAGS).encode()).hexdigest()[:12]
    return default_cache_dir() / "torch_extensions" / f"avgpool-{key}"


def clear_stale_lock(folder: Path, max_age_s: float = STALE_LOCK_S) -> bool:
    """Remove ``folder/lock`` when it is older than ``max_age_s``. PyTorch's extension loader
    waits, silently and without end, while that file exists; a build killed part-way leaves it
    behind, and every later job would hang there. Returns whether a lock was removed."""
    lock = folder / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    if age <= max_age_s:
        return False
    log.warning("removing %s, left %.0f min ago by a build that did not finish", lock, age / 60)
    lock.unlink(missing_ok=True)
    return True


def pool_kernels():
    """The compiled extension, or None (disabled, or it does not build here: said once in the log)."""
    if "module" in _state:
        return _state["module"]
    with _lock:
        if "module" not in _state:
            _state["module"] = None
            if enabled():
                try:
                    _state["module"] = _build()
                except Exception as e:  # noqa: BLE001 - no compiler, no headers...: the Python path runs
                    _state["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
                    log.warning("compiled CPU pool kernels unavailable (%s); using the PyTorch path (same numbers)",
                                _state["error"])
    return _state["module"]


def _build():
    # torch.utils.cpp_extension warns at import that there is no CUDA; these kernels are CPU only
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import cpp_extension

    folder = build_dir()
    folder.mkdir(parents=True, exist_ok=True)
    clear_stale_lock(folder)
    return cpp_extension.load(name="harness_avgpool", sources=[str(p) for p in SOURCES], build_directory=str(folder),
                              extra_cflags=list(CFLAGS), extra_ldflags=list(LDFLAGS), with_cuda=False, verbose=False)


@contextlib.contextmanager
def disabled():
    """The pure-PyTorch pool path inside the block (same numbers). For tracing with torch.compile,
    which cannot see into the extension: a graph traced inside the block keeps the traced path."""
    module = pool_kernels()
    _state["module"] = None
    try:
        yield
    finally:
        _state["module"] = module


def status() -> str:
    """'compiled', 'pytorch (disabled)' or 'pytorch (<why>)' - for logs and `harness bench`."""
    if not enabled():
        return "pytorch (HARNESS_CPU_KERNELS=0)"
    return "compiled" if pool_kernels() is not None else f"pytorch ({_state.get('error', 'not built')})"
