"""A synthetic run folder: the files `harness run` writes, without training anything.

Scores are the real NB201 ground truth plus Gaussian noise (less noise = better ranking), written
as job folders (result.json, scores.csv, curve_scores.csv) and turned into the run-level files by
the real aggregation (:func:`harness.study.aggregate.aggregate`: metrics, summary, curves,
estimates, paired). So the report reads exactly the formats a real run produces, in seconds,
for tiny runs (tests) and for 20 methods x 5 seeds x 15,625 architectures (the report bench).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from harness.core.io import write_csv
from harness.engine.curves import CURVE_SCORES, SCORE_COLUMNS
from harness.paired import default_pairs, paired_table
from harness.study import aggregate as A
from harness.study.jobs import job_name
from harness.study.spec import RunConfig
from harness.suites import get_suite

GT_COLUMN = "cifar10_test_200ep"
REFERENCE = ("params", "flops", "synflow", "naswot", "random")


def make_synthetic_run(out: Path, shared: Path, methods=("spos", "fairnas", "params"), seeds=(0, 1, 2),
                       n_archs: int | None = 40, *, statuses: dict | None = None, warnings: dict | None = None,
                       noise: dict | None = None, curve_points: int = 3, curve_archs: int | None = None,
                       paired_archs: int | None = None, images_per_epoch: int = 25_000, epochs: int = 4) -> Path:
    """Write a run folder at ``out``.

    ``n_archs``: the first architectures of a fixed shuffle of the space (None = all 15,625).
    ``statuses``: {(method, seed): "pending" | "collapsed" | "failed"} (default done).
    ``warnings``: {(method, seed): [str, ...]} written as result.json extra["warnings"].
    ``noise``: method -> noise std in units of the GT's std (default: a spread of methods).
    ``paired_archs``: compute paired.csv on only the first N architectures (big runs: the paired
    bootstrap above 1,000 architectures falls back to scipy loops, minutes; the report only reads it).
    """
    out = Path(out)
    statuses, warnings = dict(statuses or {}), dict(warnings or {})
    suite = get_suite("nb201")
    space = suite.make_space()
    gt = suite.load_gt(space, data_dir=Path(shared), say=lambda _: None)
    all_archs = list(space.enumerate())
    order = np.random.default_rng(0).permutation(len(all_archs))
    archs = [all_archs[i] for i in (order if n_archs is None else order[:n_archs])]
    texts = [space.format(a) for a in archs]
    index = [space.arch_index(a) for a in archs]
    truth = np.asarray(gt.values(archs, GT_COLUMN), dtype=float)
    sd = float(np.nanstd(truth)) or 1.0
    cfg = RunConfig(suite="nb201", methods=tuple(methods), seeds=tuple(seeds), budget="smoke", out=str(out),
                    data_dir=str(shared), progress=False, report=False)
    n_curve = min(curve_archs or len(archs), len(archs))
    results = []
    for m in methods:
        ref = m in REFERENCE
        level = (noise or {}).get(m, 0.6 + 0.25 * (sum(map(ord, m)) % 7))
        for s in seeds:
            name = job_name(m, s)
            status = statuses.get((m, s), "done")
            if status == "pending":
                results.append({"method": m, "seed": s, "status": "pending"})
                continue
            job = out / "jobs" / name
            job.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng([s, *m.encode()])
            images = 0 if ref else images_per_epoch * epochs
            fwd = 0.0 if ref else 1.0 + 0.5 * (len(m) % 3)
            res = {"method": m, "seed": s, "status": status, "describe": {"class": "CostProxy" if ref else "Synthetic",
                                                                          "config": {}},
                   "fit_s": 0.0 if ref else 60.0 + 10 * s, "score_s": 2.0, "wall_s": 2.0 if ref else 62.0 + 10 * s,
                   "cpu_s": 3.0 if ref else 120.0, "picked": None, "extra": {},
                   "counters": {"steps": images // 128, "images_seen": images, "forward_passes_per_image": fwd,
                                "backward_passes_per_image": fwd}}
            if (m, s) in warnings:
                res["extra"]["warnings"] = list(warnings[(m, s)])
            if status != "done":
                res["reason"] = f"{status} (synthetic)"
                (job / "result.json").write_text(json.dumps(res))
                results.append(res)
                continue
            score = truth + rng.normal(0, level * sd, len(truth))
            write_csv(job / "scores.csv", pd.DataFrame({"subset": "scored", "arch_index": index, "arch": texts,
                                                        "score": score}))
            if not ref and curve_points:
                fractions = np.geomspace(0.05, 1.0, curve_points)
                rows = []
                for p, f in enumerate(fractions):
                    noisy = score[:n_curve] if p == curve_points - 1 else (
                        truth[:n_curve] + rng.normal(0, level * sd / f ** 0.5, n_curve))
                    rows.append(pd.DataFrame({"point": p, "fraction": f, "step": int(f * images / 128),
                                              "images_seen": int(f * images), "source": "curve",
                                              "arch_index": index[:n_curve], "arch": texts[:n_curve],
                                              "score": noisy}))
                write_csv(job / CURVE_SCORES, pd.concat(rows)[SCORE_COLUMNS])
                res["curve"] = {"points": [float(f) for f in fractions], "archs": n_curve, "seconds": 3.0,
                                "scorer_note": ""}
            (job / "result.json").write_text(json.dumps(res))
            results.append(res)
    budget = get_suite("nb201").budget("smoke")
    manifest = {"harness_version": "0.1.0", "git_commit": "synthetic", "config": dataclasses.asdict(cfg),
                "budget": dataclasses.asdict(budget), "seeds": list(seeds), "suite": "nb201", "space": "nb201",
                "gt_source": "synthetic test (NB201 table)", "gt_columns": [GT_COLUMN], "n_archs": len(archs),
                "platform": {"python": "3", "torch": "-", "machine": "synthetic", "cpus": 1, "device": "cpu"},
                "started": "2026-01-01T00:00:00+00:00", "status": "done" if all(
                    r["status"] != "pending" for r in results) else "running",
                "jobs": {job_name(r["method"], r["seed"]): r for r in results}}
    plan = SimpleNamespace(cfg=cfg, space=space, gt=gt, gt_columns=[GT_COLUMN])
    if paired_archs is None:
        A.aggregate(out, plan, results, manifest)
        return out
    real = A.paired_comparisons
    A.paired_comparisons = lambda *a, **k: pd.DataFrame(columns=["a", "b", "gt", "n_seeds", "n_archs", "diff",
                                                                 "ci_low", "ci_high", "verdict", "per_seed"])
    try:
        A.aggregate(out, plan, results, manifest)
    finally:
        A.paired_comparisons = real
    est = pd.read_csv(out / "estimates.csv")
    keep = set(texts[:paired_archs])
    est = est[est["arch"].isin(keep)]
    done = list(dict.fromkeys(est["method"]))
    lookup = dict(zip(texts, truth))
    write_csv(out / A.PAIRED, paired_table(est, lookup, default_pairs(done), gt=GT_COLUMN, n_boot=200))
    return out
