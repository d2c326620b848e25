"""Aggregation: the run's estimates, metrics, summary, fidelity curves and paired comparisons,
recomputed from the job folders after every job (unfinished jobs are `pending`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness import metrics as M
from harness.core.io import read_json, write_csv, write_json
from harness.engine.curves import CURVE_COLUMNS, CURVES, job_curve_metrics, read_curve_scores
from harness.paired import MULTIPLE_COMPARISONS_NOTE, TABLE_COLUMNS, default_pairs, paired_table
from harness.study.jobs import job_name
from harness.study.plan import StudyPlan
from harness.study.spec import RunConfig

# estimates.csv: every job's scores.csv with its method and seed
ESTIMATE_COLUMNS = ["method", "seed", "subset", "arch_index", "arch", "score"]

PAIRED = "paired.csv"


def job_metrics(scores: pd.DataFrame, gt, space, columns, picked: str | None) -> list[dict]:
    rows = []
    for column in columns:
        # a GT without the space optimum (a partial NATS-Bench file) has no regret: NaN, its source says why
        no_optimum = gt.optimum_unavailable(column) if hasattr(gt, "optimum_unavailable") else None
        for subset, df in scores.groupby("subset", sort=False):
            archs = [space.parse(a) for a in df["arch"]]
            truth = gt.values(archs, column)
            for r in M.compute_all(df["score"].to_numpy(), truth):
                if no_optimum and r["metric"] == "regret":
                    r = {**r, "value": np.nan}
                rows.append({"gt": column, "subset": subset, **r})
        if picked is not None:
            value = float(gt.values([space.parse(picked)], column)[0])
            rows.append({"gt": column, "subset": "derived", "metric": "picked_gt", "k": None, "value": value})
            best = np.nan if no_optimum else gt.best(column) if hasattr(gt, "best") else np.nan
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


def aggregate(run_dir: Path, plan: StudyPlan, results: list[dict], manifest: dict) -> pd.DataFrame:
    """Recompute every run-level file from the job folders (unfinished jobs are rows with their
    status), so the numbers are the same however and in whatever order the jobs ran."""
    cfg, space, gt, gt_columns = plan.cfg, plan.space, plan.gt, plan.gt_columns
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
    estimates = (pd.concat(est_rows)[ESTIMATE_COLUMNS] if est_rows
                 else pd.DataFrame(columns=ESTIMATE_COLUMNS))
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


def aggregate_job_folders(run_dir: Path, plan: StudyPlan, manifest: dict) -> list[dict]:
    """``aggregate`` over what the job folders hold now (jobs without a result are `pending`); sets
    ``manifest["jobs"]``. A run refreshes with it after every job, `harness merge` after a merge."""
    results = ordered_results(plan.cfg, collect_results(run_dir, plan.cfg))
    manifest["jobs"] = {job_name(r["method"], r["seed"]): r for r in results}
    aggregate(run_dir, plan, results, manifest)
    return results


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
        lines += subset_lines(summary, method, gt_column)
    return "\n".join(lines)


def subset_lines(summary: pd.DataFrame, method: str, gt_column: str) -> list[str]:
    """The Kendall tau on a method's own subsets (SE-NAS `survivors`), printed under its row beside
    the full-set tau (which stays the number paired with other methods)."""
    s = summary[(summary["gt"] == gt_column) & (summary["method"] == method) & (summary["metric"] == "kendall_tau")
                & (~summary["subset"].isin(["scored", "derived"]))]
    return [f"    subset {r.subset}: kendall_tau {r.mean:+.3f} ± {r.std:.3f} ({int(r.n_seeds)} seeds)"
            for r in s.itertuples()]
