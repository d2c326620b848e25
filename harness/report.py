"""`harness report` and `harness compare`: a run folder as one document, in HTML and in PDF.

The report is built only from files in the run folder (manifest.json, metrics.csv, summary.csv,
estimates.csv, curves.csv, paired.csv, jobs/*/result.json, diagnostics/*) plus the ground truth the
manifest names, so it can be regenerated at any time; it never imports method modules.

One document, two media
    Python computes plain values (strings, tables of strings, PNG bytes); the Jinja2 templates in
    ``harness/templates/`` (package data) lay them out with autoescaping on, so no HTML is assembled
    in Python strings and every run name, method name, reason and warning is escaped by the
    template engine. Figures are embedded as base64 PNG (no external requests, no scripts), or
    linked as ``figures/*.png`` with ``embed_figures=False`` (committed baselines, where one file
    holding every figure would pass the repository's 1 MiB per-file limit). ``report.pdf`` is that
    same HTML printed by headless Chromium (:mod:`harness.pdf` says why Chromium): the stylesheet's
    print rules give A4 portrait pages with page numbers, a table of contents of the same ``<h2>``
    sections, figures at text width, table rows that never split (headers repeat on each page) and
    no text under 7 pt.

Page 1 is the verdict: suite, budget, ground truth and its ceiling, and one row per method
(Kendall tau, its paired difference to SPOS and to ``params`` with the verdict of
:mod:`harness.paired`, where its fidelity curve ends, its cost, its jobs' status), then the
warnings methods recorded (``result.json`` ``extra["warnings"]``: a list of strings).

Large runs (20 methods x 5 seeds x 15,625 architectures) stay readable: scatter plots draw a
thinned, fixed subsample of points (tables keep the exact numbers) and the per-job architecture
bootstrap uses fewer resamples above 1,000 architectures.
"""
from __future__ import annotations

import base64
import datetime as dt
import io
import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape  # noqa: E402

import harness  # noqa: E402
from harness import check as C  # noqa: E402
from harness import metrics as M  # noqa: E402
from harness import plots as P  # noqa: E402
from harness.core.errors import ConfigError  # noqa: E402
from harness.core.io import atomic_write_text, write_csv  # noqa: E402
from harness.engine.curves import CURVE_COLUMNS, CURVE_SCORES, CURVES  # noqa: E402
from harness.groundtruth.table import low_ceiling_warning  # noqa: E402
from harness.paired import MULTIPLE_COMPARISONS_NOTE, TABLE_COLUMNS  # noqa: E402
from harness.pdf import PdfEngineMissing, find_chromium, html_to_pdf  # noqa: E402
from harness.study.results import RunData, k_label, load_run, read_table  # noqa: E402

JOB_FILES = {"log.txt", "result.json", "scores.csv", CURVE_SCORES, CURVES}
ZERO_COST_NAMES = frozenset({"synflow", "snip", "grad_norm", "jacov", "naswot", "fisher", "grasp", "zen", "zico"})
SUMMARY_COLUMNS = (("kendall_tau", ""), ("spearman_rho", ""), ("high_low_tau", "0.1"), ("precision_at_k", "0.1"),
                   ("picked_gt", ""), ("regret", ""))
TAU_BOOTSTRAP_RESAMPLES = 200  # per job over architectures; ~0.5 s for 1,000 archs
TAU_BOOTSTRAP_WORK = 200_000  # resamples x architectures per job above which fewer resamples are drawn
TAU_BOOTSTRAP_MIN = 20
VERDICT_BASES = ("spos", "params")
ARTEFACT_MAX_COLUMNS = 8  # wider artefact tables show their first columns (the file has all)
ARTEFACT_MAX_ROWS = 30
WRAP_AT = 48  # a table cell longer than this wraps at word boundaries (shorter ones never wrap)
SECTIONS = (("verdict", "Verdict"), ("ranking", "Ranking quality"),
            ("fidelity", "Ranking fidelity vs training budget"), ("stability", "Stability over seeds"),
            ("jobs", "Jobs"), ("diagnostics", "Training diagnostics"), ("artefacts", "Method artefacts"),
            ("metrics", "All metrics"), ("manifest", "Manifest"), ("notes", "Notes"))
COMPARE_SECTIONS = (("overview", "Overview"), ("paired", "Paired Kendall-tau test per method"),
                    ("gates", "harness check gates"), ("flagged", "Changes beyond the seed spread"),
                    ("all", "All metrics"))


# --- tables ----------------------------------------------------------------------------
def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return "n/a" if not np.isfinite(v) else f"{v:.{digits}f}"
    return str(v)


def _signed(v, digits: int = 3) -> str:
    return f"{v:+.{digits}f}" if v is not None and np.isfinite(v) else "n/a"


def _mean_std(mean, std, n=None) -> tuple[str, ...]:
    """('+0.480 ± 0.042', '[+0.415, +0.545]') or ('+0.556 (1 seed)',)."""
    if mean is None or not np.isfinite(mean):
        return ("n/a",)
    if n is not None and int(n) == 1:
        return (f"{mean:+.3f} (1 seed)",)
    return (f"{mean:+.3f} ± {std:.3f}",)


