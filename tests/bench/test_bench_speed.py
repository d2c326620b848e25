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

from harness.cli.bench import (bench_score, bench_train, bench_xautodl_score, bench_xautodl_train,
                               bench_xautodl_train_as_shipped, make_bench_job, trained_supernet, xautodl_available,
                               xautodl_net)
from harness.engine.evaluator import SupernetEvaluator
from harness.spaces.nb201 import FastAvgPool2x2, FastAvgPool3x3, Nb201Space, PrefixCache

SCORE_IMAGES = 256
SUBSET = 300  # random unique archs scored by both implementations for the side-by-side ratio
RESULTS: dict[str, dict] = {}  # printed at the end of the module (make bench output)
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
    from harness.engine.evaluator import SupernetScorer

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
    from harness.study.jobs import IsomorphicCopyScorer

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
# Side by side = paired: each round measures ours, then xautodl (order alternating), seconds apart,
# so a shared machine's changing load hits both alike; we report the best of each and the median of
# the per-round ratios. threads=2 is the smoke budget's setting; threads=1 is also measured because
# on an oversubscribed machine two-thread runs mostly time OpenMP barriers, not arithmetic.
THREADS = [2, 1]
BUDGETS = ["smoke", "study"]  # issue 10's targets were set at smoke shapes, issue 21's at study shapes


def _job(threads: int, budget: str = "smoke"):
    return make_bench_job("nb201", budget, score_size=SCORE_IMAGES, budget_overrides=(("threads", threads),))


@pytest.fixture(scope="module")
def unique_archs():
    from harness.archsets import resolve_archs

    return resolve_archs(Nb201Space(), "unique")


@pytest.fixture(scope="module")
def subset(unique_archs):
    rng = np.random.default_rng(0)
    return [unique_archs[i] for i in sorted(rng.choice(len(unique_archs), SUBSET, replace=False))]


@pytest.fixture(scope="module", autouse=True)
def _print_summary(request):
    yield
    if RESULTS:
        reporter = request.config.pluginmanager.getplugin("terminalreporter")
        for name, rec in RESULTS.items():
            line = f"bench speed {name}: {json.dumps(rec)}"
            reporter.write_line(line) if reporter else print(line)


def _paired(benchmark, name: str, ours, theirs, key: str, rounds: int, extra_peers: dict | None = None) -> dict:
    """``rounds`` rounds of ours and xautodl (``theirs``; and each of ``extra_peers``, name -> run),
    the order reversed every other round; ratios are ours over each peer within a round."""
    peers = {"xautodl": theirs, **(extra_peers or {})}
    rows: list[dict] = []

    def one_round():
        arms = [("ours", ours), *peers.items()]
        rows.append({arm: run() for arm, run in (arms if len(rows) % 2 == 0 else arms[::-1])})

    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    per_cpu = {"images_per_s": lambda r: r["steps"] * r["batch_size"] / r["cpu_seconds"],
               "archs_per_s": lambda r: r["archs"] / r["cpu_seconds"]}[key]
    rec = {"ours_best": max(r["ours"][key] for r in rows),
           "ours_best_per_cpu_s": max(per_cpu(r["ours"]) for r in rows)}
    for peer in peers:
        tag = "" if peer == "xautodl" else peer.removeprefix("xautodl")
        rec[f"{peer}_best"] = max(r[peer][key] for r in rows)
        rec[f"median_paired_ratio{tag}"] = float(np.median([r["ours"][key] / r[peer][key] for r in rows]))
        rec[f"{peer}_best_per_cpu_s"] = max(per_cpu(r[peer]) for r in rows)
        rec[f"ratio_of_best{tag}"] = rec["ours_best"] / rec[f"{peer}_best"]
        rec[f"ratio_per_cpu_s{tag}"] = rec["ours_best_per_cpu_s"] / rec[f"{peer}_best_per_cpu_s"]
    rec = {k: round(v, 3) for k, v in rec.items()}
    benchmark.extra_info.update(rec)
    RESULTS[name] = rec
    return rec


@pytest.mark.bench
@needs_xautodl
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("budget", BUDGETS)
def test_bench_train_spos_vs_xautodl(benchmark, threads, budget):
    """Targets: SPOS training images/s >= xautodl's TinyNetworkRANDOM at smoke shapes (issue 10),
    >= 1.5x at study shapes and 2 threads (issue 21); same batches, optimizer, threads. xautodl
    twice: in this process, where our allocator setting (harness.core.allocator) holds for it
    too, and as shipped, in a fresh process with glibc's defaults (``*_as_shipped``)."""
    setup = _job(threads, budget)
    try:
        job = setup.job
        shipped = {"xautodl_as_shipped": lambda: bench_xautodl_train_as_shipped(
            "nb201", budget, (("threads", threads),), steps=60)}
        _paired(benchmark, f"train_images_per_s[{budget},threads={threads}]", lambda: bench_train(job, steps=60),
                lambda: bench_xautodl_train(job, steps=60), "images_per_s", rounds=5, extra_peers=shipped)
    finally:
        setup.close()


