"""K-shot NAS: peak activation memory of one training step, K = 1 vs K = 8, at `smoke` shapes.

The paper (Sec. 3, "Analysis on Training Cost", Table 1) merges the K copies BEFORE the forward
pass, so a step stores one path's activations whatever K is. We measure it with
``torch.profiler`` (profile_memory=True) and its memory timeline, which classifies every CPU
allocation (PARAMETER, GRADIENT, OPTIMIZER_STATE, ACTIVATION, ...); the figure asserted is the
peak of ACTIVATION bytes during one full training step (K = 8: the simplex-net update on m paths of
b/m images, then the supernet update on one path; K = 1: the supernet update only, i.e. SPOS).

Run: python -m pytest tests/bench/test_bench_kshot.py -m bench --benchmark-enable -s
Target (asserted, it is the method's claim, not a timing): activation peak(K=8) / peak(K=1) < 1.5.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from harness.budgets import get_budget
from methods.kshot import KShotConfig, KShotRun
from tests.conftest import make_job, tiny_data

pytestmark = pytest.mark.bench

# order of the categories in export_memory_timeline's rows (after a leading 0 column)
CATEGORIES = ("PARAMETER", "OPTIMIZER_STATE", "INPUT", "TEMPORARY", "ACTIVATION", "GRADIENT", "AUTOGRAD_DETAIL",
              "UNKNOWN")


def _smoke_job(tmp_path: Path):
    b = get_budget("smoke")
    data = tiny_data(n_train=2 * b.batch_size, resolution=b.resolution)
    return make_job(tmp_path, channels=b.channels, cells=b.cells, resolution=b.resolution, batch_size=b.batch_size,
                    data=data)


def _train_step(run: KShotRun, opt: torch.optim.Optimizer, x, y, step: int) -> None:
    opt.zero_grad(set_to_none=True)
    run.step(x, y, step)
    opt.step()


def step_memory(tmp_path: Path, k: int, m: int = 16) -> dict:
    """Peak bytes per category during one post-warm-up training step with K copies."""
    job = _smoke_job(tmp_path)
    run = KShotRun(job, KShotConfig(k=k, paths_per_simplex_step=m, warmup_share=0.0), total_steps=10)
    opt = torch.optim.SGD(run.model.parameters(), lr=0.01, momentum=0.9)
    x, y = job.data.train_x[: job.budget.batch_size], job.data.train_y[: job.budget.batch_size]
    _train_step(run, opt, x, y, 0)  # allocate optimizer state outside the measured step
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        _train_step(run, opt, x, y, 1)
    path = tmp_path / f"timeline-k{k}.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated for CUDA snapshots; CPU has no successor
        prof.export_memory_timeline(str(path), device="cpu")
    _times, sizes = json.loads(path.read_text())
    sizes = np.asarray(sizes)[:, 1:]
    peaks = {c: int(v) for c, v in zip(CATEGORIES, sizes.max(0))}
    peaks["total"] = int(sizes.sum(1).max())
    return peaks


@pytest.fixture(scope="module")
def memory(tmp_path_factory) -> dict[int, dict]:
    torch.set_num_threads(1)
    return {k: step_memory(tmp_path_factory.mktemp(f"k{k}"), k) for k in (1, 8)}


def test_bench_activation_memory_k1_vs_k8(benchmark, memory, tmp_path) -> None:  # noqa: ANN001
    act1, act8 = memory[1]["ACTIVATION"], memory[8]["ACTIVATION"]
    ratio = act8 / act1
    benchmark.extra_info.update({
        "activation_peak_k1_bytes": act1, "activation_peak_k8_bytes": act8, "activation_ratio_k8_k1": ratio,
        "total_peak_k1_bytes": memory[1]["total"], "total_peak_k8_bytes": memory[8]["total"],
        "parameter_k1_bytes": memory[1]["PARAMETER"], "parameter_k8_bytes": memory[8]["PARAMETER"],
    })
    print(f"\nK-shot step peak activation memory (smoke shapes, b=128, m=16): K=1 {act1 / 2**20:.2f} MiB ({act1} B), "
          f"K=8 {act8 / 2**20:.2f} MiB ({act8} B), ratio {ratio:.3f}; total peak K=1 {memory[1]['total'] / 2**20:.2f} MiB, "
          f"K=8 {memory[8]['total'] / 2**20:.2f} MiB; parameters K=1 {memory[1]['PARAMETER'] / 2**20:.2f} MiB, "
          f"K=8 {memory[8]['PARAMETER'] / 2**20:.2f} MiB")
    assert act1 > 0
    assert ratio < 1.5, f"activation memory grew {ratio:.2f}x from K=1 to K=8 (merge before forward should keep it ~1x)"

    # wall time of one K=8 training step at smoke shapes (reported, not asserted)
    job = _smoke_job(tmp_path)
    run = KShotRun(job, KShotConfig(k=8, warmup_share=0.0), total_steps=10)
    opt = torch.optim.SGD(run.model.parameters(), lr=0.01, momentum=0.9)
    x, y = job.data.train_x[:128], job.data.train_y[:128]
    benchmark.pedantic(_train_step, args=(run, opt, x, y, 1), rounds=3, iterations=1, warmup_rounds=1)
