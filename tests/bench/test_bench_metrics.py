"""Benchmarks for harness.metrics on NAS-Bench-201 scale (15,625 architectures).

Run: python -m pytest tests/bench/test_bench_metrics.py --benchmark-only
Targets (not asserted): compute_all well under 1 s; bootstrap_ci of kendall_tau with 1,000
resamples under 30 s on a 2-core CPU.
"""
from __future__ import annotations

import numpy as np
import pytest

from harness import metrics as M

pytestmark = pytest.mark.bench

N = 15_625


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    gt = np.round(rng.normal(70.0, 10.0, N), 2)  # benchmark accuracies have 2 decimals: ties
    pred = gt + rng.normal(0.0, 8.0, N)
    return pred, gt


def test_bench_compute_all(benchmark, data) -> None:  # noqa: ANN001
    pred, gt = data
    rows = benchmark(M.compute_all, pred, gt)
    assert {r["metric"] for r in rows} == set(M.METRICS)


def test_bench_bootstrap_kendall_tau(benchmark, data) -> None:  # noqa: ANN001
    pred, gt = data
    lo, hi = benchmark.pedantic(
        M.bootstrap_ci, args=(M.kendall_tau, pred, gt), kwargs={"n_resamples": 1000}, rounds=1, iterations=1
    )
    assert lo < M.kendall_tau(pred, gt) < hi
