"""`harness report` and `harness compare`: a run folder as a self-contained HTML page and a PDF.

The report is built only from files in the run folder (manifest.json, metrics.csv, summary.csv,
estimates.csv, jobs/*/result.json, diagnostics/*) plus the ground truth the manifest names, so it
can be regenerated at any time; it never imports method modules. Every string inserted into the
HTML is escaped, figures are embedded as base64 PNG (no external requests, no scripts), and the
same figures and tables go into ``report.pdf`` through matplotlib's PdfPages.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402

import harness  # noqa: E402
from harness import metrics as M  # noqa: E402
from harness import plots as P  # noqa: E402
from harness.engine.curves import CURVE_COLUMNS, CURVE_SCORES, CURVES  # noqa: E402
from harness.core.errors import ConfigError  # noqa: E402
from harness.paired import MULTIPLE_COMPARISONS_NOTE, TABLE_COLUMNS  # noqa: E402
from harness.study.results import RunData, k_label, load_run, read_table  # noqa: E402
from harness.core.io import atomic_write_text, write_csv  # noqa: E402
from harness.groundtruth.table import low_ceiling_warning

JOB_FILES = {"log.txt", "result.json", "scores.csv", CURVE_SCORES, CURVES}
ZERO_COST_NAMES = frozenset({"synflow", "snip", "grad_norm", "jacov", "naswot", "fisher", "grasp", "zen", "zico"})
SUMMARY_COLUMNS = (("kendall_tau", ""), ("spearman_rho", ""), ("high_low_tau", "0.1"), ("precision_at_k", "0.1"),
                   ("picked_gt", ""), ("regret", ""))
TAU_BOOTSTRAP_RESAMPLES = 200  # per job over architectures; ~0.5 s for 1,000 archs


# --- tables ----------------------------------------------------------------------------
def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return "n/a" if not np.isfinite(v) else f"{v:.{digits}f}"
    return str(v)


def per_seed(run: RunData, metric: str = "kendall_tau", k: str = "", subset: str = "scored") -> pd.DataFrame:
    m = run.metrics
    if not len(m):
        return pd.DataFrame(columns=["method", "seed", "value"])
    sel = m[(m["gt"] == run.gt_column) & (m["subset"] == subset) & (m["metric"] == metric) & (m["k"] == k)]
    return sel[["method", "seed", "value"]].astype({"value": float})


def job_status(run: RunData) -> dict[str, tuple[int, int]]:
    out: dict[str, list[int]] = {}
    for r in run.results.values():
        c = out.setdefault(r["method"], [0, 0])
        c[0] += r.get("status") == "done"
        c[1] += 1
    return {m: (c[0], c[1]) for m, c in out.items()}


def summary_table(run: RunData) -> pd.DataFrame:
    """method x headline metric: mean ± std [CI] over seeds, primary ground-truth column."""
    s = run.summary
    status = job_status(run)
    rows = []
    for m in run.methods:
        row = {"method": m + (" (reference)" if m in run.reference else "")}
        for metric, k in SUMMARY_COLUMNS:
            sel = s[(s["method"] == m) & (s["gt"] == run.gt_column) & (s["metric"] == metric) & (s["k"] == k)
                    & (s["subset"].isin(["scored", "derived"]))] if len(s) else s
            label = metric + (f"@{k}" if k else "")
            if len(sel):
                r = sel.iloc[0]
                row[label] = f"{_fmt(r['mean'])} ± {_fmt(r['std'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
            else:
                row[label] = "n/a"
        ok, n = status.get(m, (0, 0))
        row["jobs ok"] = f"{ok}/{n}"
        rows.append(row)
    return pd.DataFrame(rows)


def tau_by_gt_table(run: RunData) -> pd.DataFrame:
    """method x ground-truth column: Kendall tau mean ± std over seeds (runs with several GT columns,
    e.g. NB201 `--gt cifar10_test_200ep,standalone`: tau vs the benchmark beside tau vs standalone
    training at the run's budget). Empty when the run has one GT column."""
    s = run.summary
    columns = list(run.manifest.get("gt_columns") or [])
    if len(columns) < 2 or not len(s):
        return pd.DataFrame()
    rows = []
    for m in run.methods:
        row = {"method": m + (" (reference)" if m in run.reference else "")}
        for c in columns:
            sel = s[(s["method"] == m) & (s["gt"] == c) & (s["metric"] == "kendall_tau") & (s["k"] == "")
                    & (s["subset"].isin(["scored", "derived"]))]
            row[f"tau vs {c}"] = f"{_fmt(sel.iloc[0]['mean'])} ± {_fmt(sel.iloc[0]['std'])}" if len(sel) else "n/a"
        rows.append(row)
    return pd.DataFrame(rows)


def jobs_table(run: RunData) -> pd.DataFrame:
    """One row per job: status (failed/collapsed shown as such), cost, tau with an arch-bootstrap CI."""
    rows = []
    for name, r in sorted(run.results.items(), key=lambda kv: (run.methods.index(kv[1]["method"])
                                                               if kv[1]["method"] in run.methods else 99,
                                                               kv[1]["seed"])):
        c = r.get("counters") or {}
        tau = ci = "n/a"
        if r.get("status") == "done" and run.gt_map is not None:
            e = run.estimates[(run.estimates["method"] == r["method"]) & (run.estimates["seed"] == r["seed"])
                              & (run.estimates["subset"] == "scored")]
            if len(e) >= 2:
                pred = e["score"].to_numpy(dtype=float)
                truth = np.array([run.gt_map[a] for a in e["arch"]])
                tau = _fmt(M.kendall_tau(pred, truth))
                lo, hi = M.bootstrap_ci(M.kendall_tau, pred, truth, n_resamples=TAU_BOOTSTRAP_RESAMPLES)
                ci = f"[{_fmt(lo)}, {_fmt(hi)}]"
        reason = r.get("reason") or ""
        rows.append({"job": name, "method": r["method"], "seed": r["seed"], "status": r.get("status", "?"),
                     "reason": reason, "kendall_tau": tau, "tau 95% CI (archs)": ci,
                     "wall_s": _fmt(r.get("wall_s"), 1), "cpu_s": _fmt(r.get("cpu_s"), 1), "fit_s": _fmt(r.get("fit_s"), 1),
                     "score_s": _fmt(r.get("score_s"), 1), "images_seen": c.get("images_seen", ""),
                     "fwd/img": _fmt(c.get("forward_passes_per_image"), 2),
                     "bwd/img": _fmt(c.get("backward_passes_per_image"), 2)})
    return pd.DataFrame(rows)


def all_metrics_table(run: RunData) -> pd.DataFrame:
    s = run.summary
    if not len(s):
        return pd.DataFrame(columns=["method", "gt", "subset", "metric", "k", "mean ± std", "95% CI", "n_seeds"])
    return pd.DataFrame({
        "method": s["method"], "gt": s["gt"], "subset": s["subset"], "metric": s["metric"], "k": s["k"],
        "mean ± std": [f"{_fmt(a)} ± {_fmt(b)}" for a, b in zip(s["mean"], s["std"])],
        "95% CI": [f"[{_fmt(a)}, {_fmt(b)}]" for a, b in zip(s["ci_low"], s["ci_high"])],
        "n_seeds": s["n_seeds"]})


def overhead_table(run: RunData) -> pd.DataFrame:
    rows = []
    for m, by_seed in run.diagnostics.items():
        for seed, d in sorted(by_seed.items()):
            o = d.get("overhead", {})
            frac = o.get("fraction_of_training")
            fc = d.get("feature_cosine") or {}
            rows.append({"method": m, "seed": seed, "layers tracked": len(d.get("layers", [])),
                         "hooks during training (s)": _fmt(o.get("hooks_during_training_s"), 3),
                         "training wall (s)": _fmt(o.get("training_wall_s"), 1),
                         "overhead": f"{100 * frac:.2f}%" if frac is not None else "n/a",
                         "feature-cosine (s, after training)": _fmt(o.get("feature_cosine_s"), 2),
                         "mean off-diag cosine": _fmt(fc.get("mean_off_diagonal")),
                         "errors": "; ".join(d.get("errors", []))})
    return pd.DataFrame(rows)


# --- ranking fidelity over training (issue 15) ---------------------------------------------------
def load_curves(run: RunData) -> pd.DataFrame:
    """``curves.csv`` for the run's GT column, ``k`` as a label."""
    df = read_table(run.run_dir / CURVES, CURVE_COLUMNS)
    if not len(df):
        return df
    df = df[df["gt"] == run.gt_column].copy()
    df["k"] = df["k"].map(k_label)
    return df


def curve_reference_values(run: RunData) -> dict[str, dict[str, float]]:
    """metric -> {row: mean over seeds} for params, flops and the best zero-cost row present."""
    out: dict[str, dict[str, float]] = {}
    for metric, k in P.FIDELITY_PANELS:
        means = {m: float(np.nanmean(v)) for m in run.reference
                 if len(v := per_seed(run, metric, k).query("method == @m")["value"].to_numpy(dtype=float))
                 and np.isfinite(v).any()}
        keep = {m: v for m, v in means.items() if m in ("params", "flops")}
        zero = {m: v for m, v in means.items() if m in ZERO_COST_NAMES}
        if zero:
            best = max(zero, key=zero.get)
            keep[best] = zero[best]
        out[metric] = keep
    return out


def fidelity_table(run: RunData, curves: pd.DataFrame) -> pd.DataFrame:
    """Per method and point: share of the image budget, images seen, tau and top-10 % tau (mean ±
    std over seeds), seeds; then the curve's cost per method."""
    rows = []
    if not len(curves):
        return pd.DataFrame()
    for m in [m for m in run.methods if m in set(curves["method"])]:
        g = curves[curves["method"] == m]
        for point, gp in g.groupby("point", sort=True):
            row = {"method": m, "point": int(point), "budget share": f"{100 * gp['fraction'].iloc[0]:.1f}%",
                   "images seen": int(gp["images_seen"].mean()), "source": ", ".join(sorted(set(gp["source"])))}
            for metric, k in P.FIDELITY_PANELS:
                v = gp[(gp["metric"] == metric) & (gp["k"].astype(str) == k)]["value"].to_numpy(dtype=float)
                label = metric if not k else f"{metric}@{k}"
                row[label] = (f"{np.nanmean(v):+.3f} ± {np.nanstd(v, ddof=1):.3f}" if np.isfinite(v).sum() > 1
                              else (f"{np.nanmean(v):+.3f}" if np.isfinite(v).any() else "n/a"))
            row["seeds"] = int(gp["seed"].nunique())
            rows.append(row)
    return pd.DataFrame(rows)


def curve_cost_table(run: RunData) -> pd.DataFrame:
    """What the curve cost each supernet method: seconds scoring points / job wall time."""
    rows = []
    for m in run.methods:
        jobs = [r for r in run.results.values() if r["method"] == m and r.get("curve") and r.get("status") == "done"]
        if not jobs:
            continue
        sec = np.array([r["curve"]["seconds"] for r in jobs], dtype=float)
        wall = np.array([r.get("wall_s", np.nan) for r in jobs], dtype=float)
        rows.append({"method": m, "jobs": len(jobs), "points": len(jobs[0]["curve"]["points"]),
                     "archs per point": jobs[0]["curve"]["archs"], "curve scoring (s, mean)": _fmt(sec.mean(), 1),
                     "job wall (s, mean)": _fmt(np.nanmean(wall), 1),
                     "overhead": f"{100 * np.nansum(sec) / max(np.nansum(wall - sec), 1e-9):.1f}%",
                     "scorer at points before 100 %": jobs[0]["curve"].get("scorer_note") or "the method's own"})
    return pd.DataFrame(rows)


PAIRED_TEXT = ("Kendall-tau difference A - B per pair, paired by seed and architecture. The interval comes from "
               "a hierarchical bootstrap (resample seeds, then the same architectures within each seed) with a "
               "small-sample t correction; 'A > B (95 %)' needs the interval to exclude 0 and the same sign on "
               "every seed, and fewer than 3 seeds are never called. " + MULTIPLE_COMPARISONS_NOTE)


def paired_view(run: RunData) -> pd.DataFrame:
    """``paired.csv`` for the run's GT column, formatted."""
    df = read_table(run.run_dir / "paired.csv", TABLE_COLUMNS, dtype={"per_seed": str})
    if not len(df):
        return df
    df = df[df["gt"] == run.gt_column].drop(columns="gt")
    df["diff"] = df["diff"].map(lambda v: f"{v:+.3f}")
    df["95% CI"] = [f"[{lo:+.3f}, {hi:+.3f}]" if np.isfinite(lo) else "n/a" for lo, hi in zip(df["ci_low"], df["ci_high"])]
    return df[["a", "b", "n_seeds", "n_archs", "diff", "95% CI", "per_seed", "verdict"]]


def gt_ceiling(run: RunData) -> dict | None:
    """The ground truth's own noise for the run's GT column: its tau between GT seeds (the ceiling
    any estimator can reach on these architectures), per-architecture std, and a plain verdict.
    None when the run's GT has no seeds to compare (benchmark tables)."""
    noise = (run.manifest.get("gt_quality") or {}).get("gt_noise") or {}
    if not noise.get("seed_pair_tau") or not run.gt_column.startswith("standalone"):
        return None

    tau = noise.get("tau_between_seeds_mean")
    warning = low_ceiling_warning(noise)
    text = (f"ground-truth ceiling: Kendall tau between GT seeds {tau:+.3f} over {noise.get('n_archs')} "
            f"architectures (per-architecture std {noise.get('per_arch_std_mean', float('nan')):.2f} points "
            f"mean, {noise.get('per_arch_std_max', float('nan')):.2f} max); a method's tau against this GT "
            f"cannot be expected to exceed it.")
    return {"tau": tau, "low": bool(warning), "text": f"{text} {warning}".strip(), "noise": noise}


def _fidelity_text(manifest: dict) -> str:
    """NB201 `--gt standalone`: how well standalone-at-budget agrees with the benchmark's columns."""
    fid = (manifest.get("gt_quality") or {}).get("standalone_fidelity")
    if not fid:
        return ""
    return "; ".join(f"standalone-at-budget vs {col} over {fid['n_archs']} archs: tau {v['kendall_tau']:+.3f}, "
                     f"spearman {v['spearman_rho']:+.3f}" for col, v in fid["vs"].items())


def manifest_facts(run: RunData) -> pd.DataFrame:
    m = run.manifest
    cfg, plat, t = m.get("config", {}), m.get("platform", {}), m.get("timings", {})
    b = m.get("budget", {})
    facts = [
        ("harness version", m.get("harness_version")), ("git commit", m.get("git_commit")),
        ("report written by", f"harness {harness.__version__}"),
        ("suite / space", f"{m.get('suite')} / {m.get('space')}"),
        ("budget", f"{b.get('name')}: {b.get('note', '')}"),
        ("budget overrides (--set)", ", ".join(f"{k}={v}" for k, v in (cfg.get("budget_overrides") or {}).items())
         or "none"),
        ("methods", ", ".join(run.methods)), ("reference rows", ", ".join(run.reference) or "none"),
        ("seeds", ", ".join(map(str, m.get("seeds", [])))),
        ("architectures scored", m.get("n_archs")), ("ground truth", f"{run.gt_column} ({m.get('gt_source')})"),
        *((("ground-truth ceiling", c["text"]),) if (c := gt_ceiling(run)) else ()),
        *((("standalone fidelity", fid),) if (fid := _fidelity_text(m)) else ()),
        ("started / ended", f"{m.get('started')} / {m.get('ended')}"), ("status", m.get("status")),
        ("total time (s)", _fmt(t.get("total_s"), 1)), ("jobs wall (s)", _fmt(t.get("jobs_wall_s"), 1)),
        ("python / torch", f"{plat.get('python')} / {plat.get('torch')}"),
        ("machine", f"{plat.get('machine')} ({plat.get('cpus')} CPUs, {plat.get('device')})"),
        ("device / precision", f"{cfg.get('device')} / {cfg.get('precision')}"),
        ("scaled down vs paper", ", ".join(f"{k}: {v.get('budget')} (paper {v.get('paper')})"
                                           for k, v in (m.get("scaled_down") or {}).items()) or "no"),
    ]
    return pd.DataFrame(facts, columns=["field", "value"])


# --- figures ----------------------------------------------------------------------------
@dataclass
class Figure:
    section: str
    name: str
    caption: str
    png: bytes


class _Figures:
    """Saves each figure as PNG + SVG, keeps the PNG bytes for HTML and the figure for the PDF."""

    def __init__(self, fig_dir: Path, pdf: PdfPages, notes: list[str]):
        self.fig_dir, self.pdf, self.notes = fig_dir, pdf, notes
        self.items: list[Figure] = []

    def add(self, section: str, name: str, caption: str, make) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fig = make()
        except Exception as exc:  # one broken plot must not cost the whole report
            self.notes.append(f"figure '{name}' could not be drawn: {type(exc).__name__}: {exc}")
            return
        if fig is None:
            return
        try:
            # each savefig redraws the figure (the costly part): PNG once, reused for the HTML;
            # layouts are fixed by tight_layout in plots.py, so no bbox_inches="tight" double draw
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=P.PNG_DPI)
            self.fig_dir.mkdir(parents=True, exist_ok=True)
            (self.fig_dir / f"{name}.png").write_bytes(buf.getvalue())
            fig.savefig(self.fig_dir / f"{name}.svg")
            self.pdf.savefig(fig)
            self.items.append(Figure(section, name, caption, buf.getvalue()))
        finally:
            plt.close(fig)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def _artefacts(run: RunData) -> dict[tuple[str, str], dict[int, Path]]:
    """(method, file name) -> seed -> path, for files a method left in its job folder."""
    out: dict[tuple[str, str], dict[int, Path]] = {}
    for name, r in run.results.items():
        job_dir = run.run_dir / "jobs" / name
        if not job_dir.is_dir():
            continue
        for f in sorted(job_dir.iterdir()):
            if (f.is_file() and f.name not in JOB_FILES and f.suffix in (".csv", ".json")
                    and not f.name.endswith(".tmp")):
                out.setdefault((r["method"], f.name), {})[int(r["seed"])] = f
    return out


