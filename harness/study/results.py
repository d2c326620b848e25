"""A run folder read back: manifest, metrics, summary, estimates, job results, diagnostics and the
ground truth of the scored architectures. The report and `harness check` both read runs through
this module (it imports no plotting library)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.core.errors import ConfigError, HarnessError
from harness.core.io import read_json
from harness.engine.diagnostics import DIAG_DIR, load_diagnostics
from harness.study.aggregate import ESTIMATE_COLUMNS
from harness.suites import get_suite

# Rows that need no supernet training: drawn as reference lines. The runner attaches diagnostics
# hooks only to supernet methods, so "no diagnostics" identifies them too; this list covers runs
# written without hooks (--no-report) and zero-cost proxies added later.
REFERENCE_NAMES = frozenset({"params", "flops", "random", "synflow", "snip", "grad_norm", "jacov", "naswot",
                             "fisher", "grasp", "zen", "zico"})
REFERENCE_CLASSES = frozenset({"RandomScores", "CostProxy"})
# --- loading ----------------------------------------------------------------------------
@dataclass
class RunData:
    run_dir: Path
    manifest: dict
    metrics: pd.DataFrame
    summary: pd.DataFrame
    estimates: pd.DataFrame
    results: dict[str, dict]
    methods: list[str]
    reference: list[str]
    gt_column: str
    gt_map: dict[str, float] | None
    diagnostics: dict[str, dict[int, dict]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def read_table(path: Path, columns: list[str], dtype: dict | None = None) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(columns=columns)
    try:
        return pd.read_csv(path, dtype=dtype)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=columns)


def k_label(k) -> str:
    """'' for no k; '0.1' for a fraction; '5' for a count (metrics.csv stores counts as floats)."""
    if k is None or (isinstance(k, float) and math.isnan(k)) or (isinstance(k, str) and k.strip() in ("", "nan")):
        return ""
    try:
        f = float(k)
    except (TypeError, ValueError):
        return str(k)
    return str(int(f)) if f.is_integer() and f >= 1 else f"{f:g}"


def read_estimates(run_dir: Path, results: dict) -> pd.DataFrame:
    """The run's estimates.csv or, where a committed run left it out (``tools/export_run.py`` keeps
    every file under 1 MiB, and a study of 30 jobs on 300 architectures passes that), the same rows
    from each job's ``scores.csv``, which the aggregation concatenates into it."""
    if (run_dir / "estimates.csv").is_file():
        return read_table(run_dir / "estimates.csv", ESTIMATE_COLUMNS)
    frames = [pd.read_csv(path).assign(method=res["method"], seed=res["seed"])
              for name, res in results.items() if (path := run_dir / "jobs" / name / "scores.csv").is_file()]
    return pd.concat(frames, ignore_index=True)[ESTIMATE_COLUMNS] if frames else pd.DataFrame(columns=ESTIMATE_COLUMNS)


def load_run(run_dir: Path) -> RunData:
    run_dir = Path(run_dir)
    if not (run_dir / "manifest.json").is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no manifest.json); give the folder `harness run` wrote")
    manifest = read_json(run_dir / "manifest.json")
    metrics = read_table(run_dir / "metrics.csv", ["method", "seed", "gt", "subset", "metric", "k", "value", "status"])
    summary = read_table(run_dir / "summary.csv", ["method", "gt", "subset", "metric", "k", "mean", "std", "ci_low",
                                                  "ci_high", "n_seeds"])
    for df in (metrics, summary):
        df["k"] = df["k"].map(k_label) if len(df) else df["k"]
    results = dict(manifest.get("jobs") or {})
    for path in sorted((run_dir / "jobs").glob("*/result.json")):
        results.setdefault(path.parent.name, read_json(path))
    estimates = read_estimates(run_dir, results)
    methods = list(dict.fromkeys(list(manifest.get("config", {}).get("methods") or [])
                                 + [r["method"] for r in results.values()]))
    diagnostics: dict[str, dict[int, dict]] = {}
    notes: list[str] = []
    for name, res in results.items():
        d = run_dir / DIAG_DIR / name
        try:
            diag = load_diagnostics(d)
        except Exception as exc:  # a half-written or corrupt diagnostics folder must not stop the report
            notes.append(f"diagnostics of {name} unreadable: {exc}")
            diag = None
        if diag is not None:
            diagnostics.setdefault(res["method"], {})[int(res["seed"])] = diag
    reference = [m for m in methods if m in REFERENCE_NAMES or any(
        r.get("describe", {}).get("class") in REFERENCE_CLASSES for r in results.values() if r["method"] == m)]
    if diagnostics:  # with hooks on, a method without diagnostics trained no supernet
        done = {r["method"] for r in results.values() if r.get("status") == "done"}
        reference = [m for m in methods if m in reference or (m not in diagnostics and m in done)]
    gt_cols = manifest.get("gt_columns") or sorted(set(metrics.get("gt", [])))
    gt_column = gt_cols[0] if gt_cols else ""
    gt_map, note = load_gt_map(manifest, estimates, gt_column)
    if note:
        notes.append(note)
    return RunData(run_dir, manifest, metrics, summary, estimates, results, methods, reference, gt_column, gt_map,
                   diagnostics, notes)


def load_gt_map(manifest: dict, estimates: pd.DataFrame, column: str) -> tuple[dict[str, float] | None, str]:
    """Ground truth of every scored architecture, from the table the manifest's config names."""
    if not len(estimates):
        return None, "no estimates.csv rows: plots that need scores are skipped"
    cfg = manifest.get("config", {})
    try:
        suite = get_suite(manifest.get("suite") or cfg.get("suite", "nb201"))
        space = suite.make_space()
        data_dir, gt_file = cfg.get("data_dir"), cfg.get("gt_file")
        gt = suite.load_gt(space, data_dir=Path(data_dir) if data_dir else None,
                           gt_file=Path(gt_file) if gt_file else None)
        archs = list(dict.fromkeys(estimates["arch"]))
        values = gt.values([space.parse(a) for a in archs], column)
        return dict(zip(archs, map(float, values))), ""
    except (HarnessError, OSError, KeyError, ValueError) as exc:
        return None, (f"ground truth unavailable ({exc}); the score-vs-GT, stability and top-k plots are skipped "
                      f"(set HARNESS_DATA_DIR or keep the manifest's data_dir readable, then rerun `harness report`)")
