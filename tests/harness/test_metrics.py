"""Tests for harness.metrics: scipy agreement, hand-worked cases, tie/NaN/k rules, bootstrap."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from harness import metrics as M
from harness.core.errors import ConfigError


def _rand(n: int, seed: int, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if ties:
        return rng.integers(0, 5, n).astype(float), rng.integers(0, 7, n).astype(float)
    g = rng.normal(size=n)
    return g + rng.normal(size=n), g


def _brute_high_low(p: np.ndarray, g: np.ndarray, k: int) -> float:
    top = np.argsort(-g, kind="stable")[:k]
    low = np.setdiff1d(np.arange(len(g)), top)
    c = d = 0
    for a in top:
        for b in low:
            c += p[a] > p[b]
            d += p[a] < p[b]
    return (c - d) / (len(top) * len(low))


# --------------------------------------------------------------------------- correlations vs scipy


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correlations_match_scipy(seed: int, ties: bool) -> None:
    p, g = _rand(300, seed, ties)
    assert M.kendall_tau(p, g) == pytest.approx(stats.kendalltau(p, g, variant="b").statistic, abs=1e-12)
    assert M.spearman_rho(p, g) == pytest.approx(stats.spearmanr(p, g).statistic, abs=1e-12)
    assert M.pearson_r(p, g) == pytest.approx(stats.pearsonr(p, g).statistic, abs=1e-12)


def test_perfect_and_reversed_orders() -> None:
    g = np.arange(10.0)
    assert M.kendall_tau(g**3, g) == pytest.approx(1.0)
    assert M.spearman_rho(-(g**3), g) == pytest.approx(-1.0)
    assert M.pearson_r(2 * g + 1, g) == pytest.approx(1.0)


def test_constant_pred_is_nan_without_warning() -> None:
    g = np.arange(6.0)
    p = np.full(6, 0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(M.kendall_tau(p, g))
        assert math.isnan(M.spearman_rho(p, g))
        assert math.isnan(M.pearson_r(p, g))
        assert math.isnan(M.topk_kendall_tau(p, g, 3))
    assert M.high_low_tau(p, g, 3) == 0.0  # every pair is a pred tie


# --------------------------------------------------------------------------- top-k metrics by hand


def test_topk_kendall_tau_hand_worked() -> None:
    # GT top 3 = idx 0, 1, 2 (gt .9 > .8 > .7) with pred 1, 3, 2:
    # (0,1) discordant, (0,2) discordant, (1,2) concordant -> (1 - 2) / 3.
    gt = np.array([0.9, 0.8, 0.7, 0.1, 0.2])
    pred = np.array([1.0, 3.0, 2.0, 5.0, 4.0])
    assert M.topk_kendall_tau(pred, gt, 3) == pytest.approx(-1 / 3)
    assert M.topk_kendall_tau(pred, gt, 0.6) == pytest.approx(-1 / 3)  # ceil(0.6 * 5) = 3
    assert M.topk_kendall_tau(pred, gt, 2) == pytest.approx(-1.0)
    assert math.isnan(M.topk_kendall_tau(pred, gt, 1))  # one point: no pairs


def test_topk_kendall_tau_matches_scipy_on_subset() -> None:
    p, g = _rand(500, 7)
    top = np.argsort(-g)[:50]
    assert M.topk_kendall_tau(p, g, 50) == pytest.approx(stats.kendalltau(p[top], g[top]).statistic)
    assert M.topk_kendall_tau(p, g, 0.1) == pytest.approx(stats.kendalltau(p[top], g[top]).statistic)


def test_high_low_tau_hand_worked() -> None:
    # GT top 2 = {0, 1}; outside = {2, 3}.
    # (0,2): .5 > .3 C   (0,3): .5 = .5 tie   (1,2): .1 < .3 D   (1,3): .1 < .5 D  -> (1 - 2) / 4
    gt = np.array([4.0, 3.0, 2.0, 1.0])
    pred = np.array([0.5, 0.1, 0.3, 0.5])
    assert M.high_low_tau(pred, gt, 2) == pytest.approx(-0.25)
    # k=1: pairs (0,1) C, (0,2) C, (0,3) tie -> 2 / 3
    assert M.high_low_tau(pred, gt, 1) == pytest.approx(2 / 3)
    assert M.high_low_tau(gt, gt, 2) == pytest.approx(1.0)
    assert M.high_low_tau(-gt, gt, 2) == pytest.approx(-1.0)
    assert math.isnan(M.high_low_tau(pred, gt, 4))  # k == n: no pairs


@pytest.mark.parametrize("seed", range(12))
def test_high_low_tau_equals_brute_force_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    p, g = _rand(n, seed, ties=True)
    for k in {1, max(1, n // 3), n - 1}:
        assert M.high_low_tau(p, g, k) == pytest.approx(_brute_high_low(p, g, k), abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=2, max_size=30),
    st.integers(1, 29),
)
def test_high_low_tau_brute_force_property(pairs: list[tuple[int, int]], k: int) -> None:
    p = np.array([a for a, _ in pairs], dtype=float)
    g = np.array([b for _, b in pairs], dtype=float)
    k = min(k, len(g) - 1)
    assert M.high_low_tau(p, g, k) == pytest.approx(_brute_high_low(p, g, k), abs=1e-12)


def test_precision_at_k_hand_worked() -> None:
    pred = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    gt = np.array([1.0, 5.0, 4.0, 3.0, 2.0])
    assert M.precision_at_k(pred, gt, 2) == pytest.approx(0.5)  # {0,1} vs {1,2}
    assert M.precision_at_k(pred, gt, 3) == pytest.approx(2 / 3)  # {0,1,2} vs {1,2,3}
    assert M.precision_at_k(pred, gt, 1) == 0.0
    assert M.precision_at_k(gt, gt, 3) == 1.0


def test_precision_at_k_ties_break_by_lower_index() -> None:
    # pred ties: predicted top 2 = {0, 1}; GT top 2 = {1, 2} -> 0.5
    assert M.precision_at_k([1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.5], 2) == pytest.approx(0.5)
    # GT tie at the boundary: GT top 1 = {1} (lower index of the tied 2.0s), pred picks 2 -> 0
    assert M.precision_at_k([0.0, 0.0, 9.0, 0.0], [1.0, 2.0, 2.0, 0.0], 1) == 0.0
    assert M.precision_at_k([0.0, 9.0, 0.0, 0.0], [1.0, 2.0, 2.0, 0.0], 1) == 1.0


def test_best_worst_rank_hand_worked() -> None:
    gt = np.array([10.0, 20.0, 30.0, 40.0, 50.0])  # GT ranks 5, 4, 3, 2, 1
    pred = np.array([5.0, 1.0, 4.0, 2.0, 3.0])  # predicted order: 0, 2, 4, 3, 1
    assert M.best_rank_at_k(pred, gt, 2) == 3.0
    assert M.worst_rank_at_k(pred, gt, 2) == 5.0
    assert M.best_rank_at_k(pred, gt, 3) == 1.0
    assert M.worst_rank_at_k(pred, gt, 1) == 5.0
    assert M.best_rank_pct_at_k(pred, gt, 2) == pytest.approx(60.0)
    assert M.worst_rank_pct_at_k(pred, gt, 2) == pytest.approx(100.0)
    assert M.best_rank_pct_at_k(pred, gt, 3) == pytest.approx(20.0)


def test_gt_rank_ties_share_the_best_rank() -> None:
    gt = np.array([50.0, 50.0, 10.0, 30.0])
    assert M.best_rank_at_k([0.0, 2.0, 1.0, 0.5], gt, 1) == 1.0  # tied for best -> rank 1
    assert M.best_rank_at_k([0.0, 1.0, 0.0, 2.0], gt, 1) == 3.0  # two strictly better
    assert M.worst_rank_at_k([0.0, 1.0, 2.0, 0.0], gt, 2) == 4.0


def test_picked_gt_and_regret() -> None:
    gt = np.array([0.9, 0.5, 0.7, 0.95])
    assert M.picked_gt([1.0, 3.0, 2.0, 0.0], gt) == pytest.approx(0.5)
    assert M.regret([1.0, 3.0, 2.0, 0.0], gt) == pytest.approx(0.45)
    # tie for the max score: expected value of a random pick among idx 1 and 2
    assert M.picked_gt([1.0, 3.0, 3.0, 2.0], gt) == pytest.approx(0.6)
    assert M.regret([1.0, 3.0, 3.0, 2.0], gt) == pytest.approx(0.35)
    assert M.regret(gt, gt) == 0.0


# --------------------------------------------------------------------------- NaN handling


def test_nan_gt_positions_are_dropped() -> None:
    p, g = _rand(40, 3)
    p2, g2 = np.append(p, 100.0), np.append(g, np.nan)  # would be the top pick if kept
    for fn in (M.kendall_tau, M.spearman_rho, M.pearson_r, M.picked_gt, M.regret):
        assert fn(p2, g2) == pytest.approx(fn(p, g))
    for fn in (M.high_low_tau, M.precision_at_k, M.best_rank_at_k, M.worst_rank_pct_at_k):
        assert fn(p2, g2, 0.2) == pytest.approx(fn(p, g, 0.2))


def test_nan_pred_is_worst_prediction() -> None:
    gt = np.array([1.0, 0.2, 0.1, 0.3])
    pred = np.array([np.nan, 1.0, 0.0, 0.5])
    assert M.picked_gt(pred, gt) == pytest.approx(0.2)  # not 1.0: NaN is never the pick
    assert M.worst_rank_at_k(pred, gt, 3) == 4.0  # the NaN (GT best) is not in the top 3
    as_lowest = np.array([-5.0, 1.0, 0.0, 0.5])
    assert M.kendall_tau(pred, gt) == pytest.approx(M.kendall_tau(as_lowest, gt))
    assert M.high_low_tau(pred, gt, 1) == pytest.approx(-1.0)
    # pearson needs numbers: positions with NaN pred are left out
    assert M.pearson_r(pred, gt) == pytest.approx(stats.pearsonr(pred[1:], gt[1:]).statistic)


def test_all_nan_pred_picks_uniformly() -> None:
    gt = np.array([1.0, 0.0, 0.5])
    assert M.picked_gt(np.full(3, np.nan), gt) == pytest.approx(0.5)
    assert math.isnan(M.kendall_tau(np.full(3, np.nan), gt))


def test_fewer_than_two_valid_points_is_nan() -> None:
    pred, gt = np.array([1.0, 2.0, 3.0]), np.array([np.nan, np.nan, 0.5])
    for name, spec in M.METRICS.items():
        value = spec.fn(pred, gt) if spec.ks is None else spec.fn(pred, gt, 0.5)
        assert math.isnan(value), name


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="same length"):
        M.kendall_tau([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="1-D"):
        M.kendall_tau(np.ones((2, 2)), np.ones((2, 2)))


# --------------------------------------------------------------------------- k


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [(3, 10, 3), (10, 10, 10), (0.01, 15625, 157), (0.5, 3, 2), (0.001, 10, 1), (0.07, 100, 7), (0.1, 30, 3)],
)
def test_resolve_k(k: float, n: int, expected: int) -> None:
    assert M.resolve_k(k, n) == expected


def test_resolve_k_accepts_numpy_scalars() -> None:
    assert M.resolve_k(np.int64(4), 10) == 4
    assert M.resolve_k(np.float64(0.25), 10) == 3


def test_fraction_and_count_agree() -> None:
    p, g = _rand(10, 5)
    for fn in (M.precision_at_k, M.high_low_tau, M.topk_kendall_tau, M.best_rank_at_k):
        assert fn(p, g, 0.2) == fn(p, g, 2)
        assert fn(p, g, 0.5) == fn(p, g, 5)


@pytest.mark.parametrize("k", [0, -1, 1.0, 1.5, 0.0, -0.2, float("nan"), True, "3", None])
def test_invalid_k_raises(k: object) -> None:
    p, g = _rand(10, 0)
    with pytest.raises(ValueError, match="k"):
        M.precision_at_k(p, g, k)
    with pytest.raises(ValueError):
        M.resolve_k(k, 10)


def test_count_above_n_raises_and_k_on_plain_metric_raises() -> None:
    p, g = _rand(10, 0)
    with pytest.raises(ValueError, match="larger than"):
        M.best_rank_at_k(p, g, 11)
    with pytest.raises(ValueError, match="takes no k"):
        M.kendall_tau(p, g, 5)
    with pytest.raises(ConfigError):  # shown as a one-liner by the CLI
        M.resolve_k(0, 10)


# --------------------------------------------------------------------------- registry + compute_all

NAMES = {
    "kendall_tau", "spearman_rho", "pearson_r", "topk_kendall_tau", "high_low_tau", "precision_at_k",
    "best_rank_at_k", "worst_rank_at_k", "best_rank_pct_at_k", "worst_rank_pct_at_k", "picked_gt", "regret",
}


def test_registry_names_and_directions() -> None:
    assert set(M.METRICS) == NAMES
    lower_better = {n for n, s in M.METRICS.items() if not s.higher_is_better}
    assert lower_better == {
        "best_rank_at_k", "worst_rank_at_k", "best_rank_pct_at_k", "worst_rank_pct_at_k", "regret",
    }
    takes_k = {n for n, s in M.METRICS.items() if s.ks is not None}
    assert takes_k == NAMES - {"kendall_tau", "spearman_rho", "pearson_r", "picked_gt", "regret"}
    assert M.METRICS["kendall_tau"].fn is M.kendall_tau


def test_register_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(M, "METRICS", dict(M.METRICS))

    @M.register_metric("top1_gt", higher_is_better=True, ks=(1, 0.5))
    def top1_gt(pred, gt, k):  # noqa: ANN001, ANN202
        return float(M.resolve_k(k, len(gt)))

    assert M.METRICS["top1_gt"].ks == (1, 0.5)
    rows = M.compute_all([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], metrics=["top1_gt"])
    assert rows == [{"metric": "top1_gt", "k": 1, "value": 1.0}, {"metric": "top1_gt", "k": 0.5, "value": 2.0}]
    with pytest.raises(ValueError, match="already registered"):
        M.register_metric("kendall_tau", higher_is_better=True)(top1_gt)
    with pytest.raises(ValueError):
        M.register_metric("bad_ks", higher_is_better=True, ks=(0,))


def test_compute_all_rows_match_direct_calls() -> None:
    p, g = _rand(200, 11)
    rows = M.compute_all(p, g)
    assert {r["metric"] for r in rows} == NAMES
    expected_len = sum(1 if s.ks is None else len(s.ks) for s in M.METRICS.values())
    assert len(rows) == expected_len
    for r in rows:
        assert set(r) == {"metric", "k", "value"}
        assert isinstance(r["value"], float)
        fn = M.METRICS[r["metric"]].fn
        direct = fn(p, g) if r["k"] is None else fn(p, g, r["k"])
        assert r["value"] == pytest.approx(direct, nan_ok=True)


def test_compute_all_skips_counts_above_n_and_selects_metrics() -> None:
    p, g = _rand(20, 1)
    rows = M.compute_all(p, g, metrics=["best_rank_at_k", "precision_at_k"])
    assert [(r["metric"], r["k"]) for r in rows] == [
        ("best_rank_at_k", 5), ("best_rank_at_k", 10),
        ("precision_at_k", 0.01), ("precision_at_k", 0.05), ("precision_at_k", 0.1), ("precision_at_k", 0.5),
    ]
    with pytest.raises(ConfigError, match="did you mean 'kendall_tau'"):
        M.compute_all(p, g, metrics=["kendal_tau"])


def test_compute_all_with_nan_gt_counts_valid_points() -> None:
    p, g = _rand(12, 2)
    g[:4] = np.nan  # 8 valid: k=10 and k=50 omitted
    ks = [r["k"] for r in M.compute_all(p, g, metrics=["worst_rank_at_k"])]
    assert ks == [5]


# --------------------------------------------------------------------------- bootstrap + seeds


def test_bootstrap_ci_contains_estimate_and_is_deterministic() -> None:
    p, g = _rand(400, 4)
    lo, hi = M.bootstrap_ci(M.kendall_tau, p, g, n_resamples=200, seed=1)
    assert lo < M.kendall_tau(p, g) < hi
    assert hi - lo < 0.2
    assert (lo, hi) == M.bootstrap_ci(M.kendall_tau, p, g, n_resamples=200, seed=1)
    assert (lo, hi) != M.bootstrap_ci(M.kendall_tau, p, g, n_resamples=200, seed=2)


def test_bootstrap_ci_with_k_and_narrower_with_higher_alpha() -> None:
    p, g = _rand(400, 6)
    lo, hi = M.bootstrap_ci(M.precision_at_k, p, g, k=0.1, n_resamples=200)
    assert lo <= M.precision_at_k(p, g, 0.1) <= hi
    lo90, hi90 = M.bootstrap_ci(M.precision_at_k, p, g, k=0.1, n_resamples=200, alpha=0.1)
    assert lo <= lo90 <= hi90 <= hi


def test_bootstrap_ci_degenerate_and_invalid_args() -> None:
    assert all(math.isnan(x) for x in M.bootstrap_ci(M.kendall_tau, np.ones(20), np.arange(20.0), n_resamples=20))
    with pytest.raises(ValueError, match="alpha"):
        M.bootstrap_ci(M.kendall_tau, [1.0, 2.0], [1.0, 2.0], alpha=1.5)
    with pytest.raises(ValueError, match="n_resamples"):
        M.bootstrap_ci(M.kendall_tau, [1.0, 2.0], [1.0, 2.0], n_resamples=0)


def test_summarize_seeds_known_values() -> None:
    out = M.summarize_seeds([1.0, 2.0, np.nan, 3.0, 4.0])
    assert out["n_seeds"] == 4
    assert out["mean"] == pytest.approx(2.5)
    assert out["std"] == pytest.approx(math.sqrt(5 / 3))
    assert 1.0 <= out["ci_low"] < 2.5 < out["ci_high"] <= 4.0
    assert out == M.summarize_seeds([1.0, 2.0, 3.0, 4.0])  # deterministic, NaN-free same result


def test_summarize_seeds_ci_matches_normal_theory() -> None:
    v = np.random.default_rng(0).normal(10.0, 2.0, size=400)
    out = M.summarize_seeds(v, n_resamples=2000)
    half = 1.96 * v.std(ddof=1) / math.sqrt(v.size)
    assert out["ci_low"] == pytest.approx(v.mean() - half, abs=0.15 * half)
    assert out["ci_high"] == pytest.approx(v.mean() + half, abs=0.15 * half)


def test_summarize_seeds_one_and_zero_seeds() -> None:
    assert M.summarize_seeds([0.7, np.nan]) == {"mean": 0.7, "std": 0.0, "ci_low": 0.7, "ci_high": 0.7, "n_seeds": 1}
    empty = M.summarize_seeds([np.nan])
    assert empty["n_seeds"] == 0 and math.isnan(empty["mean"]) and math.isnan(empty["ci_low"])
    const = M.summarize_seeds([0.5, 0.5, 0.5])
    assert (const["std"], const["ci_low"], const["ci_high"]) == (0.0, 0.5, 0.5)
