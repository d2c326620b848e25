"""`harness check`: CI gates on a run's metrics, from a TOML thresholds file.

Format (tables are ``[<suite>.<method>]``; keys are metric names as in metrics.csv, ``METRIC@K``
selects k; values are inline tables of rules)::

    [nb201.params]
    kendall_tau = { min = 0.40 }
    [nb201.spos]
    gt = "cifar10_test_200ep"              # optional: ground-truth column for this table
    kendall_tau = { max_drop = 0.10 }      # versus the same metric in --baseline
    "high_low_tau@0.1" = { min = -0.5 }

Rules: ``min``, ``max`` (on the run's mean over seeds) and ``max_drop`` (how much worse than the
baseline's mean the run may be; "worse" follows the metric's direction, so for ``regret`` a rise
is a drop). A rule may also name ``gt`` and ``subset`` (default: the run's first ground-truth
column, subset ``scored``; ``picked_gt``/``regret`` live in subset ``derived``). Every gated
method must also have all its jobs ``done``: a collapsed seed fails the gate instead of quietly
shrinking the mean. Exit 0 when every check passes, 1 on any failure, 2 (ConfigError) for a
malformed thresholds file, naming the problem.

Also the paired test `harness compare` prints (:func:`paired_compare`): for every method in
both runs, run A's method against run B's on the seeds and architectures both scored
(:mod:`harness.paired`).
"""
from __future__ import annotations

import math
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness import metrics as M
from harness.budgets import same_budget
from harness.core.errors import ConfigError
from harness.core.io import read_json
from harness.paired import MULTIPLE_COMPARISONS_NOTE, TABLE_COLUMNS, paired_table
from harness.study.aggregate import ESTIMATE_COLUMNS
from harness.study.results import k_label, load_run

RULES = ("min", "max", "max_drop")
RULE_OPTIONS = ("gt", "subset")
DERIVED_METRICS = ("picked_gt", "regret")


@dataclass(frozen=True)
class Rule:
    suite: str
    method: str
    metric: str
    k: str  # '' or the k label as in metrics.csv ("0.1", "5")
    gt: str | None
    subset: str
    kind: str
    threshold: float

    @property
    def label(self) -> str:
        return self.metric + (f"@{self.k}" if self.k else "")


def _k_label(text: str, where: str) -> str:
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"{where}: k '{text}' is not a number; write METRIC@0.1 (fraction) or METRIC@5 (count)") \
            from None
    try:
        M._check_k(int(v) if v.is_integer() and v >= 1 else v)
    except M.InvalidKError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return str(int(v)) if v.is_integer() and v >= 1 else f"{v:g}"