def _json_table(obj, max_rows: int = 60) -> pd.DataFrame:
    """A JSON history as a table: list of records, dict of columns, or key/value pairs."""
    if isinstance(obj, dict):  # e.g. {"config": ..., "stages": [{...}, ...]}: show the longest record list
        records = [v for v in obj.values() if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)]
        if records:
            obj = max(records, key=len)
    if isinstance(obj, list) and obj and all(isinstance(r, dict) for r in obj):
        df = pd.DataFrame(obj)
    elif isinstance(obj, dict) and obj and all(isinstance(v, list) for v in obj.values()) \
            and len({len(v) for v in obj.values()}) == 1:
        df = pd.DataFrame(obj)
    elif isinstance(obj, list):
        df = pd.DataFrame({"value": [json.dumps(v, default=str) for v in obj]})
    elif isinstance(obj, dict):
        df = pd.DataFrame({"key": list(obj), "value": [json.dumps(v, default=str) for v in obj.values()]})
    else:
        df = pd.DataFrame({"value": [json.dumps(obj, default=str)]})
    df = df.head(max_rows).copy()
    for c in df.columns:
        df[c] = [(s if len(s) <= 120 else s[:117] + "...") for s in
                 (v if isinstance(v, str) else json.dumps(v, default=str) for v in df[c])]
    return df


