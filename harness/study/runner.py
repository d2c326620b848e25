"""`harness run`: resolve the config, run every (method, seed) job, write the run folder.

Jobs are independent and resumable: a job whose ``result.json`` exists is not redone, and a job
interrupted mid-training resumes from its checkpoint. Aggregation (estimates, metrics, summary,
manifest) is recomputed from the job folders at the end, so it is the same however jobs ran.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import harness
from harness import metrics as M
from harness.archsets import resolve_archs
from harness.budgets import Budget, scale_down_record
from harness.engine.curves import (CURVE_COLUMNS, CURVES, FidelityCurveHook, curve_archs, curve_fractions,
                            job_curve_metrics, read_curve_scores, write_final_point)
from harness.core.errors import ConfigError, HarnessError
from harness.engine.diagnostics import default_hooks_factory
from harness.engine.job import HookList, JobContext
from harness.engine.taskdata import prepare_data
from harness.executors import job_list, run_jobs
from harness.groundtruth.table import format_quality
from harness.paired import MULTIPLE_COMPARISONS_NOTE, TABLE_COLUMNS, default_pairs, paired_table, parse_pair
from harness.spaces.base import Arch
from harness.core.paths import REPO_ROOT, default_cache_dir, default_data_dir
from harness.core.provenance import git_commit, platform_record, utc_now, utc_stamp
from harness.core.io import RunLock, atomic_write_text, read_json, write_csv, write_json
from harness.suites import get_suite
from harness.engine.method import JobFailed, create_method
from harness.study.spec import (DEFAULT_METHODS, EXECUTION_FIELDS, STUDY_FILE, RunConfig, json_config,  # noqa: F401
                                study_toml)

log = logging.getLogger("harness")

PAIRED = "paired.csv"


# --- one job ----------------------------------------------------------------------------
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


def run_job(run_dir: Path, cfg: RunConfig, method_name: str, seed: int, archs: list[Arch],
            hooks_factory=None) -> dict:
    """Fit one method with one seed and score ``archs``; writes ``jobs/<m>-s<seed>/``."""
    suite = get_suite(cfg.suite)
    space = suite.make_space()
    budget = cfg.resolved_budget()
    job_dir = run_dir / "jobs" / job_name(method_name, seed)
    job_dir.mkdir(parents=True, exist_ok=True)
    result_path = job_dir / "result.json"
    if result_path.exists():
        return read_json(result_path)
    logger = _job_logger(job_dir)
    torch.set_num_threads(budget.threads)
    data, _ = prepare_data(cfg.data_dir, cfg.cache_dir or str(default_cache_dir()), budget.resolution,
                           budget.score_size, cfg.device, cfg.progress)
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
    result = {"method": method_name, "seed": seed, "pid": os.getpid(), "started": utc_now(),
              "describe": method.describe()}
    t0 = time.perf_counter()
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
    if curve is not None:
        result["curve"] = curve.record()
    result.update(wall_s=time.perf_counter() - t0, ended=utc_now(), counters=job.counters.as_dict(),
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
    cfg: RunConfig
    archs: tuple
    hooks_factory: Callable | None = None

    def __call__(self, method: str, seed: int) -> dict:
        return run_job(self.run_dir, self.cfg, method, seed, list(self.archs), self.hooks_factory)

    def job_dir(self, method: str, seed: int) -> Path:
        return Path(self.run_dir) / "jobs" / job_name(method, seed)

    def on_device(self, device: str) -> "JobRunner":
        return dataclasses.replace(self, cfg=dataclasses.replace(self.cfg, device=device))

    def resolved_budget(self) -> Budget:
        return self.cfg.resolved_budget()


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


# --- aggregation ------------------------------------------------------------------------
def job_metrics(scores: pd.DataFrame, gt, space, columns, picked: str | None) -> list[dict]:
    rows = []
    for column in columns:
        for subset, df in scores.groupby("subset", sort=False):
            archs = [space.parse(a) for a in df["arch"]]
            truth = gt.values(archs, column)
            for r in M.compute_all(df["score"].to_numpy(), truth):
                rows.append({"gt": column, "subset": subset, **r})
        if picked is not None:
            value = float(gt.values([space.parse(picked)], column)[0])
            rows.append({"gt": column, "subset": "derived", "metric": "picked_gt", "k": None, "value": value})
            best = gt.best(column) if hasattr(gt, "best") else np.nan
            rows.append({"gt": column, "subset": "derived", "metric": "regret", "k": None, "value": best - value})
    return rows


def collect_results(run_dir: Path, cfg: RunConfig) -> list[dict]:
    """Every job's ``result.json``; jobs without one are ``pending``."""
    out = []
    for m in cfg.methods:
        for s in cfg.seeds:
            path = run_dir / "jobs" / job_name(m, s) / "result.json"
            out.append(read_json(path) if path.is_file() else {"method": m, "seed": s, "status": "pending"})
    return out