def parse_thresholds(path: Path) -> list[Rule]:
    """Read and validate the thresholds file; any problem is a ConfigError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"thresholds file {path} does not exist; pass --thresholds FILE.toml")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"malformed thresholds file {path}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"thresholds file {path} is not UTF-8 text: {exc}") from None
    rules: list[Rule] = []
    for suite, methods in doc.items():
        if not isinstance(methods, dict):
            raise ConfigError(f"{path}: top-level key '{suite}' must be a table [{suite}.<method>]")
        for method, table in methods.items():
            where = f"{path} [{suite}.{method}]"
            if not isinstance(table, dict):
                raise ConfigError(f"{where} must be a table of METRIC = {{ min = ... }} entries")
            table_gt = table.get("gt")
            if table_gt is not None and not isinstance(table_gt, str):
                raise ConfigError(f"{where}: gt must be a string naming a ground-truth column")
            for key, spec in table.items():
                if key == "gt":
                    continue
                w = f"{where} {key}"
                metric, _, k_text = key.partition("@")
                if metric not in M.METRICS:
                    raise ConfigError(f"{w}: unknown metric '{metric}'; metrics are {', '.join(M.METRICS)}")
                k = _k_label(k_text, w) if k_text else ""
                if M.METRICS[metric].ks is not None and not k:
                    raise ConfigError(f"{w}: {metric} needs a k, e.g. \"{metric}@0.1\"")
                if M.METRICS[metric].ks is None and k:
                    raise ConfigError(f"{w}: {metric} takes no k; write {metric}")
                if not isinstance(spec, dict) or not spec:
                    raise ConfigError(f"{w} must be an inline table such as {{ min = 0.4 }}")
                unknown = sorted(set(spec) - set(RULES) - set(RULE_OPTIONS))
                if unknown:
                    raise ConfigError(f"{w}: unknown rule '{unknown[0]}'; use {', '.join(RULES)} "
                                      f"(and optionally {', '.join(RULE_OPTIONS)})")
                kinds = [r for r in RULES if r in spec]
                if not kinds:
                    raise ConfigError(f"{w}: no rule; give one of {', '.join(RULES)}")
                gt = spec.get("gt", table_gt)
                subset = spec.get("subset", "derived" if metric in DERIVED_METRICS else "scored")
                for opt, val in (("gt", gt), ("subset", subset)):
                    if val is not None and not isinstance(val, str):
                        raise ConfigError(f"{w}: {opt} must be a string")
                for kind in kinds:
                    val = spec[kind]
                    if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
                        raise ConfigError(f"{w}: {kind} = {val!r} must be a finite number")
                    if kind == "max_drop" and val < 0:
                        raise ConfigError(f"{w}: max_drop = {val} must be >= 0")
                    rules.append(Rule(suite, method, metric, k, gt, subset, kind, float(val)))
    if not rules:
        raise ConfigError(f"thresholds file {path} holds no rules; see `harness check --help` for the format")
    return rules


def _metrics(run_dir: Path) -> pd.DataFrame:
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no metrics.csv; give a finished run folder (or a baseline folder "
                          "holding metrics.csv + manifest.json)")
    df = pd.read_csv(path)

    df["k"] = df["k"].map(k_label)
    return df


def _mean(df: pd.DataFrame, rule: Rule, gt: str) -> tuple[float, int]:
    sel = df[(df["method"] == rule.method) & (df["gt"] == gt) & (df["subset"] == rule.subset)
             & (df["metric"] == rule.metric) & (df["k"] == rule.k) & (df["status"] == "done")]
    v = sel["value"].to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return (float(v.mean()) if v.size else math.nan), int(v.size)


def run_checks(run_dir: Path, thresholds: Path, baseline: Path | None = None) -> pd.DataFrame:
    rules = parse_thresholds(thresholds)
    run_dir = Path(run_dir)
    if not (run_dir / "manifest.json").is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no manifest.json)")
    manifest = read_json(run_dir / "manifest.json")
    suite = manifest.get("suite")
    mine = [r for r in rules if r.suite == suite]
    if not mine:
        raise ConfigError(f"{thresholds} has no [{suite}.<method>] tables for this run's suite '{suite}'")
    if any(r.kind == "max_drop" for r in mine) and baseline is None:
        raise ConfigError("max_drop rules compare against a baseline; pass --baseline DIR "
                          "(e.g. reports/baselines/<suite>-<budget>)")
    run_m = _metrics(run_dir)
    base_m = _metrics(Path(baseline)) if baseline is not None else None
    default_gt = (manifest.get("gt_columns") or [None])[0]
    jobs = manifest.get("jobs") or {}
    rows = []
    for method in dict.fromkeys(r.method for r in mine):
        statuses = [j.get("status") for j in jobs.values() if j.get("method") == method]
        ok = sum(s == "done" for s in statuses)
        rows.append({"method": method, "metric": "jobs done", "gt": "", "rule": "all done",
                     "value": f"{ok}/{len(statuses)}", "threshold": "", "result":
                     "pass" if statuses and ok == len(statuses) else "FAIL",
                     "why": "" if statuses and ok == len(statuses) else
                     ("method not in this run" if not statuses else "failed/collapsed jobs")})
    for r in mine:
        gt = r.gt or default_gt
        value, n = _mean(run_m, r, gt)
        row = {"method": r.method, "metric": r.label, "gt": gt, "rule": r.kind, "value": value, "threshold": r.threshold,
               "result": "FAIL", "why": ""}
        if not np.isfinite(value):
            row["why"] = f"no value in the run for {r.method} {r.label} ({gt}, {r.subset})"
        elif r.kind == "min":
            row["result"] = "pass" if value >= r.threshold else "FAIL"
        elif r.kind == "max":
            row["result"] = "pass" if value <= r.threshold else "FAIL"
        else:
            base, _ = _mean(base_m, r, gt)
            if not np.isfinite(base):
                row["why"] = f"no baseline value for {r.method} {r.label}"
            else:
                better = M.METRICS[r.metric].higher_is_better
                drop = (base - value) if better else (value - base)
                row.update(value=value, threshold=f"{r.threshold} (baseline {base:.4f}, drop {drop:+.4f})")
                row["result"] = "pass" if drop <= r.threshold else "FAIL"
        rows.append(row)
    return pd.DataFrame(rows, columns=["method", "metric", "gt", "rule", "value", "threshold", "result", "why"])


def format_table(df: pd.DataFrame) -> str:
    show = df.copy()
    show["value"] = [f"{v:+.4f}" if isinstance(v, float) else str(v) for v in show["value"]]
    show["threshold"] = [f"{v:+.4f}" if isinstance(v, float) else str(v) for v in show["threshold"]]
    return show.to_string(index=False)


# --- exact reproduction of a baseline ----------------------------------------------------
METRIC_KEYS = ["method", "seed", "gt", "subset", "metric", "k"]
# what decides the numbers besides the config: the CPU model and torch build (kernel choice)
PLATFORM_KEYS = ("cpu_model", "torch")
# the manifest config fields that decide the numbers (besides the resolved budget, compared whole)
RUN_KEYS = ("suite", "dataset", "methods", "seeds", "archs", "gt", "arch_seed", "device", "precision",
            "copy_isomorphic")
# a key a manifest lacks (it predates the key) counts as this value
RUN_DEFAULTS = {"dataset": "cifar10"}


def exact_comparison(run_dir: Path, baseline: Path) -> tuple[str, list[str]]:
    """Compare a run's metrics.csv value for value with a baseline made by the same command.

    Returns ``("same" | "differs" | "skipped", lines)``. Skipped (with the reason) where the
    baseline's CPU model or torch build is not this run's, or either manifest does not record
    them: numbers are only expected to be bit-identical on the same platform."""
    mine, base = (read_json(Path(d) / "manifest.json") for d in (run_dir, baseline))
    pm, pb = mine.get("platform", {}), base.get("platform", {})
    differ = [f"{k}: baseline {pb.get(k, 'not recorded')!r}, this run {pm.get(k, 'not recorded')!r}"
              for k in PLATFORM_KEYS if pm.get(k) is None or pm.get(k) != pb.get(k)]
    if differ:
        return "skipped", [f"exact comparison with {baseline} skipped (another platform; the threshold gates "
                           f"still apply): " + "; ".join(differ)]
    cm, cb = mine.get("config", {}), base.get("config", {})
    other = [k for k in RUN_KEYS if cm.get(k, RUN_DEFAULTS.get(k)) != cb.get(k, RUN_DEFAULTS.get(k))]
    # a budget field the baseline predates counts as its default (which reproduces the old runs)
    other += [] if same_budget(mine.get("budget") or {}, base.get("budget") or {}) else ["budget"]
    if other:
        return "differs", [f"exact comparison with {baseline}: the run was not made with the baseline's command "
                           f"(differs in {', '.join(other)}); rerun it as the baseline's manifest says"]
    a, b = (_metrics(Path(d)).copy() for d in (run_dir, baseline))
    for df in (a, b):
        df["seed"] = df["seed"].astype(int)
    a, b = (df.set_index(METRIC_KEYS)["value"].astype(float).sort_index() for df in (a, b))
    lines = []
    only = sorted(set(a.index) ^ set(b.index))
    if only:
        lines.append(f"{len(only)} metric rows are in only one of the two runs, e.g. {only[0]}")
    both = a.index.intersection(b.index)
    va, vb = a.loc[both].to_numpy(), b.loc[both].to_numpy()
    same = (va == vb) | (np.isnan(va) & np.isnan(vb))
    for key, x, y in list(zip(both[~same], va[~same], vb[~same]))[:5]:
        lines.append(f"{'/'.join(map(str, key))}: run {x!r}, baseline {y!r}")
    if (~same).sum() > 5:
        lines.append(f"... {int((~same).sum())} values differ in all")
    if lines:
        return "differs", [f"exact comparison with {baseline}: the run does not reproduce the baseline "
                           f"({len(both)} rows compared)"] + lines
    return "same", [f"exact comparison with {baseline}: all {len(both)} metric values identical "
                    f"(platform {pm.get('cpu_model')}, torch {pm.get('torch')})"]


def exact_on_platform(run_dir: Path, baselines: list[Path]) -> tuple[str, list[str]]:
    """``exact_comparison`` with the first of ``baselines`` (the same command, made on different
    CPUs) whose platform is this run's; "skipped" with every reason where none is."""
    skipped = []
    for baseline in baselines:
        verdict, lines = exact_comparison(run_dir, baseline)
        if verdict != "skipped":
            return verdict, lines
        skipped += lines
    return "skipped", skipped