# --- the report -------------------------------------------------------------------------
SECTIONS = (("overview", "Overview"), ("summary", "Summary"), ("jobs", "Jobs"), ("ranking", "Ranking quality"),
            ("fidelity", "Ranking fidelity vs training budget"),
            ("diagnostics", "Training diagnostics"), ("artefacts", "Method artefacts"),
            ("metrics", "All metrics"), ("manifest", "Manifest"), ("notes", "Notes"))


def build_figures(run: RunData, figs: _Figures) -> None:
    methods = [m for m in run.methods if m in set(run.metrics.get("method", []))] or run.methods
    taus = per_seed(run)
    figs.add("ranking", "tau_per_method", f"Kendall tau per method against {run.gt_column}: mean ± std over "
             "seeds (dots: seeds); reference rows as dashed lines.",
             lambda: P.tau_per_method(taus, methods, run.reference, gt=run.gt_column,
                                      ceiling=(c["tau"] if (c := gt_ceiling(run)) else None)))
    figs.add("ranking", "tau_boxplot", "Kendall tau over seeds per method (SE-NAS Fig. 8 style).",
             lambda: P.tau_boxplot(taus, methods, gt=run.gt_column))
    est = run.estimates[run.estimates["subset"] == "scored"] if len(run.estimates) else run.estimates
    if run.gt_map is not None and len(est):
        score_methods = [m for m in methods if m in set(est["method"])]
        tau_stats = {m: (float(np.nanmean(v)), float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else 0.0)
                     for m, v in ((m, taus.loc[taus["method"] == m, "value"].to_numpy(dtype=float))
                                  for m in score_methods) if np.isfinite(v).any()}
        figs.add("ranking", "ranking_stability", f"Ranking stability: {P.STABILITY_ARCHS} fixed architectures at "
                 "evenly spaced ground-truth quantiles, ordered by ground truth; boxes show each one's predicted "
                 "rank among them over seeds; dashed line = perfect ranking (SE-NAS Fig. 1 style).",
                 lambda: P.ranking_stability(est, run.gt_map, score_methods))
        figs.add("ranking", "score_vs_gt", "Predicted score against ground truth, all seeds; tau mean ± std in "
                 "each title.", lambda: P.score_vs_gt(est, run.gt_map, score_methods, tau_stats, run.gt_column))
        table = P.topk_table(est, run.gt_map, score_methods)
        write_csv(run.run_dir / "figures" / "topk_curves.csv", table)
        figs.add("ranking", "topk_curves", "High-low tau and precision@k as k grows, recomputed from "
                 "estimates.csv (K-shot NAS Fig. 5 style); band = std over seeds, dashed = reference rows.",
                 lambda: P.topk_curves(table, score_methods, run.reference))
    else:
        run.notes.append("score-vs-GT, ranking-stability and top-k plots skipped: ground truth or estimates "
                         "unavailable")
    curves = load_curves(run)
    if len(curves):
        curve_methods = [m for m in methods if m in set(curves["method"])]
        ceiling = gt_ceiling(run)
        figs.add("fidelity", "fidelity_curves", f"Ranking fidelity over training against {run.gt_column}: each "
                 "supernet job scores a fixed architecture subset at log-spaced points of its own image budget "
                 "(the last point is its final scores); line = mean over seeds, band = min..max over seeds; "
                 "dashed = reference rows (params, flops, best zero-cost row present: no training).",
                 lambda: P.fidelity_curves(curves, curve_methods, curve_reference_values(run),
                                           ceiling["tau"] if ceiling else None, run.gt_column))
    for m in run.methods:
        diags = run.diagnostics.get(m)
        if not diags:
            continue
        figs.add("diagnostics", f"drift_{_safe(m)}", f"{m}: weight histograms of the tracked shared convs at each "
                 "snapshot (first seed; colour = training progress) and the per-step relative update norms "
                 "(steps where the weight moved; all seeds).", lambda d=diags, m=m: P.drift_histograms(m, d))
        figs.add("diagnostics", f"cosine_{_safe(m)}", f"{m}: 4x4 cosine similarity of the penultimate features of "
                 "4 architectures on one fixed batch (mean over seeds).", lambda d=diags, m=m: P.cosine_heatmap(m, d))
    if run.diagnostics == {} and any(m not in run.reference for m in run.methods):
        run.notes.append("no diagnostics recorded (run with --no-report, or hooks disabled): drift and "
                         "feature-cosine plots skipped")