def ordered_results(cfg: RunConfig, results: list[dict]) -> list[dict]:
    """Method-major order (as the run lists methods, then seeds), whatever order jobs ran in."""
    rank = {(m, s): i for i, (m, s) in enumerate((m, s) for m in cfg.methods for s in cfg.seeds)}
    return sorted(results, key=lambda r: rank.get((r["method"], r["seed"]), len(rank)))


def summarize(metrics: pd.DataFrame) -> pd.DataFrame:
    rows = []
    keys = ["method", "gt", "subset", "metric", "k"]
    m = metrics[metrics["status"] == "done"].copy()
    m["k"] = m["k"].astype(object).where(m["k"].notna(), "")
    for key, df in m.groupby(keys, sort=False):
        s = M.summarize_seeds(df["value"].to_numpy(dtype=float))
        rows.append(dict(zip(keys, key), **s))
    return pd.DataFrame(rows, columns=keys + ["mean", "std", "ci_low", "ci_high", "n_seeds"])


def aggregate(run_dir: Path, cfg: RunConfig, archs: list[Arch], gt, gt_columns, results: list[dict],
              manifest: dict) -> pd.DataFrame:
    space = get_suite(cfg.suite).make_space()
    est_rows, metric_rows, curve_rows = [], [], []
    for res in results:
        method, seed = res["method"], res["seed"]
        if res["status"] != "done":
            for column in gt_columns:
                metric_rows.append({"method": method, "seed": seed, "gt": column, "subset": "scored",
                                    "metric": "kendall_tau", "k": None, "value": np.nan, "status": res["status"]})
            continue
        scores = pd.read_csv(run_dir / "jobs" / job_name(method, seed) / "scores.csv")
        est_rows.append(scores.assign(method=method, seed=seed))
        for r in job_metrics(scores, gt, space, gt_columns, res.get("picked")):
            metric_rows.append({"method": method, "seed": seed, **r, "status": "done"})
        job_dir = run_dir / "jobs" / job_name(method, seed)
        rows = [{"method": method, "seed": seed, **r}
                for r in job_curve_metrics(read_curve_scores(job_dir), gt, space, gt_columns)]
        if rows:
            write_csv(job_dir / CURVES, pd.DataFrame(rows, columns=CURVE_COLUMNS))
            curve_rows += rows
    est_cols = ["method", "seed", "subset", "arch_index", "arch", "score"]
    estimates = pd.concat(est_rows)[est_cols] if est_rows else pd.DataFrame(columns=est_cols)
    metrics = pd.DataFrame(metric_rows, columns=["method", "seed", "gt", "subset", "metric", "k", "value", "status"])
    metrics["k"] = metrics["k"].astype(object)
    summary = summarize(metrics)
    write_csv(run_dir / "estimates.csv", estimates)
    write_csv(run_dir / "metrics.csv", metrics)
    write_csv(run_dir / "summary.csv", summary)
    write_csv(run_dir / CURVES, pd.DataFrame(curve_rows, columns=CURVE_COLUMNS))
    write_csv(run_dir / PAIRED, paired_comparisons(estimates, gt, space, gt_columns, cfg))
    write_json(run_dir / "manifest.json", manifest)
    return summary


def paired_comparisons(estimates: pd.DataFrame, gt, space, gt_columns, cfg: RunConfig) -> pd.DataFrame:
    """Every finished method against spos and params (and the run's --compare pairs): the paired
    hierarchical-bootstrap test of the Kendall-tau difference, per GT column."""
    done = list(dict.fromkeys(estimates["method"])) if len(estimates) else []
    pairs = [(a, b) for a, b in default_pairs(done, cfg.compare) if a in done and b in done]
    frames = []
    for column in gt_columns:
        if pairs:
            frames.append(paired_table(estimates, lambda archs, c=column: gt.values([space.parse(a) for a in archs], c),
                                       pairs, gt=column))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=TABLE_COLUMNS)


def paired_text(paired: pd.DataFrame, gt_column: str) -> str:
    rows = paired[paired["gt"] == gt_column] if len(paired) else paired
    if not len(rows):
        return ""
    lines = [f"paired Kendall-tau differences (A - B) against {gt_column}: hierarchical bootstrap over seeds, then "
             f"architectures; {MULTIPLE_COMPARISONS_NOTE}",
             f"{'A':<14}{'B':<14}{'diff':>9}{'95% CI':>20}  {'per seed':<24}verdict"]
    for r in rows.itertuples():
        ci = f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}]" if np.isfinite(r.ci_low) else "n/a"
        lines.append(f"{r.a:<14}{r.b:<14}{r.diff:>+9.3f}{ci:>20}  {str(r.per_seed):<24}{r.verdict}")
    return "\n".join(lines)


def summary_table(summary: pd.DataFrame, results: list[dict], gt_column: str) -> str:
    """method x metric, mean +- std over seeds, against one ground-truth column."""
    cols = [("kendall_tau", ""), ("spearman_rho", ""), ("precision_at_k", 0.1), ("picked_gt", "")]
    s = summary[(summary["gt"] == gt_column) & (summary["subset"] == "scored")]
    lines = []
    methods = list(dict.fromkeys(r["method"] for r in results))
    header = f"{'method':<16}" + "".join(f"{(m if k == '' else f'{m}@{k}'):>22}" for m, k in cols) + f"{'jobs':>10}"
    lines += [f"ground truth: {gt_column}", header, "-" * len(header)]
    for method in methods:
        cells = []
        for metric, k in cols:
            row = s[(s["method"] == method) & (s["metric"] == metric) & (s["k"].astype(str) == str(k))]
            cells.append(f"{row['mean'].iloc[0]:+.3f} ± {row['std'].iloc[0]:.3f}" if len(row) else "n/a")
        statuses = [r["status"] for r in results if r["method"] == method]
        ok = sum(st == "done" for st in statuses)
        lines.append(f"{method:<16}" + "".join(f"{c:>22}" for c in cells) + f"{f'{ok}/{len(statuses)} ok':>10}")
        bad = [f"s{r['seed']}: {r['status']} ({r.get('reason')})" for r in results
               if r["method"] == method and r["status"] != "done"]
        lines += [f"    {b}" for b in bad]
    return "\n".join(lines)


# --- the run ----------------------------------------------------------------------------
def default_run_dir(cfg: RunConfig) -> Path:
    return REPO_ROOT / "reports" / "runs" / f"{cfg.suite}-{cfg.budget}-{utc_stamp()}"


def validate_config(cfg: RunConfig) -> None:
    get_suite(cfg.suite)
    cfg.resolved_budget()
    if not cfg.methods:
        raise ConfigError("--methods is empty; name at least one method (see `harness list`)")
    for m in cfg.methods:
        create_method(m)
    if not cfg.seeds:
        raise ConfigError("--seeds is empty; give e.g. --seeds 0,1,2")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"--seeds {','.join(map(str, cfg.seeds))} repeats a seed")
    # with Ray the GPUs are the workers' (a cluster's head node may have none)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available() and cfg.executor != "ray":
        raise ConfigError(f"--device {cfg.device}: no CUDA device is available here; use --device cpu")
    if cfg.jobs < 1:
        raise ConfigError(f"--jobs {cfg.jobs}: give 1 or more worker processes")
    if cfg.out and Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise ConfigError(f"--out {cfg.out} is an existing file; name a folder (new, or a run folder to resume)")
    for pair in cfg.compare:
        parse_pair(pair)
    if cfg.max_retries < 0:
        raise ConfigError(f"--max-retries {cfg.max_retries}: give 0 or more")
    if cfg.copy_isomorphic:
        space = get_suite(cfg.suite).make_space()
        if space.isomorphism_key(next(iter(space.enumerate()))) is None:
            raise ConfigError(f"--copy-isomorphic: space {space.name} defines no isomorphism key; drop the flag")