def main(args) -> int:
    """Entry point of ``harness check`` (args: run_dir, thresholds, baseline, exact)."""
    baseline = Path(args.baseline) if getattr(args, "baseline", None) else None
    if getattr(args, "exact", False) and baseline is None:
        raise ConfigError("--exact compares with a baseline; pass --baseline DIR")
    df = run_checks(Path(args.run_dir), Path(args.thresholds), baseline)
    print(format_table(df))
    failed = int((df["result"] != "pass").sum())
    print(f"\nharness check: {len(df) - failed}/{len(df)} checks passed" + (f", {failed} FAILED" if failed else ""))
    if getattr(args, "exact", False):
        verdict, lines = exact_on_platform(Path(args.run_dir),
                                           [baseline, *(Path(p) for p in getattr(args, "exact_also", None) or [])])
        print("\n".join(lines))
        failed += verdict == "differs"
    sys.stdout.flush()
    return 1 if failed else 0


# --- paired test for `harness compare` ---------------------------------------------------
def paired_compare(run_a, run_b, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
                   ) -> tuple[pd.DataFrame, list[str]]:
    """Paired Kendall-tau test of every method both runs have: A = run A's method, B = run B's.

    ``run_a`` / ``run_b``: loaded runs (``harness.study.results.RunData``: ``estimates``, ``gt_map``,
    ``gt_column``). Architectures are matched by arch string within a seed (the runs' arch
    indices may differ); the ground truth is run A's, completed from run B's. Returns the
    :func:`harness.paired.paired_table` frame (diff = tau(A) - tau(B)) and notes to print.
    """

    notes: list[str] = []
    frames, pairs = [], []
    for tag, run in (("A", run_a), ("B", run_b)):
        est = run.estimates
        if not len(est):
            continue
        est = est[est["subset"] == "scored"].drop_duplicates(["method", "seed", "arch"]).copy()
        est["method"] = est["method"].astype(str) + f" ({tag})"
        frames.append(est)
    est = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ESTIMATE_COLUMNS)
    est["arch_index"] = pd.factorize(est["arch"])[0]  # one index per arch string across both runs
    present = set(est["method"])
    for m in dict.fromkeys([*run_a.estimates.get("method", []), *run_b.estimates.get("method", [])]):
        if f"{m} (A)" in present and f"{m} (B)" in present:
            pairs.append((f"{m} (A)", f"{m} (B)"))
    if not pairs:
        return pd.DataFrame(columns=TABLE_COLUMNS), ["paired test skipped: no method has scored estimates "
                                                     "(estimates.csv) in both runs"]
    truth = {**(run_b.gt_map or {}), **(run_a.gt_map or {})}
    if not truth:
        return pd.DataFrame(columns=TABLE_COLUMNS), ["paired test skipped: ground truth unavailable for both runs"]
    if run_a.gt_column != run_b.gt_column:
        notes.append(f"runs use different ground-truth columns ({run_a.gt_column} vs {run_b.gt_column}); "
                     f"the paired test uses A's ({run_a.gt_column})")
    df = paired_table(est, truth, pairs, gt=run_a.gt_column, n_boot=n_boot, seed=seed, level=level)
    notes.append("diff = tau(A) - tau(B), mean over shared seeds; CI: hierarchical bootstrap (seeds, then "
                 "architectures) se with a t quantile on n_seeds-1 df; a verdict needs the CI to exclude 0, "
                 "the same sign on every seed and >= 3 seeds")
    notes.append(MULTIPLE_COMPARISONS_NOTE)
    return df, notes


def format_paired(df: pd.DataFrame) -> str:
    show = df.copy()
    for c in ("diff", "ci_low", "ci_high"):
        show[c] = [f"{v:+.3f}" if np.isfinite(v) else "nan" for v in show[c].astype(float)]
    return show.to_string(index=False)