def build_artefacts(run: RunData, figs: _Figures) -> list[tuple[str, pd.DataFrame]]:
    """Render files methods left in their job folders: codes -> histogram, alpha history -> lines,
    JSON history -> table, any other CSV -> its first rows."""
    tables = []
    for (m, fname), by_seed in sorted(_artefacts(run).items()):
        seeds = sorted(by_seed)
        title = f"{m} / {fname}"
        lower = fname.lower()
        try:
            if fname.endswith(".json"):
                tables.append((f"{title} (seed {seeds[0]})", _json_table(json.loads(by_seed[seeds[0]].read_text()))))
                continue
            frames = [pd.read_csv(by_seed[s]).assign(seed=s) for s in seeds]
            if "code" in lower:
                df = pd.concat(frames, ignore_index=True)
                figs.add("artefacts", f"artefact_{_safe(m)}_{_safe(fname)}", f"{title}: histogram of the values "
                         f"(all {len(seeds)} seed(s)).", lambda t=title, d=df: P.codes_histogram(t, d))
            elif "alpha" in lower or "history" in lower:
                figs.add("artefacts", f"artefact_{_safe(m)}_{_safe(fname)}", f"{title}: values over training "
                         f"(seed {seeds[0]}).", lambda t=title, d=frames[0]: P.history_lines(t, d.drop(columns="seed")))
            else:
                tables.append((f"{title} (seed {seeds[0]}, first rows)", frames[0].drop(columns="seed").head(30)))
        except Exception as exc:
            run.notes.append(f"artefact {title} could not be rendered: {type(exc).__name__}: {exc}")
    return tables


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:14px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;font-size:13px;color:#cfd8dc}
nav{padding:8px 28px;background:#eceff1;font-size:13px}nav a{margin-right:14px;color:#1565c0}
main{padding:0 28px 40px}section{margin-top:26px}h2{border-bottom:2px solid #b0bec5;padding-bottom:4px}
table{border-collapse:collapse;font-size:12px;margin:8px 0;background:#fff}
th,td{border:1px solid #cfd8dc;padding:3px 7px;text-align:left;vertical-align:top}th{background:#eceff1}
tr.failed td,tr.collapsed td{background:#ffebee;color:#b71c1c;font-weight:600}
figure{margin:14px 0;background:#fff;border:1px solid #e0e0e0;padding:8px;display:inline-block;max-width:100%}
figure img{max-width:100%;height:auto}figcaption{font-size:12px;color:#555;max-width:900px}
pre{background:#fff;border:1px solid #e0e0e0;padding:10px;font-size:11px;overflow:auto;max-height:600px}
.note{color:#8d6e63;font-size:13px}.bad{color:#b71c1c;font-weight:700}.good{color:#2e7d32;font-weight:700}
"""


def html_table(df: pd.DataFrame, row_class=None) -> str:
    """A DataFrame as an HTML table; every header and cell escaped."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for _, row in df.iterrows():
        cls = row_class(row) if row_class else ""
        attr = f' class="{html.escape(cls)}"' if cls else ""
        body.append(f"<tr{attr}>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row.values) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure_html(f: Figure, embed: bool = True) -> str:
    # embedded: one self-contained file; linked: figures/<name>.png beside it (committed baselines,
    # where a single file of every figure would exceed the repository's 1 MiB per-file limit)
    src = f"data:image/png;base64,{base64.b64encode(f.png).decode('ascii')}" if embed else f"figures/{f.name}.png"
    return (f'<figure id="fig-{html.escape(f.name)}"><img alt="{html.escape(f.name)}" '
            f'src="{html.escape(src)}"><figcaption>{html.escape(f.caption)}</figcaption></figure>')


def _page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    nav = "".join(f'<a href="#{html.escape(sid)}">{html.escape(t)}</a>' for sid, t, _ in sections)
    body = "".join(f'<section id="{html.escape(sid)}"><h2>{html.escape(t)}</h2>{content}</section>'
                   for sid, t, content in sections)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<style>{CSS}</style></head><body><header><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(subtitle)}</p></header><nav>{nav}</nav><main>{body}</main></body></html>\n")


def _text_pages(pdf: PdfPages, title: str, text: str, lines_per_page: int = 70, max_pages: int = 8) -> None:
    lines = text.splitlines() or [""]
    pages = [lines[i:i + lines_per_page] for i in range(0, len(lines), lines_per_page)]
    for n, chunk in enumerate(pages[:max_pages]):
        fig = plt.figure(figsize=(8.27, 11.69))
        head = f"{title} ({n + 1}/{min(len(pages), max_pages)})" if len(pages) > 1 else title
        if n == max_pages - 1 and len(pages) > max_pages:
            chunk = chunk + [f"... {len(lines) - max_pages * lines_per_page} more lines in the HTML report"]
        fig.text(0.05, 0.97, head, fontsize=11, weight="bold", va="top")
        fig.text(0.05, 0.94, "\n".join(line[:130] for line in chunk), fontsize=6.5, family="monospace", va="top")
        pdf.savefig(fig)
        plt.close(fig)


def write_report(run_dir: Path, embed_figures: bool = True) -> Path:
    """Write ``figures/``, ``report.html`` and ``report.pdf`` for a run folder; returns the HTML path.
    ``embed_figures=False`` links ``figures/*.png`` instead of embedding them."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    m = run.manifest
    title = f"supernet-harness report: {m.get('suite')} / {m.get('budget', {}).get('name')}"
    subtitle = (f"run {run_dir.name} · harness {m.get('harness_version')} · commit {m.get('git_commit')} · "
                f"seeds {', '.join(map(str, m.get('seeds', [])))} · generated "
                f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}")
    pdf_tmp = run_dir / "report.pdf.tmp"
    summary = summary_table(run)
    by_gt = tau_by_gt_table(run)
    jobs = jobs_table(run)
    metrics_all = all_metrics_table(run)
    overhead = overhead_table(run)
    facts = manifest_facts(run)
    fidelity = fidelity_table(run, load_curves(run))
    paired = paired_view(run)
    curve_cost = curve_cost_table(run)
    with PdfPages(pdf_tmp, metadata={"Title": title, "Creator": f"supernet-harness {harness.__version__}"}) as pdf:
        _text_pages(pdf, title, subtitle.replace(" · ", "\n") + "\n\n" + "\n".join(
            textwrap.fill(f"{a:<24} {b}", 128, subsequent_indent=" " * 25) for a, b in facts.itertuples(index=False)))
        for t, df in ((f"Summary (ground truth {run.gt_column}; mean ± std [bootstrap 95% CI] over seeds)", summary),
                      *((("Kendall tau against each ground-truth column (mean ± std over seeds)", by_gt),)
                        if len(by_gt) else ()),
                      *((("Paired tau differences (hierarchical bootstrap; not adjusted for multiple comparisons)",
                          paired),) if len(paired) else ()), ("Jobs", jobs)):
            for fig in P.table_figure(t, df):
                pdf.savefig(fig)
                plt.close(fig)
        figs = _Figures(fig_dir, pdf, run.notes)
        build_figures(run, figs)
        for t, df in (("Ranking fidelity vs training budget", fidelity), ("Fidelity curve: cost", curve_cost)):
            if len(df):
                for fig in P.table_figure(t, df):
                    pdf.savefig(fig)
                    plt.close(fig)
        if len(overhead):
            for fig in P.table_figure("Diagnostics hooks: cost and feature cosine", overhead):
                pdf.savefig(fig)
                plt.close(fig)
        art_tables = build_artefacts(run, figs)
        for t, df in art_tables:
            for fig in P.table_figure(t, df):
                pdf.savefig(fig)
                plt.close(fig)
        for fig in P.table_figure("All metrics (mean ± std and bootstrap 95% CI over seeds)", metrics_all):
            pdf.savefig(fig)
            plt.close(fig)
        manifest_text = json.dumps(m, indent=1, default=str)
        _text_pages(pdf, "Manifest", manifest_text)
        if run.notes:
            _text_pages(pdf, "Notes", "\n".join(run.notes))
    pdf_tmp.replace(run_dir / "report.pdf")

    def figs_in(section: str) -> str:
        items = [f for f in figs.items if f.section == section]
        return "".join(_figure_html(f, embed_figures) for f in items) or '<p class="note">No figures in this section.</p>'

    status_cls = lambda row: row["status"] if row.get("status") in ("failed", "collapsed") else ""  # noqa: E731
    bad = jobs[jobs["status"] != "done"] if len(jobs) else jobs
    failed_html = (f'<p class="bad">{len(bad)} job(s) did not finish: '
                   + html.escape(", ".join(f"{r.job} ({r.status}: {r.reason})" for r in bad.itertuples()))
                   + "</p>") if len(bad) else '<p class="good">All jobs finished.</p>'
    art_html = "".join(f"<h3>{html.escape(t)}</h3>{html_table(df)}" for t, df in art_tables)
    ceiling = gt_ceiling(run)
    ceiling_html = (f'<p class="{"bad" if ceiling["low"] else "note"}">{html.escape(ceiling["text"])}</p>'
                    if ceiling else "")
    sections = [
        ("overview", "Overview", html_table(facts)),
        ("summary", "Summary", f"<p>Ground truth <b>{html.escape(run.gt_column)}</b>, subset <i>scored</i>; "
         "mean ± std [bootstrap 95% CI] over seeds. Failed or collapsed seeds give no value and are counted in "
         "<i>jobs ok</i>.</p>" + ceiling_html + failed_html + html_table(summary)
         + (f"<h3>Paired comparisons</h3><p>{html.escape(PAIRED_TEXT)}</p>" + html_table(paired)
            if len(paired) else "")
         + (f"<h3>Kendall tau against each ground-truth column</h3><p>{html.escape(_fidelity_text(m))}</p>"
            + html_table(by_gt) if len(by_gt) else "")),
        ("jobs", "Jobs", "<p>One row per (method, seed). The tau CI resamples architectures "
         f"({TAU_BOOTSTRAP_RESAMPLES} bootstrap resamples).</p>" + html_table(jobs, status_cls)),
        ("ranking", "Ranking quality", figs_in("ranking")),
        ("fidelity", "Ranking fidelity vs training budget",
         (figs_in("fidelity") + "<h3>Per point</h3>" + html_table(fidelity)
          + "<h3>What the curve cost</h3><p>Scoring the points runs inside training (RNG streams, counters "
          "and weights untouched); overhead = curve seconds / the rest of the job's wall time.</p>"
          + html_table(curve_cost)) if len(fidelity) else
         '<p class="note">No fidelity curve in this run (reference rows only, or curve_points=0).</p>'),
        ("diagnostics", "Training diagnostics",
         "<p>Recorded by hooks during supernet training (Pi-NAS parameter and feature shift). "
         "Overhead = time inside the hooks / the rest of the training wall time.</p>"
         + (html_table(overhead) if len(overhead) else "") + figs_in("diagnostics")),
        ("artefacts", "Method artefacts", (figs_in("artefacts") if any(f.section == "artefacts" for f in figs.items)
                                           else "") + art_html or '<p class="note">No method artefacts.</p>'),
        ("metrics", "All metrics", html_table(metrics_all)),
        ("manifest", "Manifest", f"<pre>{html.escape(json.dumps(m, indent=2, default=str))}</pre>"),
        ("notes", "Notes", "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in run.notes) + "</ul>"
         if run.notes else '<p class="note">None.</p>'),
    ]
    out = run_dir / "report.html"
    atomic_write_text(out, _page(title, subtitle, sections))
    return out


# --- compare ----------------------------------------------------------------------------
def compare_table(run_a: RunData, run_b: RunData) -> pd.DataFrame:
    """Metric means of two runs side by side; flag where |B - A| exceeds the seed-to-seed spread.

    The spread is the larger of the two runs' std over seeds: a difference within it is what
    rerunning with other seeds already produces. With a single seed on both sides no spread is
    known and nothing is flagged (``flag`` says so).
    """
    keys = ["method", "gt", "subset", "metric", "k"]
    a = run_a.summary[keys + ["mean", "std", "n_seeds"]]
    b = run_b.summary[keys + ["mean", "std", "n_seeds"]]
    df = a.merge(b, on=keys, how="outer", suffixes=("_a", "_b"))
    df["diff"] = df["mean_b"] - df["mean_a"]
    df["spread"] = df[["std_a", "std_b"]].max(axis=1)
    hib = df["metric"].map(lambda n: M.METRICS[n].higher_is_better if n in M.METRICS else True)

    def flag(r, better) -> str:
        if not (np.isfinite(r["mean_a"]) and np.isfinite(r["mean_b"])):
            return "missing in " + ("A" if not np.isfinite(r["mean_a"]) else "B")
        if not (np.isfinite(r["spread"]) and min(r["n_seeds_a"], r["n_seeds_b"]) > 1):
            return "no spread (1 seed)"
        if abs(r["diff"]) > r["spread"]:
            return "better" if (r["diff"] > 0) == better else "WORSE"
        return ""

    df["flag"] = [flag(r, h) for (_, r), h in zip(df.iterrows(), hib)]
    return df


def compare_runs(run_a: Path, run_b: Path, out: str | Path | None = None) -> int:
    """``harness compare A B``: writes compare.csv + compare.html, prints the flagged rows."""
    ra, rb = load_run(Path(run_a)), load_run(Path(run_b))
    sa, sb = ra.manifest.get("suite"), rb.manifest.get("suite")
    if sa != sb:
        raise ConfigError(f"cannot compare runs of different suites ({sa} vs {sb}); compare two runs of one suite")
    out_dir = Path(out) if out else Path(run_b) / f"compare-{Path(run_a).name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    df = compare_table(ra, rb)
    write_csv(out_dir / "compare.csv", df)
    flagged = df[df["flag"].isin(["better", "WORSE"])]
    facts = pd.DataFrame([
        ("run A", f"{Path(run_a)} (harness {ra.manifest.get('harness_version')}, commit {ra.manifest.get('git_commit')}, "
                  f"budget {ra.manifest.get('budget', {}).get('name')}, seeds {ra.manifest.get('seeds')})"),
        ("run B", f"{Path(run_b)} (harness {rb.manifest.get('harness_version')}, commit {rb.manifest.get('git_commit')}, "
                  f"budget {rb.manifest.get('budget', {}).get('name')}, seeds {rb.manifest.get('seeds')})"),
        ("rule", "flag = |mean_B - mean_A| > max(std_A, std_B) over seeds"),
        ("flagged", f"{len(flagged)} of {len(df)} metric rows")], columns=["field", "value"])
    show = df.copy()
    for c in ("mean_a", "std_a", "mean_b", "std_b", "diff", "spread"):
        show[c] = show[c].map(lambda v: _fmt(float(v)))
    cls = lambda row: "failed" if row["flag"] == "WORSE" else ""  # noqa: E731
    page = _page(f"supernet-harness compare: {sa}", f"A = {Path(run_a).name} · B = {Path(run_b).name}", [
        ("overview", "Overview", html_table(facts)),
        ("flagged", "Changes beyond the seed spread", html_table(show[show["flag"].isin(["better", "WORSE"])], cls)),
        ("all", "All metrics", html_table(show, cls))])
    atomic_write_text(out_dir / "compare.html", page)
    print(f"compare: {len(flagged)} of {len(df)} metric rows changed by more than the seed-to-seed spread")
    if len(flagged):
        cols = ["method", "gt", "subset", "metric", "k", "mean_a", "mean_b", "diff", "spread", "flag"]
        print(show.loc[flagged.index, cols].to_string(index=False))
    print(f"written: {out_dir / 'compare.html'}")
    return 0
