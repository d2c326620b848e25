"""`harness run`: resolve the study once, run every (method, seed) job, write the run folder.

Jobs are independent and resumable (``harness.study.jobs``). Aggregation (``harness.study.aggregate``:
estimates, metrics, summary, curves, paired comparisons, manifest) is recomputed from the job folders
after every job, so it is the same however jobs ran, and a study stopped part-way has its results.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

import harness
from harness.budgets import scale_down_record
from harness.core.errors import ConfigError
from harness.core.io import RunLock, atomic_write_text, read_json, write_json
from harness.core.paths import REPO_ROOT
from harness.core.provenance import git_commit, platform_record, utc_now, utc_stamp
from harness.engine.diagnostics import default_hooks_factory
from harness.engine.taskdata import prepare_data
from harness.executors import run_jobs
from harness.groundtruth.table import format_quality
from harness.study.aggregate import PAIRED, aggregate, aggregate_job_folders, ordered_results, paired_text, summary_table
from harness.study.jobs import JobRunner, job_name
from harness.study.plan import resolve
from harness.study.spec import STUDY_FILE, RunConfig, config_differences, json_config, study_toml


def default_run_dir(cfg: RunConfig) -> Path:
    dataset = "" if cfg.dataset == "cifar10" else f"{cfg.dataset}-"
    return REPO_ROOT / "reports" / "runs" / f"{cfg.suite}-{dataset}{cfg.budget}-{utc_stamp()}"


def run(cfg: RunConfig, out_stream=sys.stdout, hooks_factory=None,
        report_writer: Callable[[Path], object] | None = None, study_file: dict | None = None) -> Path:
    """Run (or resume) a study; ``report_writer(run_dir)`` writes the report at the end (the CLI
    passes ``harness.report.write_report``: the study layer does not import the report).
    ``study_file`` (``spec.study_source``: the ``--study`` file, which values it gave, which flags
    overrode it) goes into the manifest as is; it is not part of the config compared on resume.
    ``RUN/study.toml`` is written before any job: ``harness run --study RUN/study.toml`` reruns it."""
    plan = resolve(cfg, say=lambda m: print(m, file=out_stream, flush=True))
    cfg, suite, space, budget, gt, archs, gt_columns = (plan.cfg, plan.suite, plan.space, plan.budget, plan.gt,
                                                        plan.archs, plan.gt_columns)
    run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    if hooks_factory is None and cfg.report:
        hooks_factory = default_hooks_factory
    with RunLock(run_dir):
        t0 = time.perf_counter()
        started = utc_now()
        prev = run_dir / "manifest.json"
        before = read_json(prev) if prev.exists() else {}
        if before:
            diff = config_differences(before.get("config", {}), cfg)
            if diff:
                raise ConfigError(f"run folder {run_dir} holds a run with a different config ({', '.join(diff)}); "
                                  f"use another --out or the same flags to resume")
        t_data = time.perf_counter()
        _, data_info = prepare_data(cfg.data_dir, cfg.cache_dir, budget.resolution, budget.score_size,
                                    "cpu" if cfg.executor == "ray" else cfg.device, cfg.progress,
                                    dataset=cfg.dataset)  # ray: workers load their own
        t_data = time.perf_counter() - t_data
        manifest = {
            "harness_version": harness.__version__, "git_commit": git_commit(), "config": json_config(cfg),
            "budget": dataclasses.asdict(budget), "scaled_down": scale_down_record(budget),
            "seeds": list(cfg.seeds), "suite": suite.name, "space": space.name, "gt_source": gt.source,
            "gt_columns": list(gt_columns), "n_archs": len(archs), "data": data_info,
            "platform": platform_record(torch.__version__, cfg.device),
            "started": started, "status": "running", "jobs": {},
        }
        # every invocation of this run folder (first run and resumes) with its commit: `git_commit`
        # and `started` are this invocation's, jobs record their own in their entries
        manifest["sessions"] = [*before.get("sessions", []), {"started": started, "git_commit": manifest["git_commit"]}]
        if before.get("merges"):  # jobs that `harness merge` brought in from shards
            manifest["merges"] = before["merges"]
        if study_file is not None:
            manifest["study_file"] = study_file
        if hasattr(gt, "quality"):  # GT noise ceiling / standalone-vs-benchmark fidelity (issue 9)
            manifest["gt_quality"] = gt.quality(archs)
        atomic_write_text(run_dir / STUDY_FILE, study_toml(cfg))
        write_json(run_dir / "manifest.json", manifest)
        def refresh(_result: dict | None = None) -> None:
            """Aggregate what has finished so far (the rest `pending`): a study stopped part-way
            still has its metrics, curves and summary, and resumes with the same --out."""
            aggregate_job_folders(run_dir, plan, manifest)

        refresh()
        runner = JobRunner(run_dir, plan.job_plan(), hooks_factory)
        results = ordered_results(cfg, run_jobs(plan.jobs, runner, cfg, on_result=refresh))
        manifest["jobs"] = {job_name(r["method"], r["seed"]): r for r in results}
        manifest["timings"] = {"data_s": t_data, "total_s": time.perf_counter() - t0,
                               "jobs_wall_s": sum(r.get("wall_s", 0) for r in results)}
        manifest["ended"] = utc_now()
        manifest["status"] = "done"
        summary = aggregate(run_dir, plan, results, manifest)
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
