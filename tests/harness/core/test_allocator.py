"""harness.core.allocator: glibc keeps freed pages (fewer page faults), the numbers stay the same.

The setting is process-wide and cannot be undone, so every case runs in its own interpreter.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from harness.core.paths import REPO_ROOT

glibc_only = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="mallopt is glibc's")

# 8 blocks of 2 MiB alive at once, written, then all freed, 20 times (malloc/free straight from
# libc, so nothing else sits on the heap between them): with glibc's defaults the freed heap top
# (16 MiB) exceeds the trim threshold (twice the largest freed mmapped block, 4 MiB) and goes back to
# the kernel every round, so the next round faults its pages in again; the tuned heap keeps them
FAULTS = """
import ctypes, json, resource, sys
from harness.core.allocator import tune_malloc
record = tune_malloc() if sys.argv[1] == "tuned" else "untouched"
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def one_round():
    blocks = [libc.malloc(2 << 20) for _ in range(8)]
    for b in blocks:
        ctypes.memset(b, 1, 2 << 20)
    for b in reversed(blocks):
        libc.free(b)
one_round()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    one_round()
print(json.dumps({"record": record, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0}))
"""

TRAIN = """
import hashlib, json, sys, torch
from harness.cli.bench import make_bench_job, trained_supernet
from harness.core.allocator import malloc_record, tune_malloc
if sys.argv[1] == "tuned":
    tune_malloc()
torch.set_num_threads(2)
tiny = (("channels", 4), ("resolution", 16), ("batch_size", 32), ("threads", 2))
model = trained_supernet(make_bench_job("nb201", "smoke", budget_overrides=tiny).job, steps=12)  # SPOS steps
h = hashlib.sha256()
for k, v in model.state_dict().items():
    h.update(k.encode()); h.update(v.contiguous().numpy().tobytes())
print(json.dumps({"record": malloc_record(), "digest": h.hexdigest()}))
"""


def _run(code: str, arg: str, **env) -> dict:
    out = subprocess.run([sys.executable, "-c", code, arg], cwd=REPO_ROOT, capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc_only
def test_tuned_heap_keeps_freed_pages_where_glibc_defaults_give_them_back():
    default, tuned = _run(FAULTS, "default"), _run(FAULTS, "tuned")
    assert tuned["record"].startswith("glibc mallopt: mmap_threshold 32 MiB")
    # 20 rounds x 16 MiB = 80,000 pages of 4 KiB if every round faults them all in again
    assert default["faults"] > 20_000, default
    assert tuned["faults"] < default["faults"] / 20, (default, tuned)


@glibc_only
def test_training_gives_the_same_weights_with_and_without_the_setting():
    default, tuned = _run(TRAIN, "default"), _run(TRAIN, "tuned")
    assert default["record"] == "default (not applied)"
    assert tuned["record"].startswith("glibc mallopt")
    assert tuned["digest"] == default["digest"]


def test_switch_off_leaves_glibc_defaults_and_says_so():
    out = _run(FAULTS, "tuned", HARNESS_MALLOC_TUNING="0")
    assert out["record"] == "default (HARNESS_MALLOC_TUNING=0)"
