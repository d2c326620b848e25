"""Figures of a run: ranking quality, stability, top-k curves, drift and feature-cosine diagnostics.

Every function takes plain data (DataFrames, dicts of arrays) and returns a matplotlib Figure; the
report saves each one as PNG and SVG under ``run_dir/figures/`` and embeds the PNG in
``report.html`` (which Chromium prints to ``report.pdf``). Matplotlib runs headless (Agg): reports are written on CI
machines without a display.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from scipy import stats  # noqa: E402

from harness import metrics as M  # noqa: E402

TOPK_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7)
STABILITY_ARCHS = 30
PNG_DPI = 100
# score-vs-GT panels draw at most this many points (a fixed random subset, same for every run of
# the same size): 5 seeds x 15,625 architectures would otherwise be 78k dots per panel, slow to
# draw and no more readable; tau in the panel title and every table use all points.
SCATTER_MAX_POINTS = 4000

sns.set_theme(style="whitegrid", context="paper")


def save(fig: plt.Figure, fig_dir: Path, name: str) -> dict[str, Path]:
    """Write ``name.png`` and ``name.svg``; returns their paths."""
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for ext in ("png", "svg"):
        path = fig_dir / f"{name}.{ext}"
        fig.savefig(path, dpi=PNG_DPI if ext == "png" else None)
        out[ext] = path
    return out


def _grid(n: int, ncols: int = 4, size: tuple[float, float] = (3.6, 3.0)) -> tuple[plt.Figure, np.ndarray]:
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def _palette(methods: Sequence[str]) -> dict[str, tuple]:
    return dict(zip(methods, sns.color_palette("tab10", max(len(methods), 1))))


# --- ranking quality ------------------------------------------------------------------------
def tau_per_method(per_seed: pd.DataFrame, methods: Sequence[str], reference: Sequence[str],
                   metric: str = "kendall_tau", gt: str = "", ceiling: float | None = None) -> plt.Figure:
    """Mean +- std over seeds (points, with each seed as a dot); reference rows as horizontal lines.

    ``per_seed``: columns ``method, seed, value`` for one metric / gt column / subset. ``ceiling``:
    the ground truth's own tau between its seeds (probe suites), drawn as a dotted line: no
    estimator can be expected to rank better than the ground truth agrees with itself.
    """
    searched = [m for m in methods if m not in reference] or list(methods)
    refs = [m for m in methods if m in reference and m not in searched]
    colors = _palette(methods)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(searched) + 3), 3.6))
    for i, m in enumerate(searched):
        v = per_seed.loc[per_seed["method"] == m, "value"].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if v.size == 0:
            ax.text(i, 0, "no value\n(failed)", ha="center", va="center", fontsize=8, color="crimson")
            continue
        ax.scatter(np.full(v.size, i) + np.linspace(-0.08, 0.08, v.size), v, s=14, color=colors[m], alpha=0.6, zorder=3)
        sd = v.std(ddof=1) if v.size > 1 else 0.0
        ax.errorbar(i, v.mean(), yerr=sd, fmt="o", color=colors[m], markersize=8, capsize=6, lw=2, zorder=4)
    for m in refs:
        v = per_seed.loc[per_seed["method"] == m, "value"].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if v.size:
            ax.axhline(v.mean(), ls="--", lw=1.3, color=colors[m], label=f"{m} ({v.mean():+.2f})")
    if ceiling is not None and np.isfinite(ceiling):
        ax.axhline(ceiling, ls=":", lw=1.8, color="black", label=f"GT-seed ceiling ({ceiling:+.2f})")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(searched)), searched)
    ax.set_xlim(-0.7, len(searched) - 0.3)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per method (mean ± std over seeds)" + (f"\nground truth: {gt}" if gt else ""))
    if refs or (ceiling is not None and np.isfinite(ceiling)):
        ax.legend(title="reference rows" if refs else None, fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def tau_boxplot(per_seed: pd.DataFrame, methods: Sequence[str], metric: str = "kendall_tau",
                gt: str = "") -> plt.Figure:
    """Distribution over seeds per method (SE-NAS Fig. 8 style)."""
    df = per_seed[np.isfinite(per_seed["value"].astype(float))]
    fig, ax = plt.subplots(figsize=(max(4.5, 1.0 * len(methods) + 2), 3.6))
    order = [m for m in methods if m in set(df["method"])]
    if order:
        sns.boxplot(data=df, x="method", y="value", order=order, hue="method", hue_order=order,
                    palette=_palette(methods), legend=False, ax=ax, width=0.5, fliersize=0)
        sns.stripplot(data=df, x="method", y="value", order=order, color="black", size=4, ax=ax, jitter=0.08)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylabel(metric)
    ax.set_xlabel("")
    ax.set_title(f"{metric} over seeds" + (f" (gt: {gt})" if gt else ""))
    fig.tight_layout()
    return fig


def stability_archs(archs: Sequence[str], gt_values: np.ndarray, n: int = STABILITY_ARCHS) -> list[str]:
    """``n`` architectures at evenly spaced GT quantiles of the scored set (fixed per run)."""
    order = np.argsort(-np.asarray(gt_values, dtype=float), kind="stable")
    pick = np.unique(np.round(np.linspace(0, len(order) - 1, min(n, len(order)))).astype(int))
    return [archs[i] for i in order[pick]]


def ranking_stability(estimates: pd.DataFrame, gt_map: dict[str, float], methods: Sequence[str],
                      n: int = STABILITY_ARCHS) -> plt.Figure:
    """Predicted rank (among the fixed ``n``) over seeds vs GT rank (SE-NAS Fig. 1 style)."""
    archs = list(pd.unique(estimates["arch"]))
    fixed = stability_archs(archs, np.array([gt_map[a] for a in archs]), n)
    pos = {a: i + 1 for i, a in enumerate(fixed)}  # 1 = best by GT
    fig, axes = _grid(len(methods), ncols=3, size=(4.2, 3.4))
    few = estimates[estimates["arch"].isin(pos)]  # once: the rest only looks at these n architectures
    for ax, m in zip(axes.flat, methods):
        rows = []
        e = few[few["method"] == m]
        for seed, df in e.groupby("seed"):
            df = df.drop_duplicates("arch")
            if len(df) < 2:
                continue
            # rank 1 = highest score; ties get their average rank
            ranks = stats.rankdata(-df["score"].to_numpy(dtype=float), method="average")
            rows += [{"gt_rank": pos[a], "pred_rank": r, "seed": seed} for a, r in zip(df["arch"], ranks)]
        ax.set_title(m)
        if not rows:
            ax.text(0.5, 0.5, "no scores", transform=ax.transAxes, ha="center")
            continue
        d = pd.DataFrame(rows)
        sns.boxplot(data=d, x="gt_rank", y="pred_rank", order=list(range(1, len(fixed) + 1)), ax=ax,
                    color=_palette(methods)[m], width=0.7, fliersize=2, linewidth=0.8)
        ax.plot([0, len(fixed) - 1], [1, len(fixed)], ls="--", color="grey", lw=0.8)
        ax.set_xticks(range(0, len(fixed), 5), [str(i) for i in range(1, len(fixed) + 1, 5)])
        ax.set_xlabel("GT rank (1 = best)")
        ax.set_ylabel("predicted rank over seeds")
        ax.invert_yaxis()
    fig.suptitle(f"Ranking stability: {len(fixed)} fixed architectures ordered by ground truth")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def score_vs_gt(estimates: pd.DataFrame, gt_map: dict[str, float], methods: Sequence[str],
                taus: dict[str, tuple[float, float]], gt: str = "",
                max_points: int = SCATTER_MAX_POINTS) -> plt.Figure:
    """Scatter of predicted score against ground truth per method, all seeds, tau in the title;
    a panel with more than ``max_points`` points draws a fixed random subset of them."""
    fig, axes = _grid(len(methods), ncols=4, size=(3.6, 3.0))
    by_method = dict(tuple(estimates.groupby("method", sort=False)))
    for ax, m in zip(axes.flat, methods):
        e = by_method.get(m, estimates.iloc[:0])
        n_seeds = e["seed"].nunique()
        if len(e) > max_points:
            keep = np.sort(np.random.default_rng(0).choice(len(e), size=max_points, replace=False))
            e = e.iloc[keep]
        for seed, df in e.groupby("seed"):
            ax.scatter([gt_map[a] for a in df["arch"]], df["score"], s=5, alpha=0.45, label=f"s{seed}",
                       rasterized=True)  # keeps SVG/PDF small with 15k archs x seeds
        mean, sd = taus.get(m, (math.nan, math.nan))
        ax.set_title(f"{m}: τ = {mean:+.3f} ± {sd:.3f}" if np.isfinite(mean) else f"{m}: τ = n/a", fontsize=9)
        ax.set_xlabel(f"ground truth {gt}".strip(), fontsize=8)
        ax.set_ylabel("predicted score", fontsize=8)
        if n_seeds > 1:
            ax.legend(fontsize=6, markerscale=2)
    fig.tight_layout()
    return fig


def topk_table(estimates: pd.DataFrame, gt_map: dict[str, float], methods: Sequence[str],
               ks: Sequence[float] = TOPK_FRACTIONS) -> pd.DataFrame:
    """high_low_tau and precision_at_k per (method, seed, k), recomputed with harness.metrics."""
    rows = []
    for (m, seed), df in estimates.groupby(["method", "seed"], sort=False):
        if m not in methods:
            continue
        pred = df["score"].to_numpy(dtype=float)
        truth = df["arch"].map(gt_map).to_numpy(dtype=float)
        for k in ks:
            for name, fn in (("high_low_tau", M.high_low_tau), ("precision_at_k", M.precision_at_k)):
                rows.append({"method": m, "seed": seed, "k": k, "metric": name, "value": fn(pred, truth, k)})
    return pd.DataFrame(rows, columns=["method", "seed", "k", "metric", "value"])


def topk_curves(table: pd.DataFrame, methods: Sequence[str], reference: Sequence[str] = ()) -> plt.Figure:
    """high-low tau and precision@k as k grows (K-shot NAS Fig. 5 style); band = std over seeds."""
    colors = _palette(methods)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric in zip(axes, ("high_low_tau", "precision_at_k")):
        t = table[table["metric"] == metric]
        for m in methods:
            g = t[t["method"] == m].groupby("k")["value"]
            if not len(g):
                continue
            mean, sd = g.mean(), g.std(ddof=1).fillna(0.0)
            ls = "--" if m in reference else "-"
            ax.plot(mean.index, mean.values, ls, marker="o", ms=3, color=colors[m], label=m)
            ax.fill_between(mean.index, mean - sd, mean + sd, color=colors[m], alpha=0.15)
        ax.set_xscale("log")
        ax.set_xlabel("k (fraction of scored architectures)")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} vs k")
    axes[1].plot([min(TOPK_FRACTIONS), 1], [min(TOPK_FRACTIONS), 1], ":", color="grey", lw=0.8, label="chance")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


# --- ranking fidelity over training -----------------------------------------------------------
FIDELITY_PANELS = (("kendall_tau", ""), ("topk_kendall_tau", "0.1"))


def fidelity_curves(curves: pd.DataFrame, methods: Sequence[str], reference: dict[str, float] | None = None,
                    ceiling: float | None = None, gt: str = "") -> plt.Figure:
    """tau (and top-10 % tau) against images seen, log x; one line per method (mean over seeds at
    each point), band = min..max over seeds; reference rows (no training) as horizontal lines.

    ``curves``: rows of ``curves.csv`` for one GT column (``k`` as a label string); ``reference``:
    metric -> {row name: mean tau}."""
    colors = _palette(list(methods) + sorted(set().union(*[set(v) for v in (reference or {}).values()])))
    fig, axes = plt.subplots(1, len(FIDELITY_PANELS), figsize=(5.2 * len(FIDELITY_PANELS), 3.8), squeeze=False)
    for ax, (metric, k) in zip(axes[0], FIDELITY_PANELS):
        t = curves[(curves["metric"] == metric) & (curves["k"].astype(str) == k)]
        for m in methods:
            g = t[t["method"] == m]
            if not len(g):
                continue
            by = g.groupby("point")
            x = by["images_seen"].mean()
            v = by["value"]
            ax.plot(x.values, v.mean().values, "-", marker="o", ms=3, color=colors[m],
                    label=f"{m} ({g['seed'].nunique()} seed(s))")
            if g["seed"].nunique() > 1:
                ax.fill_between(x.values, v.min().values, v.max().values, color=colors[m], alpha=0.15)
        for name, value in ((reference or {}).get(metric) or {}).items():
            if np.isfinite(value):
                ax.axhline(value, ls="--", lw=1.1, color=colors[name], label=f"{name} ({value:+.2f})")
        if ceiling is not None and np.isfinite(ceiling) and metric == "kendall_tau":
            ax.axhline(ceiling, ls=":", lw=1.6, color="black", label=f"GT-seed ceiling ({ceiling:+.2f})")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # decades only: no overlapping labels
        ax.set_xlabel("training images seen")
        ax.legend(fontsize=7, loc="best")
        label = metric if not k else f"{metric} @ {k}"
        ax.set_ylabel(label)
        ax.set_title(f"{label} over training" + (f"\nground truth: {gt}" if gt else ""))
    fig.tight_layout()
    return fig


# --- diagnostics ----------------------------------------------------------------------------
def _longest_phase(arrays: dict) -> int:
    phases = sorted({int(k.rsplit("_p", 1)[1]) for k in arrays if k.startswith("norm_steps_p")})
    if not phases:
        return 0
    return max(phases, key=lambda p: len(arrays.get(f"norm_steps_p{p}", [])))


def drift_histograms(method: str, diags: dict[int, dict]) -> plt.Figure:
    """Weight histograms per snapshot (one colour each) per layer, and relative update norms.

    ``diags``: seed -> loaded diagnostics (:func:`harness.engine.diagnostics.load_diagnostics`). The
    weight panels show the first seed; the update-norm panel pools all seeds.
    """
    seeds = sorted(diags)
    first = diags[seeds[0]]
    arrays = first["arrays"]
    layers = [str(x) for x in arrays.get("layers", [])]
    p = _longest_phase(arrays)
    fig, axes = plt.subplots(1, len(layers) + 1, figsize=(3.6 * (len(layers) + 1), 3.2), squeeze=False)
    axes = axes[0]
    steps = arrays.get(f"snap_steps_p{p}", np.zeros(0, dtype=int))
    cmap = plt.get_cmap("viridis")
    for i, (ax, name) in enumerate(zip(axes, layers)):
        snaps = arrays.get(f"snap_{i}_p{p}")
        if snaps is None or len(snaps) == 0:
            ax.text(0.5, 0.5, "no snapshots", transform=ax.transAxes, ha="center")
            continue
        lo, hi = np.percentile(snaps, [0.5, 99.5])
        bins = np.linspace(lo, hi, 50)
        for j, w in enumerate(snaps):
            ax.hist(w, bins=bins, histtype="step", lw=1.2, color=cmap(j / max(len(snaps) - 1, 1)),
                    label=f"step {steps[j]}" if j < len(steps) else None)
        ax.set_title(_short(name), fontsize=8)
        ax.set_xlabel("weight value", fontsize=8)
        if i == 0:
            ax.set_ylabel(f"count (seed {seeds[0]})", fontsize=8)
            ax.legend(fontsize=6)
    ax = axes[-1]
    for i, name in enumerate(layers):
        vals = np.concatenate([np.zeros(0)] + [arr[:, i] for arr in (_norms(d) for d in diags.values())
                                               if arr.ndim == 2 and arr.shape[1] > i])
        nz = vals[vals > 0]
        if nz.size:
            ax.hist(nz, bins=np.logspace(np.log10(nz.min()), np.log10(nz.max()) + 1e-9, 40), histtype="step",
                    lw=1.2, label=f"{_short(name)} ({100 * nz.size / max(vals.size, 1):.0f}% of steps)")
    ax.set_xscale("log")
    ax.set_xlabel("||W_t - W_{t-1}|| / ||W_{t-1}||", fontsize=8)
    ax.set_title(f"relative update norms (steps that moved, {len(seeds)} seed(s))", fontsize=8)
    ax.legend(fontsize=6)
    fig.suptitle(f"{method}: parameter drift")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def _norms(diag: dict) -> np.ndarray:
    arrays = diag["arrays"]
    return np.asarray(arrays.get(f"norms_p{_longest_phase(arrays)}", np.zeros((0, 0))))


def _short(name: str, n: int = 46) -> str:
    return name if len(name) <= n else "…" + name[-(n - 1):]


def cosine_heatmap(method: str, diags: dict[int, dict]) -> plt.Figure | None:
    """Mean over seeds of the 4x4 feature-cosine matrix; the mean off-diagonal in the title."""
    mats, offs, labels = [], [], None
    for seed in sorted(diags):
        fc = diags[seed].get("feature_cosine") or {}
        if fc.get("matrix"):
            mats.append(np.asarray(fc["matrix"], dtype=float))
            offs.append(float(fc.get("mean_off_diagonal", math.nan)))
            labels = labels or [a.rsplit("|", 2)[-2] if "|" in a else a for a in fc.get("archs", [])]
            selection = fc.get("selection", "")
    if not mats:
        return None
    m = np.mean(mats, axis=0)
    fig, ax = plt.subplots(figsize=(4.4, 3.8))
    vmin = min(0.0, float(m.min()))
    sns.heatmap(m, annot=True, fmt=".2f", vmin=vmin, vmax=1.0, cmap="mako", square=True, ax=ax,
                xticklabels=labels, yticklabels=labels, cbar_kws={"shrink": 0.8})
    ax.tick_params(labelsize=7)
    off = np.array(offs)
    sd = off.std(ddof=1) if off.size > 1 else 0.0
    ax.set_title(f"{method}: feature cosine, mean off-diag = {off.mean():.3f} ± {sd:.3f}\n"
                 f"({len(mats)} seed(s); archs: {selection}, label = last decision)", fontsize=8)
    fig.tight_layout()
    return fig


# --- method artefacts -----------------------------------------------------------------------
def codes_histogram(title: str, df: pd.DataFrame) -> plt.Figure:
    """Histogram of each numeric column of a codes CSV (e.g. K-shot's learned simplex codes)."""
    num = df.select_dtypes("number")
    cols = [c for c in num.columns if c not in ("seed", "step", "epoch", "arch_index")][:8]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for c in cols:
        v = num[c].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if v.size:
            ax.hist(v, bins=30, histtype="step", lw=1.3, label=str(c))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("value")
    ax.set_ylabel("count")
    if cols:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def history_lines(title: str, df: pd.DataFrame, max_lines: int = 40) -> plt.Figure:
    """Line plot of an alpha (or any numeric) history CSV over its step/epoch column.

    Columns named like alphas (``alpha`` in the name, or ``decision/op``) go in the left panel;
    other numeric columns (noise, flip rate, losses) in a right panel, so scales do not mix.
    """
    x_col = next((c for c in df.columns if str(c).lower() in ("step", "epoch", "iter", "iteration")), None)
    num = df.select_dtypes("number")
    cols = [c for c in num.columns if c not in (x_col, "seed")]
    main = [c for c in cols if "alpha" in str(c).lower() or "/" in str(c)] or cols
    rest = [c for c in cols if c not in main]
    x = df[x_col].to_numpy() if x_col is not None else np.arange(len(df))
    fig, axes = plt.subplots(1, 2 if rest else 1, figsize=(11 if rest else 6.5, 3.6), squeeze=False)
    for ax, group, name in zip(axes[0], (main[:max_lines], rest[:12]), ("values", "other columns")):
        for c in group:
            ax.plot(x, num[c].to_numpy(dtype=float), lw=1, label=str(c))
        ax.set_xlabel(str(x_col or "row"))
        ax.set_title(f"{title}: {name}" + (f" (first {max_lines} of {len(main)})" if name == "values"
                                           and len(main) > max_lines else ""), fontsize=8)
        if 0 < len(group) <= 12:
            ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig
