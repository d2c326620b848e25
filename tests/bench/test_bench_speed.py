"""Training and scoring speed at `smoke` shapes, side by side with xautodl's NB201 random-path
supernet (``TinyNetworkRANDOM``, the NATS-Bench RSPS baseline), plus exactness checks of the fast
paths those numbers rely on.

`make bench` runs the ``bench``-marked tests (pytest-benchmark; timings are reported, never
asserted). Targets (issue 10, 2-core CPU): the 6,466 unique NB201 architectures scored on a
256-image score subset in <= 5 min; SPOS training images/s >= xautodl's; scoring archs/s >= 1.5x
xautodl's, both measured in the same session on the same batches and threads. The unmarked tests
(fast-path exactness, the `harness bench` CLI, --copy-isomorphic) run with the normal suite.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from harness.cli_bench import (bench_score, bench_train, bench_xautodl_score, bench_xautodl_train, make_bench_job,
                               trained_supernet, xautodl_available, xautodl_net)
from harness.evaluate import SupernetEvaluator
from harness.spaces.nb201 import FastAvgPool2x2, FastAvgPool3x3, Nb201Space, PrefixCache

SCORE_IMAGES = 256
SUBSET = 300  # random unique archs scored by both implementations for the side-by-side ratio
RESULTS: dict[str, dict] = {}
needs_xautodl = pytest.mark.skipif(not xautodl_available(), reason="pip install --no-deps xautodl")


# --- exactness of the fast paths (normal test runs) ----------------------------------------
@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add synchronisation
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("shape", [(16, 8, 16, 16), (8, 16, 8, 8), (3, 5, 7, 9), (2, 2, 2, 2)])
def test_fast_pools_match_aten_bit_for_bit(shape):
    g = torch.Generator().manual_seed(0)
    pairs = [(FastAvgPool3x3(), torch.nn.AvgPool2d(3, 1, 1, count_include_pad=False))]
    if shape[-1] % 2 == 0 and shape[-2] % 2 == 0:
        pairs.append((FastAvgPool2x2(), torch.nn.AvgPool2d(2, 2)))
    for fast, ref in pairs:
        for scale in (1e-3, 1.0, 1e3):
            x = (torch.randn(*shape, generator=g) * scale).requires_grad_()
            out_f, out_r = fast(x), ref(x)
            grad = torch.randn(out_r.shape, generator=g)
            (gf,) = torch.autograd.grad(out_f, x, grad)
            (gr,) = torch.autograd.grad(out_r, x, grad)
            assert torch.equal(out_f.view(torch.int32), out_r.view(torch.int32))
            assert torch.equal(gf.view(torch.int32), gr.view(torch.int32))
            with torch.no_grad():
                assert torch.equal(fast(x).view(torch.int32), out_r.view(torch.int32))


def test_prefix_cache_gives_the_same_scores(job_factory, one_thread):
    job = job_factory()
    space = job.space
    model = trained_supernet(job, steps=4)
    rng = np.random.default_rng(1)
    archs = [space.sample(rng) for _ in range(30)] + [(3, 3, 3, 3, 3, 3), (0,) * 6, (1, 0, 3, 0, 0, 2)]
    x, y = job.data.score_x, job.data.score_y
    fast = SupernetEvaluator(model, x, y, batch_size=48, progress=False)
    plain = SupernetEvaluator(model, x, y, batch_size=48, progress=False, prefix_cache=False)
    s_fast, s_plain = fast.score(archs), plain.score(archs)
    assert np.array_equal(s_fast, s_plain)
    assert np.array_equal(fast.last_loss, plain.last_loss)
    assert fast.last_cache_stats["hits"] > 0 and plain.last_cache_stats is None
    # single-arch evaluate() and chunked read-back agree with score()
    assert fast.evaluate(archs[0]) == plain.evaluate(archs[0])
    SupernetEvaluator.READBACK_EVERY, old = 3, SupernetEvaluator.READBACK_EVERY
    try:
        assert np.array_equal(SupernetEvaluator(model, x, y, batch_size=48, progress=False).score(archs), s_plain)
    finally:
        SupernetEvaluator.READBACK_EVERY = old


def test_prefix_cache_is_off_where_it_would_change_results(job_factory, one_thread):
    job = job_factory()
    model = job.build_supernet()
    x, y = job.data.score_x, job.data.score_y
    assert SupernetEvaluator(model, x, y, progress=False).use_prefix_cache
    assert not SupernetEvaluator(model, x, y, progress=False, bn_mode="recal", recal_x=x).use_prefix_cache
    assert not SupernetEvaluator(model, x, y, progress=False, ctx_fn=lambda a: None).use_prefix_cache
    assert not SupernetEvaluator(model, x, y, progress=False, forward_fn=lambda m, xb, a, c: m(xb, a)).use_prefix_cache


def test_prefix_cache_recomputes_entries_modified_in_place():
    cache = PrefixCache(1 << 20)
    calls = []

    def make():
        calls.append(1)
        return torch.ones(4)

    t = cache.get_or_compute("k", make)
    assert cache.get_or_compute("k", make) is t and len(calls) == 1
    t.add_(1)  # a consumer modified the cached tensor in place
    assert torch.equal(cache.get_or_compute("k", make), torch.ones(4)) and len(calls) == 2
    small = PrefixCache(40)  # room for two 16-byte tensors: LRU eviction
    for k in "abc":
        small.get_or_compute(k, make)
    assert list(small.items) == ["b", "c"] and small.nbytes == 32


def test_bf16_autocast_trains_and_scores_on_cpu(job_factory, one_thread):
    """--precision bf16 goes through job.autocast() in the trainer and the evaluator."""
    job = job_factory(epochs=0.25)
    job.precision = "bf16"
    model = trained_supernet(job, steps=2)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 weights, bf16 compute
    from harness.evaluate import SupernetScorer

    scores = SupernetScorer(job, model).score([(3,) * 6, (2,) * 6])
    assert np.all(np.isfinite(scores))
    job.precision = "fp32"
    assert type(job.autocast()).__name__ == "nullcontext"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_supernet_is_channels_last(job_factory):  # pragma: no cover - GPU machines only
    job = job_factory()
    job.device = torch.device("cuda")
    model = job.build_supernet()
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_copy_isomorphic_scores_one_representative_per_class():
    from harness.runner import IsomorphicCopyScorer

    space = Nb201Space()
    seen = []

    class Fake:
        def score(self, archs):
            seen.extend(archs)
            return np.arange(len(archs), dtype=float)

        def picked(self):
            return None

    # (skip on 0->1, conv on 1->2) and (conv on 0->2, nothing else) are the same function
    a = space.parse("|skip_connect~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|skip_connect~2|")
    b = space.parse("|none~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|skip_connect~2|")
    c = space.parse("|nor_conv_1x1~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|")
    assert space.isomorphism_key(a) == space.isomorphism_key(b) != space.isomorphism_key(c)
    scorer = IsomorphicCopyScorer(Fake(), space)
    scores = scorer.score([a, c, b])
    assert seen == [a, c] and list(scores) == [0.0, 1.0, 0.0]
    assert scorer.record == {"representatives": 2, "copied": 1}
    assert scorer.picked() is None  # everything else passes through


def test_harness_bench_cli_prints_one_json_line():
    cmd = [sys.executable, "-m", "harness.cli", "bench", "--budget", "smoke", "--set", "channels=4",
           "--set", "resolution=8", "--set", "threads=1", "--set", "batch_size=32", "--steps", "2",
           "--max-archs", "6", "--score-size", "32", "--methods", "spos,params", "--seeds", "0,1", "--json-only"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["train_images_per_s"] > 0 and rec["score_archs_per_s"] > 0 and rec["score_archs_measured"] == 6
    st = rec["study"]
    assert st["per_method_s"]["params"] == 0.0 and st["estimated_wall_s"] == st["per_method_s"]["spos"] > 0
    assert "estimated wall time" in out.stderr


# --- benchmarks (make bench) ----------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_job():
    setup = make_bench_job("nb201", "smoke", score_size=SCORE_IMAGES)
    yield setup.job
    setup.close()


@pytest.fixture(scope="module")
def unique_archs(smoke_job):
    from harness.archsets import resolve_archs

    return resolve_archs(smoke_job.space, "unique")


@pytest.fixture(scope="module")
def subset(unique_archs):
    rng = np.random.default_rng(0)
    return [unique_archs[i] for i in sorted(rng.choice(len(unique_archs), SUBSET, replace=False))]


@pytest.fixture(scope="module")
def trained(smoke_job):
    return trained_supernet(smoke_job)


def _best(benchmark, fn, key: str, rounds: int) -> dict:
    runs = []
    benchmark.pedantic(lambda: runs.append(fn()), rounds=rounds, iterations=1)
    best = max(runs, key=lambda r: r[key])
    best.pop("scores", None)
    benchmark.extra_info.update({k: v for k, v in best.items() if not isinstance(v, dict)})
    return best


@pytest.mark.bench
def test_bench_train_spos(benchmark, smoke_job):
    RESULTS["train_ours"] = _best(benchmark, lambda: bench_train(smoke_job, steps=40), "images_per_s", 3)


@pytest.mark.bench
@needs_xautodl
def test_bench_train_xautodl(benchmark, smoke_job):
    RESULTS["train_xautodl"] = _best(benchmark, lambda: bench_xautodl_train(smoke_job, steps=40), "images_per_s", 3)


@pytest.mark.bench
def test_bench_score_subset_ours(benchmark, smoke_job, trained, subset):
    RESULTS["score_ours_subset"] = _best(benchmark, lambda: bench_score(smoke_job, trained, subset), "archs_per_s", 2)


@pytest.mark.bench
@needs_xautodl
def test_bench_score_subset_xautodl(benchmark, smoke_job, subset):
    net = xautodl_net(smoke_job)
    RESULTS["score_xautodl_subset"] = _best(benchmark, lambda: bench_xautodl_score(smoke_job, net, subset),
                                            "archs_per_s", 2)


@pytest.mark.bench
def test_bench_score_all_unique(benchmark, smoke_job, trained, unique_archs):
    """The target: 6,466 unique architectures on 256 images at smoke shapes in <= 300 s."""
    RESULTS["score_ours_unique"] = _best(benchmark, lambda: bench_score(smoke_job, trained, unique_archs),
                                         "archs_per_s", 1)


@pytest.mark.bench
def test_bench_speed_summary(capsys):
    """Prints the side-by-side figures (no assertion on timing)."""
    r = RESULTS
    summary = {"torch_threads": torch.get_num_threads(), "score_images": SCORE_IMAGES}
    if "train_ours" in r:
        summary["train_images_per_s"] = round(r["train_ours"]["images_per_s"], 1)
    if "score_ours_unique" in r:
        summary["unique_6466_seconds"] = round(r["score_ours_unique"]["seconds"], 1)
        summary["unique_archs_per_s"] = round(r["score_ours_unique"]["archs_per_s"], 2)
    if "score_ours_subset" in r:
        summary["subset_archs_per_s"] = round(r["score_ours_subset"]["archs_per_s"], 2)
    if "train_xautodl" in r and "train_ours" in r:
        summary["xautodl_train_images_per_s"] = round(r["train_xautodl"]["images_per_s"], 1)
        summary["train_ratio_vs_xautodl"] = round(r["train_ours"]["images_per_s"] / r["train_xautodl"]["images_per_s"], 3)
    if "score_xautodl_subset" in r and "score_ours_subset" in r:
        summary["xautodl_subset_archs_per_s"] = round(r["score_xautodl_subset"]["archs_per_s"], 2)
        summary["score_ratio_vs_xautodl"] = round(
            r["score_ours_subset"]["archs_per_s"] / r["score_xautodl_subset"]["archs_per_s"], 3)
    with capsys.disabled():
        print("\nbench speed summary: " + json.dumps(summary))