def _duration(s) -> str:
    if s is None or not np.isfinite(s):
        return "n/a"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _images(n) -> str:
    if n is None or not np.isfinite(n):
        return "n/a"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e4 else f"{int(n)}"


def job_warnings(result: dict) -> list[str]:
    """``extra["warnings"]`` of a job's result.json: plain strings a method recorded (fallbacks it
    took, codes that stayed uniform...). A missing key is no warnings; anything else is shown as text."""
    w = (result.get("extra") or {}).get("warnings") if isinstance(result.get("extra"), dict) else None
    if w is None:
        return []
    if isinstance(w, (list, tuple)):
        return [str(x) for x in w]
    return [str(w)]


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
    """method x headline metric: mean ± std [CI] over seeds (two lines per cell), primary ground-truth column."""
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
                row[label] = (f"{_fmt(r['mean'])} ± {_fmt(r['std'])}", f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]")
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
    """One row per job: status (failed/collapsed/pending shown as such), cost, tau with an
    arch-bootstrap CI, the method's warnings."""
    rows = []
    est = run.estimates
    by_job = ({key: g for key, g in est[est["subset"] == "scored"].groupby(["method", "seed"], sort=False)}
              if len(est) and run.gt_map is not None else {})
    for name, r in sorted(run.results.items(), key=lambda kv: (run.methods.index(kv[1]["method"])
                                                               if kv[1]["method"] in run.methods else 99,
                                                               kv[1]["seed"])):
        c = r.get("counters") or {}
        tau = ci = "n/a"
        if r.get("status") == "done" and run.gt_map is not None:
            e = by_job.get((r["method"], r["seed"]), est.iloc[:0])
            if len(e) >= 2:
                pred = e["score"].to_numpy(dtype=float)
                truth = e["arch"].map(run.gt_map).to_numpy(dtype=float)
                tau = _fmt(M.kendall_tau(pred, truth))
                lo, hi = M.bootstrap_ci(M.kendall_tau, pred, truth, n_resamples=tau_resamples(len(e)))
                ci = f"[{_fmt(lo)}, {_fmt(hi)}]"
        rows.append({"job": name, "status": r.get("status", "?"), "reason": r.get("reason") or "",
                     "kendall_tau": tau, "tau 95% CI (archs)": ci,
                     "wall_s": _fmt(r.get("wall_s"), 1), "cpu_s": _fmt(r.get("cpu_s"), 1),
                     "fit_s": _fmt(r.get("fit_s"), 1), "score_s": _fmt(r.get("score_s"), 1),
                     "images seen": c.get("images_seen", ""),
                     "fwd/img": _fmt(c.get("forward_passes_per_image"), 2),
                     "bwd/img": _fmt(c.get("backward_passes_per_image"), 2),
                     "warnings": "; ".join(job_warnings(r))})
    return pd.DataFrame(rows)


