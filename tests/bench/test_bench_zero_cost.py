"""Throughput of the zero-cost proxies at `smoke` shapes (C=8, N=1, 16px, batch 64, 2 threads).

Run: make bench  (or python -m pytest tests/bench/test_bench_zero_cost.py -m bench --benchmark-enable
--benchmark-only -s). Target (not asserted): the 6,466 unique NB201 architectures in <= 10 min per
proxy, i.e. >= 10.8 archs/s. Each round scores N_ARCHS unique architectures with a fresh scorer
(standalone build + seeded init + proxy, as in a run); archs/s and the extrapolated time for 6,466
are printed and stored in the benchmark's extra_info. Wall time on a shared CPU also counts other
processes' load, so the process CPU time per architecture is reported beside it;
ZC_BENCH_THREADS=1 measures single-threaded (faster than 2 threads when other jobs share the cores).
"""
from __future__ import annotations

import os
import time

import pytest
import torch

from harness.archsets import resolve_archs
from harness.spaces.nb201 import Nb201Space
from methods.zero_cost import PROXIES, ProxyScorer, ZeroCostConfig
from tests.conftest import make_job, tiny_data

pytestmark = pytest.mark.bench

N_UNIQUE = 6466
N_ARCHS = 150
THREADS = int(os.environ.get("ZC_BENCH_THREADS", "2"))  # the smoke budget's 2; 1 on an oversubscribed CPU


@pytest.fixture(scope="module")
def archs() -> list:
    unique = resolve_archs(Nb201Space(), "unique")
    assert len(unique) == N_UNIQUE
    return unique[:: len(unique) // N_ARCHS][:N_ARCHS]  # spread over the benchmark order


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    data = tiny_data(n_train=512, n_search=64, n_score=64, resolution=16)
    return make_job(tmp_path_factory.mktemp("zc"), data=data, channels=8, cells=1, resolution=16, threads=THREADS)


@pytest.mark.parametrize("proxy", list(PROXIES))
def test_bench_proxy(benchmark, job, archs, proxy) -> None:  # noqa: ANN001
    prev = torch.get_num_threads()
    torch.set_num_threads(job.budget.threads)
    cpu: list[float] = []

    def run():
        scorer = ProxyScorer(job, proxy, ZeroCostConfig(proxy))
        c0 = time.process_time()
        out = scorer.score(archs)
        cpu.append(time.process_time() - c0)
        return out

    try:
        scores = benchmark.pedantic(run, rounds=2, iterations=1, warmup_rounds=0)
    finally:
        torch.set_num_threads(prev)
    assert len(scores) == len(archs)
    wall = benchmark.stats.stats.min
    rate = len(archs) / wall
    info = {"archs_per_s": rate, "minutes_for_6466_unique": N_UNIQUE / rate / 60,
            "cpu_s_per_arch": min(cpu) / len(archs)}
    benchmark.extra_info.update(info)
    print(f"\n{proxy}: {rate:.1f} archs/s wall -> {info['minutes_for_6466_unique']:.1f} min for {N_UNIQUE} unique; "
          f"{1000 * info['cpu_s_per_arch']:.1f} ms CPU per arch")