def run(cfg: RunConfig, out_stream=sys.stdout, hooks_factory=None,
        report_writer: Callable[[Path], object] | None = None, study_file: dict | None = None) -> Path:
    """Run (or resume) a study; ``report_writer(run_dir)`` writes the report at the end (the CLI
    passes ``harness.report.write_report``: the study layer does not import the report).
    ``study_file`` (``spec.study_source``: the ``--study`` file, which values it gave, which flags
    overrode it) goes into the manifest as is; it is not part of the config compared on resume.
    ``RUN/study.toml`` is written before any job: ``harness run --study RUN/study.toml`` reruns it."""
    validate_config(cfg)
    suite = get_suite(cfg.suite)
    space = suite.make_space()
    budget = cfg.resolved_budget()
    data_dir = cfg.data_dir or (str(default_data_dir()) if default_data_dir() else None)
    cfg = dataclasses.replace(cfg, data_dir=data_dir, cache_dir=cfg.cache_dir or str(default_cache_dir()))
    gt_columns = tuple(cfg.gt or suite.default_gt)
    gt = suite.run_ground_truth(space, budget, Path(data_dir) if data_dir else None,
                                Path(cfg.gt_file) if cfg.gt_file else None, Path(cfg.cache_dir), gt_columns,
                                cfg.device, say=lambda m: print(m, file=out_stream, flush=True))
    for c in gt_columns:
        gt.check_column(c)
    archs = resolve_archs(space, cfg.archs or budget.archs, cfg.arch_seed)
    if hasattr(gt, "prepare"):  # standalone GT: train (or load from cache) the scored archs up front
        gt.prepare(archs)
    run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    if hooks_factory is None and cfg.report:
        hooks_factory = default_hooks_factory
    with RunLock(run_dir):
        t0 = time.perf_counter()
        started = utc_now()
        prev = run_dir / "manifest.json"
        if prev.exists():
            old = read_json(prev).get("config", {})
            mine = json_config(cfg)
            diff = sorted(k for k in mine if k not in EXECUTION_FIELDS and old.get(k) != mine[k])
            if diff:
                raise ConfigError(f"run folder {run_dir} holds a run with a different config ({', '.join(diff)}); "
                                  f"use another --out or the same flags to resume")
        t_data = time.perf_counter()
        _, data_info = prepare_data(cfg.data_dir, cfg.cache_dir, budget.resolution, budget.score_size,
                                    "cpu" if cfg.executor == "ray" else cfg.device, cfg.progress)  # ray: workers load their own
        t_data = time.perf_counter() - t_data
        manifest = {
            "harness_version": harness.__version__, "git_commit": git_commit(), "config": json_config(cfg),
            "budget": dataclasses.asdict(budget), "scaled_down": scale_down_record(budget),
            "seeds": list(cfg.seeds), "suite": suite.name, "space": space.name, "gt_source": gt.source,
            "gt_columns": list(gt_columns), "n_archs": len(archs), "data": data_info,
            "platform": platform_record(torch.__version__, cfg.device),
            "started": started, "status": "running", "jobs": {},
        }
        if study_file is not None:
            manifest["study_file"] = study_file
        if hasattr(gt, "quality"):  # GT noise ceiling / standalone-vs-benchmark fidelity (issue 9)
            manifest["gt_quality"] = gt.quality(archs)
        atomic_write_text(run_dir / STUDY_FILE, study_toml(cfg))
        write_json(run_dir / "manifest.json", manifest)
        def refresh(_result: dict | None = None) -> None:
            """Aggregate what has finished so far (the rest `pending`): a study stopped part-way
            still has its metrics, curves and summary, and resumes with the same --out."""
            partial = ordered_results(cfg, collect_results(run_dir, cfg))
            manifest["jobs"] = {job_name(r["method"], r["seed"]): r for r in partial}
            aggregate(run_dir, cfg, archs, gt, gt_columns, partial, manifest)

        refresh()
        runner = JobRunner(run_dir, cfg, tuple(archs), hooks_factory)
        results = ordered_results(cfg, run_jobs(job_list(cfg.methods, cfg.seeds), runner, cfg, on_result=refresh))
        manifest["jobs"] = {job_name(r["method"], r["seed"]): r for r in results}
        manifest["timings"] = {"data_s": t_data, "total_s": time.perf_counter() - t0,
                               "jobs_wall_s": sum(r.get("wall_s", 0) for r in results)}
        manifest["ended"] = utc_now()
        manifest["status"] = "done"
        summary = aggregate(run_dir, cfg, archs, gt, gt_columns, results, manifest)
        print(f"\nrun folder: {run_dir}", file=out_stream)
        print(summary_table(summary, results, gt_columns[0]), file=out_stream)
        for column in gt_columns[1:]:
            print("\n" + summary_table(summary, results, column), file=out_stream)
        text = paired_text(pd.read_csv(run_dir / PAIRED, dtype={"per_seed": str}), gt_columns[0])
        if text:
            print("\n" + text, file=out_stream)
        if manifest.get("gt_quality"):
            print(format_quality(manifest["gt_quality"]), file=out_stream)
        if cfg.report and report_writer is not None:
            report_writer(run_dir)
    return run_dir


__all__ = ["RunConfig", "DEFAULT_METHODS", "EXECUTION_FIELDS", "json_config", "run", "run_job", "prepare_data",
           "HarnessError"]
