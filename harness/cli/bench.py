"""``harness bench``: how fast this machine trains and scores supernets, and how long a study takes.

Measures, at the chosen budget's shapes and thread count, on synthetic images (throughput does not
depend on pixel values):

- training images/s of a SPOS supernet through the shared ``SupernetTrainer`` (augmentation, cosine
  LR, clipping, SGD: the real loop), and
- architectures/s scored by the shared ``SupernetEvaluator`` (batch-statistics BN, prefix cache) on
  a random sample of the study's architecture set,

then prints one JSON line with the figures and the estimated wall time of the chosen study
(methods x seeds x budget), and one line for humans. ``--compare xautodl`` measures xautodl's NB201
random-path supernet (``TinyNetworkRANDOM``, the NATS-Bench RSPS baseline) side by side at the same
shapes, threads and batches. The functions are shared with ``tests/bench/test_bench_speed.py``.
"""
from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from harness.core.allocator import malloc_record, tune_malloc
from harness.core.errors import ConfigError
from harness.archsets import resolve_archs
from harness.cli.common import auto_device, csv_list, parse_overrides, parse_seeds
from harness.core.seeding import numpy_rng
from harness.engine.evaluator import SupernetScorer, batch_stat_bn, score_workers
from harness.engine.job import JobContext, TaskData
from harness.engine.method import create_method
from harness.engine.trainer import SupernetTrainer, cosine_lr
from harness.spaces import cpu_kernels
from harness.spaces.nb201 import EDGES, NB201_OPS
from harness.study.spec import DEFAULT_METHODS, RunConfig
from harness.suites import get_suite

TRAIN_SPLIT_IMAGES = 25_000  # the protocol's train half of CIFAR-10 (harness/data/splits.py)


# --- synthetic jobs ------------------------------------------------------------------------
@dataclass
class BenchSetup:
    job: object  # JobContext
    tmp: tempfile.TemporaryDirectory

    def close(self) -> None:
        self.tmp.cleanup()


def make_bench_job(suite: str = "nb201", budget: str = "smoke", *, n_train: int | None = None,
                   score_size: int | None = None, device: str = "cpu", precision: str = "fp32",
                   seed: int = 0, budget_overrides: tuple = ()) -> BenchSetup:
    """A JobContext at the budget's shapes on synthetic images (no dataset needed)."""

    cfg = RunConfig(suite=suite, budget=budget, device=device, precision=precision,
                    budget_overrides=tuple(budget_overrides))
    b = cfg.resolved_budget().replace(checkpoint_every=0)
    if score_size is not None:
        b = b.replace(score_size=int(score_size))
    n_train = n_train or 8 * b.batch_size
    g = torch.Generator().manual_seed(seed)
    dev = torch.device(device)

    def images(n):
        return (torch.randn(n, 3, b.resolution, b.resolution, generator=g).to(dev),
                torch.randint(0, 10, (n,), generator=g).to(dev))

    tx, ty = images(n_train)
    sx, sy = images(b.batch_size)
    qx, qy = images(b.score_size)
    tmp = tempfile.TemporaryDirectory(prefix="harness-bench-")
    space = get_suite(suite).make_space()
    job = JobContext(space=space, budget=b, net_cfg=b.net_config(num_classes=10), data=TaskData(tx, ty, sx, sy, qx, qy),
                     seed=seed, job_dir=Path(tmp.name), device=dev, progress=False, precision=precision)
    return BenchSetup(job, tmp)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# --- ours ----------------------------------------------------------------------------------
def bench_train(job, steps: int = 30, warmup: int = 3) -> dict:
    """SPOS training (methods/spos.py's step) through ``SupernetTrainer``, with the allocator
    setting a harness job uses (``harness.core.allocator``): images/s."""

    tune_malloc()
    torch.set_num_threads(job.budget.threads)
    model = job.build_supernet()
    rng = job.rng("path")

    def step(x, y, _step):
        loss = F.cross_entropy(model(x, job.space.sample(rng)), y)
        loss.backward()
        job.counters.add_path(len(x))
        return loss

    n_epoch = job.train_stream().len_epoch
    SupernetTrainer(job, model, epochs=warmup / n_epoch, name="warmup").run(step)
    _sync(job.device)
    trainer = SupernetTrainer(job, model, epochs=steps / n_epoch, name="bench")
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.run(step)
    _sync(job.device)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    images = trainer.total_steps * job.budget.batch_size
    return {"images_per_s": images / dt, "steps": trainer.total_steps, "batch_size": job.budget.batch_size,
            "seconds": dt, "cpu_seconds": cpu}


