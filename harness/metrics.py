"""Ranking metrics: how well do a supernet's scores order architectures by true accuracy?

Every metric is a pure function ``f(pred, gt, k) -> float`` over 1-D arrays of equal length:

* ``pred``: the method's score per architecture, higher = predicted better.
* ``gt``: ground-truth accuracy per architecture, higher = better.

Conventions shared by all metrics (documented once here, relied on by the tests):

NaN / inf
    A position whose ``gt`` is not finite is dropped: an architecture without a true accuracy
    cannot be ranked against. A NaN in ``pred`` is treated as the worst possible prediction
    (``-inf``), so a method that fails to score an architecture is penalised, not excused.
    ``pearson_r`` is the one exception: a linear correlation needs a number, so it uses only
    positions where ``pred`` is finite as well. With fewer than 2 valid positions every
    metric returns NaN. Correlations of a constant ``pred`` are NaN (undefined), returned
    as such for the caller to report; ``high_low_tau`` of a constant ``pred`` is 0
    (every pair is a tie).

Ties
    *GT top k*: architectures sorted by ``gt`` descending with a stable sort, so ties at the
    boundary are broken by position (lower index first). The set always has exactly k members.
    *Predicted top k*: likewise, ``pred`` descending, ties by lower index first; deterministic,
    so a constant ``pred`` picks the first k architectures in input order.
    *GT rank* (for ``best_rank_at_k`` etc.): competition ranking, 1 + number of architectures
    with strictly higher ``gt``, so architectures tied with the best all have rank 1.
    *picked_gt*: when several architectures tie for the top score, the mean of their ``gt``:
    the expected accuracy of a random pick among them.

k
    An ``int >= 1`` is a count; a ``float`` in (0, 1) is a fraction of the number of valid
    positions n, rounded up, at least 1 (see :func:`resolve_k`). Fractions keep one config
    meaningful across search spaces of different sizes.
"""
from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from harness.core.errors import ConfigError, unknown_name

__all__ = [
    "METRICS",
    "InvalidKError",
    "MetricSpec",
    "best_rank_at_k",
    "best_rank_pct_at_k",
    "bootstrap_ci",
    "compute_all",
    "high_low_tau",
    "kendall_tau",
    "pearson_r",
    "picked_gt",
    "precision_at_k",
    "regret",
    "register_metric",
    "resolve_k",
    "spearman_rho",
    "summarize_seeds",
    "topk_kendall_tau",
    "worst_rank_at_k",
    "worst_rank_pct_at_k",
]

K = int | float
MetricFn = Callable[..., float]


class InvalidKError(ConfigError, ValueError):
    """A k that is neither a count >= 1 nor a fraction in (0, 1), or a count above n.

    A ``ValueError`` for callers, and a ``ConfigError`` so the CLI shows it as a one-liner
    (k usually comes from a flag or a config file).
    """


# --------------------------------------------------------------------------- helpers


def _check_k(k: Any) -> K:
    """Validate the form of k without knowing n; return it unchanged."""
    if k is None:
        raise InvalidKError("this metric needs k: an int >= 1 (count) or a float in (0, 1) (fraction)")
    if isinstance(k, (bool, np.bool_)):
        raise InvalidKError(f"k={k!r} is a bool; pass an int >= 1 (count) or a float in (0, 1) (fraction)")
    if isinstance(k, numbers.Integral):
        if k < 1:
            raise InvalidKError(f"k={k} must be >= 1 when given as a count")
        return int(k)
    if isinstance(k, numbers.Real):
        if not 0.0 < float(k) < 1.0:  # also rejects NaN
            raise InvalidKError(
                f"k={k!r} is a float, so it must be a fraction in (0, 1); pass an int for a count"
            )
        return float(k)
    raise InvalidKError(f"k={k!r} has type {type(k).__name__}; pass an int >= 1 or a float in (0, 1)")


def resolve_k(k: K, n: int) -> int:
    """Turn a count or fraction into a count for n architectures.

    A fraction rounds up (``ceil(k * n)``, at least 1) so that e.g. the top 1% of 15,625 keeps
    the 157th architecture rather than dropping it. The product is rounded to 9 decimals first
    so float error does not round up an exact result (0.07 * 100 is 7.000000000000001 -> 7).
    A count above n raises: silently clamping would report e.g. "precision@50" computed at 30.
    """
    k = _check_k(k)
    if isinstance(k, float):
        return max(1, math.ceil(round(k * n, 9)))
    if k > n:
        raise InvalidKError(f"k={k} is larger than the number of valid architectures n={n}")
    return k


