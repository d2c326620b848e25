"""One job: fit one method with one seed on a resolved plan, score the architectures, write
``jobs/<method>-s<seed>/`` (result, scores, curve scores, log). Resumable: a job whose
``result.json`` exists is not redone, one interrupted mid-training resumes from its checkpoint."""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from harness.core.allocator import tune_malloc
from harness.core.errors import ConfigError
from harness.core.io import read_json, write_csv, write_json
from harness.core.paths import default_cache_dir
from harness.core.provenance import git_commit, platform_record, utc_now
from harness.engine.curves import FidelityCurveHook, curve_archs, curve_fractions, write_final_point
from harness.engine.job import HookList, JobContext, job_extra
from harness.engine.method import JobFailed, create_method
from harness.engine.taskdata import prepare_data
from harness.spaces.base import Arch
from harness.study.plan import JobPlan

log = logging.getLogger("harness")


def job_platform(result: dict, manifest: dict) -> dict:
    """The platform a job ran on: its own record, else (jobs from before jobs recorded it) its run's."""
    return result.get("platform") or manifest.get("platform", {})


def job_name(method: str, seed: int) -> str:
    return f"{method}-s{seed}"


def _job_logger(job_dir: Path) -> logging.Logger:
    logger = logging.getLogger(f"harness.engine.job.{job_dir.parent.parent.name}.{job_dir.name}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    handler = logging.FileHandler(job_dir / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger


def run_job(run_dir: Path, plan: JobPlan, method_name: str, seed: int, hooks_factory=None) -> dict:
    """Fit one method with one seed and score the plan's architectures; writes ``jobs/<m>-s<seed>/``."""
    cfg, space, budget, archs = plan.cfg, plan.space, plan.budget, list(plan.archs)
    job_dir = run_dir / "jobs" / job_name(method_name, seed)
    job_dir.mkdir(parents=True, exist_ok=True)
    result_path = job_dir / "result.json"
    if result_path.exists():
        return read_json(result_path)
    logger = _job_logger(job_dir)
    malloc = tune_malloc()  # same numbers, fewer page faults per step
    torch.set_num_threads(budget.threads)
    data, _ = prepare_data(cfg.data_dir, cfg.cache_dir or str(default_cache_dir()), budget.resolution,
                           budget.score_size, cfg.device, cfg.progress, dataset=cfg.dataset)
    method = create_method(method_name)
    job = JobContext(space=space, budget=budget, net_cfg=budget.net_config(num_classes=data.num_classes),
                     data=data, seed=seed, job_dir=job_dir, device=torch.device(cfg.device), log=logger,
                     progress=cfg.progress, precision=cfg.precision)
    curve = None
    if method.trains_supernet and budget.curve_points > 0:
        curve = FidelityCurveHook(job, curve_archs(archs, budget.curve_archs, cfg.arch_seed),
                                  curve_fractions(budget.curve_points))
    if method.trains_supernet:
        job.hooks = HookList([curve, hooks_factory(job, run_dir) if hooks_factory is not None else None])
    # the job's own commit and platform: a study resumed at another commit (one that changes no
    # number), or whose shards ran on other machines, says which code and CPU made which row (the
    # CPU model changes the bits: other kernels)
    result = {"method": method_name, "seed": seed, "pid": os.getpid(), "started": utc_now(),
              "git_commit": git_commit(), "platform": platform_record(torch.__version__, cfg.device),
              "malloc": malloc, "describe": method.describe()}
    t0, cpu0 = time.perf_counter(), time.process_time()
    logger.info("job %s seed %d: budget %s", method_name, seed, budget.name)
    try:
        scorer = method.fit(job)
        if cfg.copy_isomorphic:
            scorer = IsomorphicCopyScorer(scorer, space)
        t_fit = time.perf_counter()
        rows = []
        subsets = {"scored": archs, **scorer.subsets()}
        for subset, sub_archs in subsets.items():
            scores = np.asarray(scorer.score(sub_archs), dtype=float)
            if not np.all(np.isfinite(scores)):
                bad = int(np.flatnonzero(~np.isfinite(scores))[0])
                raise JobFailed(f"non-finite score for {space.format(sub_archs[bad])} in subset {subset}")
            for a, s in zip(sub_archs, scores):
                rows.append({"subset": subset, "arch_index": space.arch_index(a), "arch": space.format(a), "score": s})
        write_csv(job_dir / "scores.csv", pd.DataFrame(rows))
        if curve is not None:
            final = {r["arch"]: r["score"] for r in rows if r["subset"] == "scored"}
            write_final_point(job, curve.archs, final, len(curve.fractions))
        picked = scorer.picked()
        result.update(status="done", fit_s=t_fit - t0, score_s=time.perf_counter() - t_fit,
                      picked=space.format(picked) if picked is not None else None, extra=scorer.extra())
        if cfg.copy_isomorphic:
            result["isomorphic_copy"] = scorer.record
    except JobFailed as exc:
        logger.error("job %s: %s (%s)", job_name(method_name, seed), exc.status, exc.reason)
        result.update(status=exc.status, reason=exc.reason, step=exc.step)
    except Exception as exc:  # one broken job must not take a days-long study down with it
        logger.exception("job %s crashed", job_name(method_name, seed))
        log.error("job %s crashed: %s: %s (traceback in %s)", job_name(method_name, seed),
                  type(exc).__name__, exc, job_dir / "log.txt")
        result.update(status="failed", reason=f"{type(exc).__name__}: {exc}", step=job.counters.steps)
    # the job's recorded statistics and warnings (clip rate, fallbacks) whatever the status; the
    # scorer's extra() where the job got that far
    result["extra"] = job_extra(job, result.get("extra"))
    if curve is not None:
        result["curve"] = curve.record()
    # CPU seconds beside wall seconds: on a shared machine wall time measures the neighbours too
    result.update(wall_s=time.perf_counter() - t0, cpu_s=time.process_time() - cpu0, ended=utc_now(),
                  counters=job.counters.as_dict(),
                  resumed_from_step=job.state.get("resumed_from_step", 0), state=job.state)
    write_json(result_path, result)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    return result


@dataclass(frozen=True)
class JobRunner:
    """One run's ``run_job(method, seed)``, picklable for worker processes and Ray tasks."""

    run_dir: Path
    plan: JobPlan
    hooks_factory: Callable | None = None

    def __call__(self, method: str, seed: int) -> dict:
        return run_job(self.run_dir, self.plan, method, seed, self.hooks_factory)

    def job_dir(self, method: str, seed: int) -> Path:
        return Path(self.run_dir) / "jobs" / job_name(method, seed)

    def on_device(self, device: str) -> "JobRunner":
        return dataclasses.replace(self, plan=dataclasses.replace(
            self.plan, cfg=dataclasses.replace(self.plan.cfg, device=device)))


class IsomorphicCopyScorer:
    """``--copy-isomorphic``: score the first architecture of each isomorphism class, give its score
    to the rest. Opt-in and recorded per job, because isomorphic cells use different weights inside
    a supernet (their supernet scores differ in general)."""

    def __init__(self, inner, space):
        self.inner, self.space = inner, space
        self.record = {"representatives": 0, "copied": 0}

    def score(self, archs: list[Arch]) -> np.ndarray:
        keys = [self.space.isomorphism_key(a) for a in archs]
        if any(k is None for k in keys):
            raise ConfigError(f"--copy-isomorphic: space {self.space.name} defines no isomorphism key; drop the flag")
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        reps = sorted(first.values())
        rep_scores = dict(zip(reps, np.asarray(self.inner.score([archs[i] for i in reps]), dtype=float)))
        self.record["representatives"] += len(reps)
        self.record["copied"] += len(archs) - len(reps)
        return np.array([rep_scores[first[k]] for k in keys], dtype=float)

    def __getattr__(self, name):  # subsets(), picked(), extra(), evaluator, ...
        return getattr(self.inner, name)