def trained_supernet(job, steps: int = 10):
    """A supernet with a few SPOS steps behind it (scores of an untrained net are all ties)."""

    model = job.build_supernet()
    rng = job.rng("path")

    def step(x, y, _step):
        loss = F.cross_entropy(model(x, job.space.sample(rng)), y)
        loss.backward()
        return loss

    SupernetTrainer(job, model, epochs=steps / job.train_stream().len_epoch, name="pretrain").run(step)
    return model


def bench_score(job, model, archs, warmup: int = 8) -> dict:
    """``SupernetEvaluator`` (the shared scorer) over ``archs``, with a harness job's allocator
    setting: architectures/s."""

    tune_malloc()
    torch.set_num_threads(job.budget.threads)
    scorer = SupernetScorer(job, model)
    scorer.score(list(archs[:warmup]))
    _sync(job.device)
    t0, c0 = time.perf_counter(), time.process_time()
    scores = scorer.score(list(archs))
    _sync(job.device)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"archs_per_s": len(archs) / dt, "archs": len(archs), "images": len(job.data.score_y), "seconds": dt,
            "cpu_seconds": cpu, "prefix_cache": scorer.evaluator.last_cache_stats, "scores": scores}


# --- xautodl (NATS-Bench RSPS baseline) ----------------------------------------------------
def xautodl_available() -> bool:
    try:
        import xautodl.models.cell_searchs.search_model_random  # noqa: F401
    except Exception:
        return False
    return True


def xautodl_net(job):
    """``TinyNetworkRANDOM`` at the job's shapes (C, N, classes; BN without affine, batch stats)."""
    from xautodl.models.cell_searchs.search_model_random import TinyNetworkRANDOM


    c = job.net_cfg
    job.seed_torch("init")
    net = TinyNetworkRANDOM(c.channels, c.cells, 4, c.num_classes, list(NB201_OPS), c.bn_affine, c.bn_track)
    return net.to(job.device)


def xautodl_structure(arch):
    from xautodl.models.cell_searchs.genotypes import Structure


    return Structure([tuple((NB201_OPS[arch[e]], src) for e, (dst, src) in enumerate(EDGES) if dst == node)
                      for node in (1, 2, 3)])


def bench_xautodl_train(job, steps: int = 30, warmup: int = 3) -> dict:
    """xautodl's RSPS step (random genotype, forward, CE, backward, clip 5, SGD) on the same
    batches, optimizer settings and threads as :func:`bench_train`; a lean loop (no meters)."""

    torch.set_num_threads(job.budget.threads)
    b = job.budget
    net = xautodl_net(job).train()
    params = list(net.parameters())
    opt = torch.optim.SGD(params, lr=b.lr, momentum=b.momentum, weight_decay=b.weight_decay, nesterov=b.nesterov)
    rng = job.rng("path")
    stream = job.train_stream()
    loss_sum = torch.zeros((), device=job.device)

    def run(n):
        nonlocal loss_sum
        done = 0
        for epoch in range(10**9):
            for x, y in stream.batches(epoch):
                for g in opt.param_groups:
                    g["lr"] = cosine_lr(b.lr, done, n)
                net.arch_cache = xautodl_structure(job.space.sample(rng))
                opt.zero_grad(set_to_none=True)
                _, logits = net(x)
                loss = F.cross_entropy(logits, y)
                loss.backward()
                if b.clip_threshold():  # the budget's clip, as the shared trainer applies it
                    torch.nn.utils.clip_grad_norm_(params, b.clip_threshold())
                opt.step()
                loss_sum += loss.detach()
                done += 1
                if done == n:
                    return

    run(warmup)
    _sync(job.device)
    t0, c0 = time.perf_counter(), time.process_time()
    run(steps)
    _sync(job.device)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    if not math.isfinite(float(loss_sum)):
        raise RuntimeError("xautodl baseline diverged")
    return {"images_per_s": steps * b.batch_size / dt, "steps": steps, "batch_size": b.batch_size, "seconds": dt,
            "cpu_seconds": cpu}