def _clean(pred: npt.ArrayLike, gt: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Apply the module's NaN rules: drop non-finite gt, map NaN pred to -inf."""
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    if p.ndim != 1 or g.ndim != 1:
        raise ValueError(f"pred and gt must be 1-D, got shapes {p.shape} and {g.shape}")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same length, got {p.size} and {g.size}")
    keep = np.isfinite(g)
    if not keep.all():
        p, g = p[keep], g[keep]
    if np.isnan(p).any():
        p = np.where(np.isnan(p), -np.inf, p)
    return p, g


def _no_k(k: Any, name: str) -> None:
    if k is not None:
        raise InvalidKError(f"{name} takes no k (got k={k!r})")


def _order_desc(x: np.ndarray) -> np.ndarray:
    """Indices sorting x descending; ties keep input order (lower index first)."""
    return np.argsort(-x, kind="stable")


def _tau_b(p: np.ndarray, g: np.ndarray) -> float:
    if p.size < 2:
        return math.nan
    return float(stats.kendalltau(p, g).statistic)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r in numpy: NaN (no warning) when either side is constant."""
    if x.size < 2:
        return math.nan
    xc = x - x.mean()
    yc = y - y.mean()
    denom = math.sqrt(float(xc @ xc) * float(yc @ yc))
    if denom == 0.0 or not math.isfinite(denom):
        return math.nan
    return float(np.clip((xc @ yc) / denom, -1.0, 1.0))


def _gt_ranks(g: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Competition rank (1 = best) of g[idx]: 1 + count of strictly higher gt."""
    g_sorted = np.sort(g)
    return g.size - np.searchsorted(g_sorted, g[idx], side="right") + 1


def _pred_topk_gt_ranks(pred: npt.ArrayLike, gt: npt.ArrayLike, k: K) -> tuple[np.ndarray, int]:
    """GT ranks of the predicted top k, and n; (empty, n) when n < 2."""
    _check_k(k)
    p, g = _clean(pred, gt)
    n = p.size
    if n < 2:
        return np.empty(0, dtype=np.int64), n
    kk = resolve_k(k, n)
    return _gt_ranks(g, _order_desc(p)[:kk]), n


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric: what to call, which direction is good, default ks (None: no k)."""

    name: str
    fn: Callable
    higher_is_better: bool
    ks: tuple | None


METRICS: dict[str, MetricSpec] = {}


def register_metric(
    name: str, higher_is_better: bool, ks: Sequence[K] | None = None
) -> Callable[[MetricFn], MetricFn]:
    """Decorator adding ``fn`` to :data:`METRICS`; ``ks`` are the k values compute_all uses."""
    if ks is not None:
        ks = tuple(_check_k(k) for k in ks)
        if not ks:
            raise ValueError(f"metric {name!r}: ks must be None or non-empty")

    def deco(fn: MetricFn) -> MetricFn:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        METRICS[name] = MetricSpec(name=name, fn=fn, higher_is_better=higher_is_better, ks=ks)
        return fn

    return deco


# Fractions for set/ordering metrics: "top 1%/5%/10%/50%" means the same thing on NB201
# (15,625 archs) as on a 1,000-arch sample, so numbers stay comparable across spaces; 0.5
# is the coarse "does it separate good from bad half" view K-shot NAS reports.
_FRACTION_KS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.5)
# Counts for best/worst rank: they model a search budget (retrain the top 5/10/50 predicted
# archs), which is absolute, not relative to the space. k=1 is left out: best == worst there,
# and picked_gt / regret already describe the single pick.
_BUDGET_KS: tuple[int, ...] = (5, 10, 50)


# --------------------------------------------------------------------------- correlations


@register_metric("kendall_tau", higher_is_better=True)
def kendall_tau(pred: npt.ArrayLike, gt: npt.ArrayLike, k: None = None) -> float:
    """Kendall tau-b over all architectures: the standard supernet ranking score.

    tau-b (not tau-a) because benchmark accuracies and supernet scores both contain ties.
    """
    _no_k(k, "kendall_tau")
    return _tau_b(*_clean(pred, gt))


@register_metric("spearman_rho", higher_is_better=True)
def spearman_rho(pred: npt.ArrayLike, gt: npt.ArrayLike, k: None = None) -> float:
    """Spearman rank correlation (Pearson on average ranks); more weight on large rank errors."""
    _no_k(k, "spearman_rho")
    p, g = _clean(pred, gt)
    if p.size < 2:
        return math.nan
    return _pearson(stats.rankdata(p), stats.rankdata(g))


@register_metric("pearson_r", higher_is_better=True)
def pearson_r(pred: npt.ArrayLike, gt: npt.ArrayLike, k: None = None) -> float:
    """Pearson linear correlation of the raw scores; only positions with finite pred count.

    Useful when pred is itself an accuracy estimate (calibration), not just an ordering.
    """
    _no_k(k, "pearson_r")
    p, g = _clean(pred, gt)
    finite = np.isfinite(p)
    return _pearson(p[finite], g[finite])


# --------------------------------------------------------------------------- top-k views


@register_metric("topk_kendall_tau", higher_is_better=True, ks=_FRACTION_KS)
def topk_kendall_tau(pred: npt.ArrayLike, gt: npt.ArrayLike, k: K) -> float:
    """Kendall tau-b among the GT top k only: can the method order the good architectures?

    A search only cares about the top of the ranking; a global tau is dominated by easy
    pairs of bad architectures.
    """
    _check_k(k)
    p, g = _clean(pred, gt)
    if p.size < 2:
        return math.nan
    top = _order_desc(g)[: resolve_k(k, p.size)]
    return _tau_b(p[top], g[top])


@register_metric("high_low_tau", higher_is_better=True, ks=_FRACTION_KS)
def high_low_tau(pred: npt.ArrayLike, gt: npt.ArrayLike, k: K) -> float:
    """K-shot NAS's split tau: does the method rank every GT top-k arch above every other one?

    Over all pairs (a in GT top k, b outside it): concordant if pred[a] > pred[b], discordant
    if pred[a] < pred[b], pred ties count neither; value = (concordant - discordant) / pairs.
    Pairs are taken as given by the GT top-k set, even where gt[a] == gt[b] at the boundary.
    O(n log n): sort the outside scores once, then binary-search each top score. NaN when
    k == n (no pairs).
    """
    _check_k(k)
    p, g = _clean(pred, gt)
    n = p.size
    if n < 2:
        return math.nan
    kk = resolve_k(k, n)
    if kk >= n:
        return math.nan
    order = _order_desc(g)
    top, low = p[order[:kk]], np.sort(p[order[kk:]])
    below = np.searchsorted(low, top, side="left")  # low scores strictly under each top score
    above = low.size - np.searchsorted(low, top, side="right")  # strictly over
    return float((int(below.sum()) - int(above.sum())) / (kk * (n - kk)))


@register_metric("precision_at_k", higher_is_better=True, ks=_FRACTION_KS)
def precision_at_k(pred: npt.ArrayLike, gt: npt.ArrayLike, k: K) -> float:
    """Share of the predicted top k that is also in the GT top k: how much a shortlist hits."""
    _check_k(k)
    p, g = _clean(pred, gt)
    if p.size < 2:
        return math.nan
    kk = resolve_k(k, p.size)
    hits = np.intersect1d(_order_desc(p)[:kk], _order_desc(g)[:kk], assume_unique=True)
    return hits.size / kk


@register_metric("best_rank_at_k", higher_is_better=False, ks=_BUDGET_KS)
def best_rank_at_k(pred: npt.ArrayLike, gt: npt.ArrayLike, k: K) -> float:
    """Best GT rank (1 = best) among the predicted top k: what retraining k picks would find."""
    ranks, _ = _pred_topk_gt_ranks(pred, gt, k)
    return float(ranks.min()) if ranks.size else math.nan


@register_metric("worst_rank_at_k", higher_is_better=False, ks=_BUDGET_KS)
def worst_rank_at_k(pred: npt.ArrayLike, gt: npt.ArrayLike, k: K) -> float:
    """Worst GT rank among the predicted top k: how bad the shortlist's weakest pick is."""
    ranks, _ = _pred_topk_gt_ranks(pred, gt, k)
    return float(ranks.max()) if ranks.size else math.nan


@register_metric("best_rank_pct_at_k", higher_is_better=False, ks=_BUDGET_KS)
def best_rank_pct_at_k(pred: npt.ArrayLike, gt: npt.ArrayLike, k: K) -> float:
    """best_rank_at_k as a percentile of n (rank / n * 100), comparable across space sizes."""
    ranks, n = _pred_topk_gt_ranks(pred, gt, k)
    return float(ranks.min()) / n * 100.0 if ranks.size else math.nan


@register_metric("worst_rank_pct_at_k", higher_is_better=False, ks=_BUDGET_KS)
def worst_rank_pct_at_k(pred: npt.ArrayLike, gt: npt.ArrayLike, k: K) -> float:
    """worst_rank_at_k as a percentile of n (rank / n * 100)."""
    ranks, n = _pred_topk_gt_ranks(pred, gt, k)
    return float(ranks.max()) / n * 100.0 if ranks.size else math.nan


# --------------------------------------------------------------------------- the single pick


@register_metric("picked_gt", higher_is_better=True)
def picked_gt(pred: npt.ArrayLike, gt: npt.ArrayLike, k: None = None) -> float:
    """True accuracy of the architecture the method would return (argmax pred).

    Ties for the top score give the mean gt of the tied set, the expected value of a random
    pick, so a method cannot gain or lose by the input order of its ties.
    """
    _no_k(k, "picked_gt")
    return _picked(*_clean(pred, gt))[0]


@register_metric("regret", higher_is_better=False)
def regret(pred: npt.ArrayLike, gt: npt.ArrayLike, k: None = None) -> float:
    """max(gt) - picked_gt: accuracy lost by trusting the method instead of an oracle."""
    _no_k(k, "regret")
    picked, best = _picked(*_clean(pred, gt))
    return best - picked


def _picked(p: np.ndarray, g: np.ndarray) -> tuple[float, float]:
    """(mean gt of the top-scored ties, best gt); NaNs below two points."""
    if p.size < 2:
        return math.nan, math.nan
    return float(g[p == p.max()].mean()), float(g.max())


# --------------------------------------------------------------------------- batch + stats


def compute_all(
    pred: npt.ArrayLike, gt: npt.ArrayLike, metrics: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """Rows ``{"metric", "k", "value"}`` for the given (default: all registered) metrics.

    Metrics with default ks get one row per k (``k`` as registered, fraction or count);
    others one row with ``k=None``. A count k above the number of valid architectures is
    omitted rather than reported as NaN, so small test spaces produce clean tables.
    """
    names = list(METRICS) if metrics is None else list(metrics)
    for name in names:
        if name not in METRICS:
            raise unknown_name("metric", name, METRICS)
    p, g = _clean(pred, gt)  # once here; the metrics' own _clean is then a cheap no-op
    n = p.size
    rows: list[dict[str, Any]] = []
    for name in names:
        spec = METRICS[name]
        if spec.ks is None:
            rows.append({"metric": name, "k": None, "value": float(spec.fn(p, g))})
            continue
        for k in spec.ks:
            if isinstance(k, int) and k > n:
                continue
            rows.append({"metric": name, "k": k, "value": float(spec.fn(p, g, k))})
    return rows


def _percentile_interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _check_bootstrap_args(n_resamples: int, alpha: float) -> None:
    if not isinstance(n_resamples, numbers.Integral) or n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples!r} must be an int >= 1")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha!r} must be in (0, 1)")