@pytest.mark.bench
@needs_xautodl
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("budget", BUDGETS)
def test_bench_score_vs_xautodl(benchmark, threads, budget, subset):
    """Targets: archs/s scored >= 1.5x xautodl's network scored the same way, on the same 300
    archs, at smoke shapes (issue 10); >= 2.5x at study shapes (issue 21)."""
    setup = _job(threads, budget)
    try:
        job = setup.job
        model, net = trained_supernet(job), xautodl_net(job)
        _paired(benchmark, f"score_archs_per_s[{budget},threads={threads}]", lambda: bench_score(job, model, subset),
                lambda: bench_xautodl_score(job, net, subset), "archs_per_s", rounds=3)
    finally:
        setup.close()


@pytest.mark.bench
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("budget", BUDGETS)
def test_bench_score_all_unique(benchmark, threads, budget, unique_archs):
    """Targets: the 6,466 unique architectures on 256 images in <= 300 s at smoke shapes (issue
    10), <= 60 s at study shapes (issue 21)."""
    setup = _job(threads, budget)
    try:
        job = setup.job
        model = trained_supernet(job)
        runs = []
        benchmark.pedantic(lambda: runs.append(bench_score(job, model, unique_archs)), rounds=1, iterations=1)
        r = runs[0]
        rec = {"archs": r["archs"], "seconds": round(r["seconds"], 1), "cpu_seconds": round(r["cpu_seconds"], 1),
               "archs_per_s": round(r["archs_per_s"], 2), "prefix_cache": r["prefix_cache"]}
        benchmark.extra_info.update({k: v for k, v in rec.items() if k != "prefix_cache"})
        RESULTS[f"score_all_unique[{budget},threads={threads}]"] = rec
    finally:
        setup.close()


def test_bench_layouts_measures_both_layouts_and_recommends_the_faster():
    from harness.cli.bench import bench_layouts

    tiny = (("channels", 2), ("resolution", 8), ("batch_size", 16))
    lay = bench_layouts("nb201", "smoke", tiny, steps=2, cores=2)
    assert (lay["one_job"]["jobs"], lay["one_job"]["threads"]) == (1, 2)
    assert (lay["parallel_jobs"]["jobs"], lay["parallel_jobs"]["threads"]) == (2, 1)
    assert all(lay[k]["images_per_s"] > 0 and lay[k]["wall_s"] > 0 for k in ("one_job", "parallel_jobs"))
    best = max(("one_job", "parallel_jobs"), key=lambda k: lay[k]["images_per_s"])
    assert lay["recommended"] == best
    assert lay["recommended_flags"] == f"--jobs {lay[best]['jobs']} --set threads={lay[best]['threads']}"


@pytest.mark.bench
@pytest.mark.parametrize("threads", THREADS)
def test_bench_bf16_vs_fp32_on_cpu(benchmark, threads):
    """--precision bf16 against fp32 at `study` shapes: training images/s and scoring archs/s, paired
    rounds in one session (issue 21: bf16 is worth a tau comparison only if it is faster here)."""
    jobs = {p: make_bench_job("nb201", "study", precision=p, score_size=SCORE_IMAGES,
                              budget_overrides=(("threads", threads),)) for p in ("fp32", "bf16")}
    try:
        archs = [jobs["fp32"].job.space.sample(np.random.default_rng(i)) for i in range(40)]
        models = {p: trained_supernet(s.job, steps=2) for p, s in jobs.items()}
        rec = {}
        for what, key, fn in (
                ("train", "images_per_s", lambda p: bench_train(jobs[p].job, steps=20)),
                ("score", "archs_per_s", lambda p: bench_score(jobs[p].job, models[p], archs, warmup=2))):
            pairs = []

            def one_round():
                order = ("fp32", "bf16") if len(pairs) % 2 == 0 else ("bf16", "fp32")
                got = {p: fn(p)[key] for p in order}
                pairs.append((got["bf16"], got["fp32"]))

            for _ in range(2):
                one_round()
            rec[f"{what}_bf16_over_fp32"] = round(float(np.median([a / b for a, b in pairs])), 3)
            rec[f"{what}_fp32_best"] = round(max(b for _, b in pairs), 2)
            rec[f"{what}_bf16_best"] = round(max(a for a, _ in pairs), 2)
        benchmark.pedantic(lambda: None, rounds=1, iterations=1)
        benchmark.extra_info.update(rec)
        RESULTS[f"bf16_vs_fp32[threads={threads}]"] = rec
    finally:
        for s in jobs.values():
            s.close()