def _xautodl_train_worker(spec: tuple) -> dict:
    suite, budget, overrides, device, steps = spec
    setup = make_bench_job(suite, budget, device=device, budget_overrides=overrides)
    try:
        return bench_xautodl_train(setup.job, steps=steps, warmup=10)  # a cold process: primitives, caches
    finally:
        setup.close()


def bench_xautodl_train_as_shipped(suite: str, budget: str, overrides: tuple = (), *, steps: int = 30,
                                   device: str = "cpu") -> dict:
    """:func:`bench_xautodl_train` in a fresh spawned process, so glibc's malloc runs with its own
    defaults there: xautodl as its users run it. In a process where a harness job or benchmark has
    run, the peer shares our allocator setting (``harness.core.allocator``), which is process-wide;
    ``harness bench`` reports both, so the code's share and the allocator's share stay apart."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_xautodl_train_worker, ((suite, budget, tuple(overrides), device, steps),))


def bench_xautodl_score(job, net, archs, warmup: int = 8) -> dict:
    """xautodl's network scored the way our evaluator scores: batch-statistics BN under no_grad,
    accuracy and cross-entropy over the score images, one architecture at a time."""
    torch.set_num_threads(job.budget.threads)
    b = job.budget
    batches = list(zip(job.data.score_x.split(b.eval_batch_size), job.data.score_y.split(b.eval_batch_size)))
    structs = [xautodl_structure(a) for a in archs]
    # batch statistics without touching running buffers, as harness.engine.evaluator.batch_stat_bn does

    @torch.no_grad()
    def run(ss):
        out = []
        for s in ss:
            net.arch_cache = s
            correct, ce = 0, 0.0
            for xb, yb in batches:
                _, logits = net(xb)
                correct += int((logits.argmax(1) == yb).sum())
                ce += float(F.cross_entropy(logits.float(), yb, reduction="sum"))
            out.append((correct, ce))
        return out

    net.eval()
    with batch_stat_bn(net):
        run(structs[:warmup])
        _sync(job.device)
        t0, c0 = time.perf_counter(), time.process_time()
        run(structs)
        _sync(job.device)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"archs_per_s": len(archs) / dt, "archs": len(archs), "images": len(job.data.score_y), "seconds": dt,
            "cpu_seconds": cpu}


# --- job layout ----------------------------------------------------------------------------
def _layout_worker(spec: tuple) -> dict:
    """One spawned process of :func:`bench_layouts`: SPOS training at ``threads`` threads, timed
    from a barrier shared with its siblings (monotonic clock: comparable across processes)."""
    suite, budget, overrides, precision, device, threads, steps, barrier = spec
    setup = make_bench_job(suite, budget, device=device, precision=precision,
                           budget_overrides=(*overrides, ("threads", threads)))
    try:
        bench_train(setup.job, steps=1)  # warm up (allocator, oneDNN primitives) before the barrier
        barrier.wait()
        t0 = time.monotonic()
        r = bench_train(setup.job, steps=steps, warmup=0)
        return {"start": t0, "end": time.monotonic(), "images": r["steps"] * r["batch_size"],
                "cpu_seconds": r["cpu_seconds"]}
    finally:
        setup.close()


def bench_layouts(suite: str, budget: str, overrides: tuple = (), *, steps: int = 30, precision: str = "fp32",
                  device: str = "cpu", cores: int | None = None) -> dict:
    """Training throughput of two ways to fill ``cores`` CPU cores: one job using all of them
    (``--jobs 1 --set threads=cores``) against ``cores`` one-thread jobs side by side
    (``--jobs cores --set threads=1``). Tiny convolutions scale badly over threads (OpenMP barriers,
    not arithmetic), so the second usually wins on a small machine. The two layouts do not give the
    same numbers for the same seed (``threads`` changes reduction order), so choose one per study.
    """
    cores = cores or os.cpu_count() or 1
    ctx = mp.get_context("spawn")  # as the local executor: torch thread pools do not survive fork
    out = {}
    for name, jobs, threads in (("one_job", 1, cores), ("parallel_jobs", cores, 1)):
        with ctx.Manager() as manager, ctx.Pool(jobs) as pool:
            barrier = manager.Barrier(jobs)
            recs = pool.map(_layout_worker, [(suite, budget, tuple(overrides), precision, device, threads, steps,
                                              barrier)] * jobs)
        wall = max(r["end"] for r in recs) - min(r["start"] for r in recs)
        out[name] = {"jobs": jobs, "threads": threads, "images_per_s": round(sum(r["images"] for r in recs) / wall, 1),
                     "wall_s": round(wall, 2), "cpu_s": round(sum(r["cpu_seconds"] for r in recs), 2)}
    best = max(out, key=lambda k: out[k]["images_per_s"])
    out["speedup_parallel_over_one"] = round(out["parallel_jobs"]["images_per_s"] / out["one_job"]["images_per_s"], 3)
    out["recommended"] = best
    rec = out[best]
    out["recommended_flags"] = f"--jobs {rec['jobs']} --set threads={rec['threads']}"
    return out


# --- study estimate ------------------------------------------------------------------------
def estimate_study(budget, methods, seeds, n_archs: int, train_ips: float, score_aps: float,
                   score_images_measured: int) -> dict:
    """Sequential wall time of ``methods x seeds`` at ``budget``: training images at the measured
    rate (1 path pass per image, as SPOS; a method doing k passes per image takes ~k times longer)
    plus scoring, scaled linearly from the measured score-subset size to the budget's."""

    train_s = budget.epochs * TRAIN_SPLIT_IMAGES / train_ips
    score_s = n_archs / score_aps * (budget.score_size / max(score_images_measured, 1))
    per_method = {}
    for m in methods:
        supernet = create_method(m).trains_supernet
        per_method[m] = round((train_s + score_s) * len(seeds), 1) if supernet else 0.0
    return {"methods": list(methods), "seeds": list(seeds), "n_archs": n_archs,
            "train_s_per_job": round(train_s, 1), "score_s_per_job": round(score_s, 1),
            "per_method_s": per_method, "estimated_wall_s": round(sum(per_method.values()), 1),
            "assumes": "1 path pass per training image (SPOS); reference rows cost ~0; --jobs 1"}