def bootstrap_ci(
    fn: MetricFn,
    pred: npt.ArrayLike,
    gt: npt.ArrayLike,
    k: K | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) CI of ``fn`` over architectures.

    Resamples architectures with replacement (seeded ``numpy.random.Generator``, so the
    interval is reproducible) and recomputes the metric: the spread says how much a score
    depends on which architectures happen to be in the benchmark. Resamples whose value is
    NaN (e.g. constant pred after resampling) are dropped; all NaN gives (nan, nan).
    Data are cleaned once up front, so each resample costs one metric call
    (~3 ms for tau-b on 15,625 archs; 1,000 resamples in a few seconds).
    """
    _check_bootstrap_args(n_resamples, alpha)
    if k is not None:
        _check_k(k)
    p, g = _clean(pred, gt)
    n = p.size
    if n < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = np.empty(n_resamples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # degenerate resamples -> NaN, dropped
        for i in range(n_resamples):
            idx = rng.integers(0, n, size=n)
            values[i] = fn(p[idx], g[idx]) if k is None else fn(p[idx], g[idx], k)
    return _percentile_interval(values, alpha)


def summarize_seeds(
    values: npt.ArrayLike, n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, float | int]:
    """Mean, std (ddof=1) and bootstrap CI of the mean over per-seed metric values.

    NaN values (failed seeds) are dropped and ``n_seeds`` counts the rest. With one seed std is
    0.0 and the CI is (mean, mean); with none everything is NaN. With few seeds the bootstrap
    CI is narrow and discrete: it describes these seeds, it is not a guarantee.
    """
    _check_bootstrap_args(n_resamples, alpha)
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    m = v.size
    if m == 0:
        return {"mean": math.nan, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n_seeds": 0}
    mean = float(v.mean())
    if m == 1:
        return {"mean": mean, "std": 0.0, "ci_low": mean, "ci_high": mean, "n_seeds": 1}
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, m, size=(n_resamples, m))].mean(axis=1)
    low, high = _percentile_interval(means, alpha)
    return {"mean": mean, "std": float(v.std(ddof=1)), "ci_low": low, "ci_high": high, "n_seeds": m}