def tau_resamples(n_archs: int) -> int:
    """Bootstrap resamples for one job's tau CI: 200, fewer above 1,000 architectures (at least 20;
    the interval is narrow there anyway), so a 15,625-architecture run stays fast."""
    return int(max(TAU_BOOTSTRAP_MIN, min(TAU_BOOTSTRAP_RESAMPLES, TAU_BOOTSTRAP_WORK // max(n_archs, 1))))


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


# --- the document's values: tables of text for the templates ----------------------------
@dataclass(frozen=True)
class Cell:
    """One table cell: its text lines (joined by line breaks), the td class ("num": right-aligned
    digits, "wrap": long text that may wrap between words; short cells never wrap) and an optional
    span class for the text (e.g. a verdict's colour)."""

    lines: tuple[str, ...]
    cls: str = ""
    style: str = ""


@dataclass(frozen=True)
class Row:
    cells: tuple[Cell, ...]
    cls: str = ""


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[Row, ...]
    empty: str = ""

    def cell_texts(self) -> list[tuple[str, ...]]:
        return [c.lines for r in self.rows for c in r.cells]


_NUMERIC = re.compile(r"^[+\-−]?(\d[\d,]*(\.\d+)?|\.\d+)(e[+\-]?\d+)?\s*(%|s|min|h|M|k)?$")


def cell(value, style: str = "") -> Cell:
    """A table value as a Cell: a tuple/list is several lines, floats get 3 decimals."""
    lines = tuple(_fmt(v) for v in value) if isinstance(value, (tuple, list)) else (_fmt(value),)
    longest = max((len(s) for s in lines), default=0)
    cls = "wrap" if longest > WRAP_AT else ("num" if all(_NUMERIC.match(s.strip()) for s in lines if s) and
                                             any(lines) else "")
    return Cell(lines, cls, style)


def table(df: pd.DataFrame, row_class=None, empty: str = "") -> Table:
    """A DataFrame as a Table (the template escapes every header and cell)."""
    if df is None or not len(df):
        return Table(tuple(str(c) for c in (df.columns if df is not None else ())), (), empty)
    rows = []
    for _, r in df.iterrows():
        rows.append(Row(tuple(cell(v) for v in r.values), row_class(r) if row_class else ""))
    return Table(tuple(str(c) for c in df.columns), tuple(rows), empty)


# --- figures ----------------------------------------------------------------------------
@dataclass
class Figure:
    section: str
    name: str
    caption: str
    png: bytes


class _Figures:
    """Saves each figure as PNG + SVG under figures/ and keeps the PNG bytes for the document."""

    def __init__(self, fig_dir: Path, notes: list[str]):
        self.fig_dir, self.notes = fig_dir, notes
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
            # each savefig redraws the figure (the costly part): PNG once, reused for the document;
            # layouts are fixed by tight_layout in plots.py, so no bbox_inches="tight" double draw
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=P.PNG_DPI)
            self.fig_dir.mkdir(parents=True, exist_ok=True)
            (self.fig_dir / f"{name}.png").write_bytes(buf.getvalue())
            fig.savefig(self.fig_dir / f"{name}.svg")
            self.items.append(Figure(section, name, caption, buf.getvalue()))
        finally:
            plt.close(fig)

    def view(self, embed: bool) -> dict[str, list[dict]]:
        """section -> [{name, src, caption}], src a data: URI or figures/<name>.png."""
        out: dict[str, list[dict]] = {s: [] for s, _ in SECTIONS}
        for f in self.items:
            src = (f"data:image/png;base64,{base64.b64encode(f.png).decode('ascii')}" if embed
                   else f"figures/{f.name}.png")
            out.setdefault(f.section, []).append({"name": f.name, "src": src, "caption": f.caption})
        return out


# --- page 1: the verdict ------------------------------------------------------------------
VERDICT_TEXT = ("One row per method, against {gt}. Kendall tau: mean ± std over seeds [bootstrap 95% CI]. "
                "vs SPOS / vs params: the Kendall-tau difference (this method minus the baseline) with its paired "
                "hierarchical-bootstrap 95% interval (seeds, then the same architectures within each seed); "
                "'better' / 'worse' need the interval to exclude 0, the same sign on every seed and at least 3 "
                "seeds, otherwise the two are not distinguishable at this budget. " + MULTIPLE_COMPARISONS_NOTE +
                " Fidelity curve: tau on the curve's architecture subset at its last point (the final scores) "
                "and the point before it. Cost: mean wall time per finished job; path passes per image = "
                "forward + backward passes through sampled paths per training image.")


def paired_lookup(paired: pd.DataFrame, method: str, base: str) -> dict | None:
    """The paired row of ``method`` vs ``base`` from paired.csv (either order), oriented as
    method - base: diff, ci, per-seed signs flipped when the file has base - method."""
    if not len(paired):
        return None
    for a, b, sign in ((method, base, 1.0), (base, method, -1.0)):
        hit = paired[(paired["a"] == a) & (paired["b"] == b)]
        if len(hit):
            r = hit.iloc[0]
            lo, hi = float(r["ci_low"]), float(r["ci_high"])
            if sign < 0:
                lo, hi = -hi, -lo
            v = str(r["verdict"])
            if v.startswith(f"{method} > {base} ("):
                word = "better"
            elif v.startswith(f"{base} > {method} ("):
                word = "worse"
            elif "seeds)" in v:
                word = "not distinguishable" + v[len("not distinguishable"):]
            else:
                word = "not distinguishable"
            return {"diff": sign * float(r["diff"]), "ci_low": lo, "ci_high": hi, "word": word,
                    "n_seeds": int(r["n_seeds"]), "verdict": v}
    return None


def _versus_cell(paired: pd.DataFrame, method: str, base: str, present: bool) -> Cell:
    if method == base:
        return Cell(("baseline",), "", "v-same")
    p = paired_lookup(paired, method, base) if present else None
    if p is None:
        return Cell(("n/a",))
    ci = f" [{p['ci_low']:+.3f}, {p['ci_high']:+.3f}]" if np.isfinite(p["ci_low"]) else ""
    style = {"better": "v-better", "worse": "v-worse"}.get(p["word"], "v-same")
    return Cell((f"{p['diff']:+.3f}{ci}", p["word"]), "", style)


def curve_end(curves: pd.DataFrame, method: str) -> tuple[str, ...] | None:
    """Where a method's fidelity curve ends: tau (mean over seeds) at its last point and the point
    before, with the images seen there."""
    if not len(curves):
        return None
    g = curves[(curves["method"] == method) & (curves["metric"] == "kendall_tau") & (curves["k"] == "")]
    if not len(g):
        return None
    by = g.groupby("point", sort=True).agg(value=("value", "mean"), images=("images_seen", "mean"),
                                           share=("fraction", "mean"))
    last = by.iloc[-1]
    lines = [f"{last['value']:+.3f} at {_images(last['images'])} img"]
    if len(by) > 1:
        prev = by.iloc[-2]
        lines.append(f"before: {prev['value']:+.3f} at {100 * prev['share']:.0f} %")
    return tuple(lines)


def _status_counts(results: list[dict]) -> tuple[str, ...]:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
    done = counts.pop("done", 0)
    lines = [f"{done}/{len(results)} done"]
    if counts:
        lines.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    n_warn = sum(len(job_warnings(r)) for r in results)
    if n_warn:
        lines.append(f"{n_warn} warning{'s' if n_warn > 1 else ''}")
    return tuple(lines)


def verdict_table(run: RunData, paired: pd.DataFrame, curves: pd.DataFrame) -> Table:
    """Page 1: one row per method (see VERDICT_TEXT)."""
    s = run.summary
    bases = [b for b in VERDICT_BASES if b in run.methods]
    columns = ["method", "Kendall tau (mean ± std [95% CI])",
               *[f"vs {'SPOS' if b == 'spos' else b}: Δ tau [95% CI]" for b in bases],
               "fidelity curve ends", "cost per job (wall; path passes / image)", "jobs"]
    rows = []
    for m in run.methods:
        jobs = [r for r in run.results.values() if r["method"] == m]
        sel = s[(s["method"] == m) & (s["gt"] == run.gt_column) & (s["metric"] == "kendall_tau") & (s["k"] == "")
                & (s["subset"] == "scored")] if len(s) else s
        if len(sel):
            r = sel.iloc[0]
            tau = _mean_std(r["mean"], r["std"], r["n_seeds"])
            if int(r["n_seeds"]) > 1:
                tau = tau + (f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]",)
        else:
            tau = ("n/a",)
        done = [r for r in jobs if r.get("status") == "done"]
        wall = np.array([r.get("wall_s", np.nan) for r in done], dtype=float)
        fwd = np.array([(r.get("counters") or {}).get("forward_passes_per_image", np.nan) for r in done], dtype=float)
        bwd = np.array([(r.get("counters") or {}).get("backward_passes_per_image", np.nan) for r in done], dtype=float)
        if done:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                w, f, b = np.nanmean(wall), np.nanmean(fwd), np.nanmean(bwd)
            passes = ("no training" if m in run.reference or (f == 0 and b == 0)
                      else f"{_fmt(f, 2)} fwd + {_fmt(b, 2)} bwd")
            cost = (_duration(w), passes)
        else:
            cost = ("n/a",)
        end = curve_end(curves, m) or (("no training",) if m in run.reference else ("no curve",))
        cells = [Cell((m,) + (("reference",) if m in run.reference else ())),
                 Cell(tau, "num"),
                 *[_versus_cell(paired, m, b, True) for b in bases],
                 Cell(end), Cell(cost), Cell(_status_counts(jobs))]
        status = {r.get("status") for r in jobs}
        cls = ("failed" if status & {"failed", "collapsed"} and not done else
               "pending" if not done else "reference" if m in run.reference else "")
        rows.append(Row(tuple(cells), cls))
    return Table(tuple(columns), tuple(rows), "No methods in this run.")


def run_facts(run: RunData) -> Table:
    """The verdict page's header facts: what was run, against what, and how far it got."""
    m = run.manifest
    cfg, b = m.get("config", {}), m.get("budget", {})
    ceiling = gt_ceiling(run)
    jobs = list(run.results.values())
    done = sum(r.get("status") == "done" for r in jobs)
    overrides = ", ".join(f"{k}={v}" for k, v in (cfg.get("budget_overrides") or {}).items())
    facts = [
        ("suite / space / dataset", f"{m.get('suite')} / {m.get('space')} / {cfg.get('dataset', 'cifar10')}"),
        ("budget", f"{b.get('name')}: {b.get('note', '')}" + (f" (--set {overrides})" if overrides else "")),
        ("ground truth", f"{run.gt_column} ({m.get('gt_source')})"),
        ("GT ceiling", ceiling["text"] if ceiling else
         f"not measured: {run.gt_column or 'this ground truth'} has no independent GT seeds to compare, so the "
         "limit is tau = 1"),
        ("scored", f"{m.get('n_archs')} architectures; seeds {', '.join(map(str, m.get('seeds', [])))}"),
        ("run", f"{m.get('status')}; {done}/{len(jobs)} jobs done; harness {m.get('harness_version')}, commit "
                f"{m.get('git_commit')}"),
    ]
    return table(pd.DataFrame(facts, columns=["field", "value"]))


def _job_problems(run: RunData) -> tuple[str, str]:
    bad = [(n, r) for n, r in run.results.items() if r.get("status") not in ("done", "pending")]
    pending = [n for n, r in run.results.items() if r.get("status") == "pending"]
    problems = (f"{len(bad)} job(s) did not finish: " + ", ".join(f"{n} ({r.get('status')}: {r.get('reason')})"
                                                                 for n, r in bad)) if bad else ""
    pend = (f"{len(pending)} job(s) pending (the run is unfinished; resume it with the same --out): "
            + ", ".join(pending)) if pending else ""
    return problems, pend


def warning_lines(run: RunData) -> list[str]:
    """'method s<seed>: text' for every warning a job recorded, in the run's method order."""
    out = []
    order = {m: i for i, m in enumerate(run.methods)}
    for _, r in sorted(run.results.items(), key=lambda kv: (order.get(kv[1]["method"], 99), kv[1]["seed"])):
        out += [f"{r['method']} s{r['seed']}: {w}" for w in job_warnings(r)]
    return out


def per_seed_tau_table(run: RunData) -> pd.DataFrame:
    """method x seed Kendall tau (or the job's status), with mean ± std and the range over seeds."""
    seeds = list(run.manifest.get("seeds") or sorted({r["seed"] for r in run.results.values()}))
    taus = per_seed(run)
    rows = []
    for m in run.methods:
        row = {"method": m}
        vals = []
        for s in seeds:
            v = taus[(taus["method"] == m) & (taus["seed"] == s)]["value"].to_numpy(dtype=float)
            status = next((r.get("status") for r in run.results.values() if r["method"] == m and r["seed"] == s), "")
            if len(v) and np.isfinite(v[0]):
                row[f"seed {s}"] = f"{v[0]:+.3f}"
                vals.append(v[0])
            else:
                row[f"seed {s}"] = status or "n/a"
        vals = np.array(vals)
        row["mean ± std"] = ("n/a" if not vals.size else f"{vals.mean():+.3f}" if vals.size == 1
                             else f"{vals.mean():+.3f} ± {vals.std(ddof=1):.3f}")
        row["max - min"] = f"{vals.max() - vals.min():.3f}" if vals.size > 1 else "n/a"
        rows.append(row)
    return pd.DataFrame(rows)


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
def build_figures(run: RunData, figs: _Figures) -> None:
    present = set(run.metrics["method"].unique()) if "method" in run.metrics else set()
    methods = [m for m in run.methods if m in present] or run.methods
    taus = per_seed(run)
    figs.add("ranking", "tau_per_method", f"Kendall tau per method against {run.gt_column}: mean ± std over "
             "seeds (dots: seeds); reference rows as dashed lines.",
             lambda: P.tau_per_method(taus, methods, run.reference, gt=run.gt_column,
                                      ceiling=(c["tau"] if (c := gt_ceiling(run)) else None)))
    figs.add("stability", "tau_boxplot", "Kendall tau over seeds per method (SE-NAS Fig. 8 style).",
             lambda: P.tau_boxplot(taus, methods, gt=run.gt_column))
    est = run.estimates[run.estimates["subset"] == "scored"] if len(run.estimates) else run.estimates
    if run.gt_map is not None and len(est):
        scored = set(est["method"].unique())
        score_methods = [m for m in methods if m in scored]
        tau_stats = {m: (float(np.nanmean(v)), float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else 0.0)
                     for m, v in ((m, taus.loc[taus["method"] == m, "value"].to_numpy(dtype=float))
                                  for m in score_methods) if np.isfinite(v).any()}
        figs.add("stability", "ranking_stability", f"Ranking stability: {P.STABILITY_ARCHS} fixed architectures at "
                 "evenly spaced ground-truth quantiles, ordered by ground truth; boxes show each one's predicted "
                 "rank among them over seeds; dashed line = perfect ranking (SE-NAS Fig. 1 style).",
                 lambda: P.ranking_stability(est, run.gt_map, score_methods))
        shown = max((len(est[est["method"] == m]) for m in score_methods), default=0)
        thin = (f" Panels with more than {P.SCATTER_MAX_POINTS:,} points draw a fixed random {P.SCATTER_MAX_POINTS:,} "
                "of them (tau from all; exact numbers in the tables)." if shown > P.SCATTER_MAX_POINTS else "")
        figs.add("ranking", "score_vs_gt", "Predicted score against ground truth, all seeds; tau mean ± std in "
                 f"each title.{thin}", lambda: P.score_vs_gt(est, run.gt_map, score_methods, tau_stats,
                                                              run.gt_column))
        topk = P.topk_table(est, run.gt_map, score_methods)
        write_csv(run.run_dir / "figures" / "topk_curves.csv", topk)
        figs.add("ranking", "topk_curves", "High-low tau and precision@k as k grows, recomputed from "
                 "estimates.csv (K-shot NAS Fig. 5 style); band = std over seeds, dashed = reference rows.",
                 lambda: P.topk_curves(topk, score_methods, run.reference))
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


def _artefact_table(title: str, df: pd.DataFrame) -> dict:
    """An artefact's table, at most ARTEFACT_MAX_COLUMNS wide and ARTEFACT_MAX_ROWS long (the file
    in the job folder has the rest): a page-wide table never clips a cell."""
    notes = []
    if df.shape[1] > ARTEFACT_MAX_COLUMNS:
        notes.append(f"first {ARTEFACT_MAX_COLUMNS} of {df.shape[1]} columns")
        df = df.iloc[:, :ARTEFACT_MAX_COLUMNS]
    if len(df) > ARTEFACT_MAX_ROWS:
        notes.append(f"first {ARTEFACT_MAX_ROWS} of {len(df)} rows")
        df = df.head(ARTEFACT_MAX_ROWS)
    return {"title": title, "note": ("; ".join(notes) + "; the file in the job folder has all of it.") if notes
            else "", "table": table(df)}


def build_artefacts(run: RunData, figs: _Figures) -> list[dict]:
    """Render files methods left in their job folders: codes -> histogram, alpha history -> lines,
    JSON history -> table, any other CSV -> its first rows."""
    tables = []
    for (m, fname), by_seed in sorted(_artefacts(run).items()):
        seeds = sorted(by_seed)
        title = f"{m} / {fname}"
        lower = fname.lower()
        try:
            if fname.endswith(".json"):
                tables.append(_artefact_table(f"{title} (seed {seeds[0]})",
                                              _json_table(json.loads(by_seed[seeds[0]].read_text()))))
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
                tables.append(_artefact_table(f"{title} (seed {seeds[0]})", frames[0].drop(columns="seed")))
        except Exception as exc:
            run.notes.append(f"artefact {title} could not be rendered: {type(exc).__name__}: {exc}")
    return tables


# --- rendering ----------------------------------------------------------------------------
_ENV: Environment | None = None


def environment() -> Environment:
    """The templates' Jinja2 environment: package data in harness/templates, autoescape on for
    every template (HTML and the stylesheet it includes), undefined names are errors."""
    global _ENV
    if _ENV is None:
        _ENV = Environment(loader=PackageLoader("harness", "templates"),
                           autoescape=select_autoescape(default=True, default_for_string=True),
                           undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return _ENV


def render(template: str, **context) -> str:
    return environment().get_template(template).render(version=harness.__version__, **context)


def _sections(spec) -> dict:
    return {"sections": [{"id": i, "title": t} for i, t in spec], "section_titles": dict(spec)}


def _pdf_engine(pdf: bool | None, notes: list[str]) -> bool:
    """Whether to print the PDF: pdf=True requires the engine (PdfEngineMissing, exit 2, before any
    work), None prints when it is installed (else a note), False never."""
    if pdf is False:
        return False
    try:
        find_chromium()
        return True
    except PdfEngineMissing as exc:
        if pdf:
            raise
        notes.append(f"PDF not written: {exc}")
        return False


def _stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def write_report(run_dir: Path, embed_figures: bool = True, pdf: bool | None = None) -> Path:
    """Write ``figures/``, ``report.html`` and (see ``pdf``) ``report.pdf`` for a run folder;
    returns the HTML path. ``embed_figures=False`` links ``figures/*.png`` instead of embedding them.
    ``pdf``: True = the PDF is required (no Chromium: PdfEngineMissing, one line, exit 2), None =
    printed when Chromium is installed (else the report's notes say why not), False = HTML only."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    want_pdf = _pdf_engine(pdf, run.notes)
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    m = run.manifest
    title = f"supernet-harness report: {m.get('suite')} / {m.get('budget', {}).get('name')}"
    subtitle = (f"run {run_dir.name} · harness {m.get('harness_version')} · commit {m.get('git_commit')} · "
                f"seeds {', '.join(map(str, m.get('seeds', [])))} · generated {_stamp()}")
    curves = load_curves(run)
    paired_raw = read_table(run_dir / "paired.csv", TABLE_COLUMNS, dtype={"per_seed": str})
    if len(paired_raw):
        paired_raw = paired_raw[paired_raw["gt"] == run.gt_column]
    elif any(r.get("status") == "done" for r in run.results.values()):
        run.notes.append("no paired.csv in the run folder (written by the run's aggregation since issue 15): "
                         "the verdict table has no paired differences")
    figs = _Figures(fig_dir, run.notes)
    build_figures(run, figs)
    art_tables = build_artefacts(run, figs)
    problems, pending = _job_problems(run)
    ceiling = gt_ceiling(run)
    status_cls = lambda row: row["status"] if row.get("status") in ("failed", "collapsed", "pending") else ""  # noqa: E731
    manifest_json = json.dumps(m, indent=2, default=str)
    context = dict(
        title=title, subtitle=subtitle, gt_column=run.gt_column, **_sections(SECTIONS),
        facts=run_facts(run), ceiling_low=ceiling["text"] if ceiling and ceiling["low"] else "",
        verdict=verdict_table(run, paired_raw, curves), verdict_text=VERDICT_TEXT.format(gt=run.gt_column),
        job_problems=problems, pending_text=pending, warnings=warning_lines(run),
        summary=table(summary_table(run)), paired=table(paired_view(run)), paired_text=PAIRED_TEXT,
        by_gt=table(tau_by_gt_table(run)), fidelity_text=_fidelity_text(m),
        fidelity=table(fidelity_table(run, curves)), curve_cost=table(curve_cost_table(run)),
        per_seed_tau=table(per_seed_tau_table(run)),
        jobs=table(jobs_table(run), status_cls),
        jobs_text=(f"The tau CI resamples architectures ({TAU_BOOTSTRAP_RESAMPLES} bootstrap resamples; fewer, at "
                   f"least {TAU_BOOTSTRAP_MIN}, above {TAU_BOOTSTRAP_WORK // TAU_BOOTSTRAP_RESAMPLES:,} "
                   "architectures, where the interval is narrow). Warnings are what the method recorded in "
                   "result.json (extra.warnings)."),
        overhead=table(overhead_table(run)), artefact_tables=art_tables,
        metrics_all=table(all_metrics_table(run)), manifest_facts=table(manifest_facts(run), empty=""),
        manifest_json=manifest_json,
        manifest_lines=manifest_json.count("\n") + 1, notes=run.notes,
        figures=figs.view(embed_figures))
    out = run_dir / "report.html"
    atomic_write_text(out, render("report.html.j2", **context))
    if want_pdf:
        html_to_pdf(out, run_dir / "report.pdf")
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


def _flip_per_seed(text: str) -> str:
    return "/".join(("-" + p[1:] if p.startswith("+") else "+" + p[1:] if p.startswith("-") else p)
                    for p in str(text).split("/")) if isinstance(text, str) and text else ""


def compare_paired_view(paired: pd.DataFrame, run_a: RunData, run_b: RunData) -> tuple[pd.DataFrame, Table]:
    """:func:`harness.check.paired_compare`'s table (diff = A - B) as B - A, the direction of the
    rest of the comparison, with both runs' tau and a verdict word per method."""
    rows, view = [], []
    for r in paired.itertuples():
        method = str(r.a)[:-4] if str(r.a).endswith(" (A)") else str(r.a)
        lo, hi = (-float(r.ci_high), -float(r.ci_low)) if np.isfinite(r.ci_low) else (math.nan, math.nan)
        v = str(r.verdict)
        word = ("B better" if v.startswith(f"{r.b} > {r.a} (") else "B worse" if v.startswith(f"{r.a} > {r.b} (")
                else "not distinguishable" + (v[len("not distinguishable"):] if "seeds)" in v else ""))
        taus = [(run.summary[(run.summary["method"] == method) & (run.summary["gt"] == r.gt)
                             & (run.summary["metric"] == "kendall_tau") & (run.summary["subset"] == "scored")
                             & (run.summary["k"] == "")]) for run in (run_a, run_b)]
        ta, tb = (_mean_std(t.iloc[0]["mean"], t.iloc[0]["std"], t.iloc[0]["n_seeds"]) if len(t) else ("n/a",)
                  for t in taus)
        ci = f" [{lo:+.3f}, {hi:+.3f}]" if np.isfinite(lo) else ""
        rows.append({"method": method, "gt": r.gt, "shared seeds": int(r.n_seeds), "shared archs": int(r.n_archs),
                     "diff_b_minus_a": -float(r.diff), "ci_low": lo, "ci_high": hi, "verdict": word,
                     "per_seed": _flip_per_seed(r.per_seed)})
        style = {"B better": "v-better", "B worse": "v-worse"}.get(word, "v-same")
        view.append(Row((Cell((method,)), Cell(ta, "num"), Cell(tb, "num"),
                         Cell((f"{-float(r.diff):+.3f}{ci}",), "num"), Cell((word,), "", style),
                         Cell((_flip_per_seed(r.per_seed),)), Cell((f"{int(r.n_seeds)} / {int(r.n_archs)}",), "num"))))
    columns = ("method", "tau A (all its seeds)", "tau B (all its seeds)", "Δ tau B - A [95% CI], shared seeds",
               "paired verdict", "per seed (B - A)", "shared seeds / archs")
    return pd.DataFrame(rows), Table(columns, tuple(view), "No method has scored estimates in both runs.")


def compare_gates(run_a: Path, run_b: Path, thresholds: Path) -> pd.DataFrame:
    """Every `harness check` gate of ``thresholds`` evaluated on both runs (the gate logic is
    :func:`harness.check.run_checks`; ``max_drop`` rules take run A as the baseline of both, so A
    passes them by construction and B is judged against A)."""
    ga = C.run_checks(run_a, thresholds, baseline=run_a)
    gb = C.run_checks(run_b, thresholds, baseline=run_a)
    keys = ["method", "metric", "gt", "rule"]
    for g in (ga, gb):
        g["n"] = g.groupby(keys).cumcount()
    df = ga.merge(gb, on=keys + ["n"], how="outer", suffixes=("_a", "_b"))
    df["changed"] = df["result_a"] != df["result_b"]
    return df.drop(columns="n")


def _gate_view(df: pd.DataFrame) -> pd.DataFrame:
    def val(v):
        return f"{v:+.4f}" if isinstance(v, float) and np.isfinite(v) else ("n/a" if isinstance(v, float) else str(v))

    return pd.DataFrame({
        "method": df["method"], "metric": df["metric"], "rule": df["rule"],
        "threshold": [str(t) if not isinstance(t, float) else f"{t:+.4f}" for t in df["threshold_b"].fillna("")],
        "value A": [val(v) for v in df["value_a"]], "A": df["result_a"].fillna("n/a"),
        "value B": [val(v) for v in df["value_b"]], "B": df["result_b"].fillna("n/a"),
        "why": [" ".join(x for x in (str(a or ""), str(b or "")) if x and x != "nan") for a, b in
                zip(df["why_a"], df["why_b"])]})


def compare_runs(run_a: Path, run_b: Path, out: str | Path | None = None, thresholds: str | Path | None = None,
                 pdf: bool | None = None) -> int:
    """``harness compare A B [--thresholds FILE]``: writes compare.csv, compare.html (and compare.pdf,
    as :func:`write_report`'s ``pdf`` says), prints the flagged rows, the paired test per method and,
    with thresholds, the gates that pass in one run and fail in the other."""
    ra, rb = load_run(Path(run_a)), load_run(Path(run_b))
    sa, sb = ra.manifest.get("suite"), rb.manifest.get("suite")
    if sa != sb:
        raise ConfigError(f"cannot compare runs of different suites ({sa} vs {sb}); compare two runs of one suite")
    notes: list[str] = []
    want_pdf = _pdf_engine(pdf, notes)
    gates = compare_gates(Path(run_a), Path(run_b), Path(thresholds)) if thresholds else None
    out_dir = Path(out) if out else Path(run_b) / f"compare-{Path(run_a).name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    df = compare_table(ra, rb)
    write_csv(out_dir / "compare.csv", df)
    paired, paired_notes = C.paired_compare(ra, rb)
    paired_rows, paired_tbl = compare_paired_view(paired, ra, rb)
    write_csv(out_dir / "compare_paired.csv", paired_rows)
    flagged = df[df["flag"].isin(["better", "WORSE"])]

    def describe(path, r):
        mm = r.manifest
        return (f"{Path(path)} (harness {mm.get('harness_version')}, commit {mm.get('git_commit')}, budget "
                f"{mm.get('budget', {}).get('name')}, seeds {', '.join(map(str, mm.get('seeds', [])))})")

    facts = pd.DataFrame([("run A", describe(run_a, ra)), ("run B", describe(run_b, rb)),
                          ("suite", sa), ("ground truth", f"A: {ra.gt_column}; B: {rb.gt_column}"),
                          ("flagged", f"{len(flagged)} of {len(df)} metric rows beyond the seed spread"),
                          *((("gates", f"{int(gates['changed'].sum())} of {len(gates)} gates differ "
                                       f"({Path(thresholds)})"),) if gates is not None else ()),
                          *((("notes", "; ".join(notes)),) if notes else ())], columns=["field", "value"])
    show = df.copy()
    for c in ("mean_a", "std_a", "mean_b", "std_b", "diff", "spread"):
        show[c] = show[c].map(lambda v: _fmt(float(v)))
    show["n_seeds_a"] = show["n_seeds_a"].map(lambda v: "" if pd.isna(v) else str(int(v)))
    show["n_seeds_b"] = show["n_seeds_b"].map(lambda v: "" if pd.isna(v) else str(int(v)))
    cls = lambda row: "failed" if row["flag"] == "WORSE" else ""  # noqa: E731
    gate_view = _gate_view(gates) if gates is not None else None
    context = dict(
        title=f"supernet-harness compare: {sa}",
        subtitle=f"A = {Path(run_a).name} · B = {Path(run_b).name} · generated {_stamp()}",
        **_sections(COMPARE_SECTIONS), facts=table(facts),
        paired=paired_tbl, paired_notes=paired_notes,
        paired_text=("The same paired hierarchical bootstrap as the run report's, per method: run A's scores "
                     "against run B's on the seeds and architectures both runs scored (matched by architecture). "
                     "Δ = B - A; 'B better' / 'B worse' need the 95% interval to exclude 0, the same sign on every "
                     "shared seed and at least 3 shared seeds. " + MULTIPLE_COMPARISONS_NOTE),
        gates=table(gate_view, lambda r: "failed" if r["A"] != r["B"] else "") if gate_view is not None else None,
        gates_changed=(table(gate_view[gates["changed"].to_numpy()], lambda r: "failed",
                             empty="None: every gate has the same result in both runs.")
                       if gate_view is not None else None),
        gates_text=("Each gate of the thresholds file evaluated by harness check's own logic on each run; max_drop "
                    "rules use run A as the baseline (so A passes them and B is judged against A)."
                    if gates is not None else ""),
        rule_text="flag = |mean_B - mean_A| > max(std_A, std_B) over seeds (no flag with one seed on a side).",
        flagged=table(show[show["flag"].isin(["better", "WORSE"])], cls, empty="No metric moved beyond the seed spread."),
        all_rows=table(show, cls))
    atomic_write_text(out_dir / "compare.html", render("compare.html.j2", **context))
    if want_pdf:
        html_to_pdf(out_dir / "compare.html", out_dir / "compare.pdf")
    print(f"compare: {len(flagged)} of {len(df)} metric rows changed by more than the seed-to-seed spread")
    if len(flagged):
        cols = ["method", "gt", "subset", "metric", "k", "mean_a", "mean_b", "diff", "spread", "flag"]
        print(show.loc[flagged.index, cols].to_string(index=False))
    print(f"\npaired test, same method in run A vs run B (Kendall tau, ground truth {ra.gt_column}):")
    if len(paired):
        print(C.format_paired(paired))
    for n in paired_notes:
        print(f"  {n}")
    if gates is not None:
        changed = gates[gates["changed"]]
        print(f"\ngates ({thresholds}): {len(changed)} of {len(gates)} pass in one run and fail in the other")
        if len(changed):
            print(gate_view[gates["changed"].to_numpy()].to_string(index=False))
    for n in notes:
        print(n)
    print(f"written: {out_dir / 'compare.html'}" + (f", {out_dir / 'compare.pdf'}" if want_pdf else ""))
    return 0