def human_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


# --- CLI -----------------------------------------------------------------------------------
def cmd_bench(args) -> int:

    device = args.device or auto_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available here; use --device cpu")
    if args.steps < 1 or args.max_archs < 1:
        raise ConfigError("--steps and --max-archs must be >= 1")
    methods = csv_list(args.methods) if args.methods else DEFAULT_METHODS
    seeds = parse_seeds(args.seeds)
    setup = make_bench_job(args.suite, args.budget, score_size=args.score_size, device=device,
                           precision=args.precision, budget_overrides=parse_overrides(args.set))
    try:
        job = setup.job
        b = job.budget
        study_archs = resolve_archs(job.space, args.archs or b.archs, 0)
        rng = numpy_rng("bench-archs", 0)
        pick = sorted(rng.choice(len(study_archs), size=min(args.max_archs, len(study_archs)), replace=False))
        archs = [study_archs[i] for i in pick]
        train = bench_train(job, steps=args.steps)
        model = trained_supernet(job)
        score = bench_score(job, model, archs)
        score.pop("scores")
        out = {"suite": args.suite, "budget": b.name, "device": device, "precision": args.precision,
               "torch_threads": b.threads, "shapes": {"channels": b.channels, "cells": b.cells,
                                                      "resolution": b.resolution, "batch_size": b.batch_size},
               "train_images_per_s": round(train["images_per_s"], 1),
               "score_archs_per_s": round(score["archs_per_s"], 2), "score_images": score["images"],
               "score_archs_measured": score["archs"], "prefix_cache": score["prefix_cache"],
               "score_processes": score_workers(job), "cpu_kernels": cpu_kernels.status(),
               "malloc": malloc_record()}
        if args.compare == "xautodl":
            if not xautodl_available():
                raise ConfigError("--compare xautodl needs xautodl: pip install --no-deps xautodl")
            xt = bench_xautodl_train(job, steps=args.steps)
            xs = bench_xautodl_score(job, xautodl_net(job), archs)
            xf = bench_xautodl_train_as_shipped(args.suite, args.budget, parse_overrides(args.set), steps=args.steps,
                                                device=device)
            # "xautodl": in this process (our allocator setting); train_ratio_as_shipped: against
            # xautodl in a fresh process with glibc's defaults
            out["xautodl"] = {"train_images_per_s": round(xt["images_per_s"], 1),
                              "score_archs_per_s": round(xs["archs_per_s"], 2),
                              "train_ratio": round(train["images_per_s"] / xt["images_per_s"], 3),
                              "score_ratio": round(score["archs_per_s"] / xs["archs_per_s"], 3),
                              "train_images_per_s_as_shipped": round(xf["images_per_s"], 1),
                              "train_ratio_as_shipped": round(train["images_per_s"] / xf["images_per_s"], 3)}
        out["study"] = estimate_study(b, methods, seeds, len(study_archs), train["images_per_s"],
                                      score["archs_per_s"], score["images"])
    finally:
        setup.close()
    if args.layout:
        lay = out["layout"] = bench_layouts(args.suite, args.budget, parse_overrides(args.set), steps=args.steps,
                                            precision=args.precision, device=device)
        # the study's jobs spread over the recommended layout: training scales with its throughput
        st = out["study"]
        st["estimated_wall_s_recommended_layout"] = round(
            st["estimated_wall_s"] * out["train_images_per_s"] / lay[lay["recommended"]]["images_per_s"], 1)
    print(json.dumps(out), flush=True)
    st = out["study"]
    print(f"estimated wall time: {human_duration(st['estimated_wall_s'])} for {len(methods)} method(s) x "
          f"{len(seeds)} seed(s) on {st['n_archs']} architectures at budget {b.name} ({device}, sequential; "
          f"{out['train_images_per_s']:.0f} train img/s, {out['score_archs_per_s']:.1f} archs/s on "
          f"{out['score_images']} images)", file=sys.stderr if args.json_only else sys.stdout)
    if args.layout:
        lay = out["layout"]
        print(f"recommended layout: {lay['recommended_flags']} ({lay['parallel_jobs']['images_per_s']:.0f} img/s with "
              f"{lay['parallel_jobs']['jobs']} one-thread jobs vs {lay['one_job']['images_per_s']:.0f} img/s with one "
              f"{lay['one_job']['threads']}-thread job; threads changes the numbers, so keep one layout per study)",
              file=sys.stderr if args.json_only else sys.stdout)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="measure training images/s and architectures/s here; estimate a study's wall time")
    p.add_argument("--suite", default="nb201")
    p.add_argument("--budget", default="smoke")
    p.add_argument("--methods", default=None, help="comma list for the estimate (default: spos,params,flops,random)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--archs", default=None, help="the study's architecture set (default: the budget's)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--steps", type=int, default=30, help="timed training steps")
    p.add_argument("--max-archs", type=int, default=200, help="architectures scored for the timing (a random sample)")
    p.add_argument("--score-size", type=int, default=None, help="score images for the timing (default: the budget's)")
    p.add_argument("--compare", default=None, choices=["xautodl"], help="also measure xautodl's TinyNetworkRANDOM")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a budget field")
    p.add_argument("--layout", action="store_true",
                   help="also compare one job on all cores with one one-thread job per core; recommend the faster")
    p.add_argument("--json-only", action="store_true", help="the human line goes to stderr")
    p.set_defaults(fn=cmd_bench)


if __name__ == "__main__":  # python -m harness.cli.bench ... == harness bench ...
    from harness.cli import main

    sys.exit(main(["bench", *sys.argv[1:]]))
