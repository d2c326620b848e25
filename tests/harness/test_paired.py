"""Paired method comparisons (harness.paired): exact statistic, honest error rates, wiring.

The simulation (:func:`simulate`) reproduces the noise measured on real runs: one method's
Kendall tau varies across seeds with std about 0.12, independently of the other method, and
300 architectures add about +-0.04 on top. Scores are ``w_s * z(GT) + N(0, 1)`` with a
per-seed weight ``w_s`` chosen so that the population tau of that seed is
``tau_s ~ N(mu, 0.115)`` (``rho = sin(pi tau / 2)`` for a bivariate normal,
``w = rho / sqrt(1 - rho^2)``); with the architecture sampling noise the per-seed tau std is
0.12 (checked by :func:`test_simulation_has_the_measured_noise`). GT is rounded to 0.01, so it
has ties like benchmark accuracies. Error rates are asserted against bounds with margin:
trials are few (200 / 100), so a bound at the measured rate would be flaky by design.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness import check
from harness import metrics as M
from harness import paired as P
from harness.core.errors import ConfigError

SEED_SD = 0.115  # population tau std across seeds; + architecture noise at 300 archs -> 0.12
MU = 0.35


def simulate(rng: np.random.Generator, n_seeds: int, n_archs: int = 300, mu_a: float = MU, mu_b: float = MU,
             seed_sd: float = SEED_SD):
    """scores_a, scores_b (seed -> scores), truth: two methods with independent seed noise."""
    g = np.round(rng.normal(size=n_archs), 2)
    z = (g - g.mean()) / g.std()

    def method(mu: float) -> dict[int, np.ndarray]:
        out = {}
        for s in range(n_seeds):
            tau = float(np.clip(rng.normal(mu, seed_sd), -0.9, 0.9))
            rho = np.sin(np.pi * tau / 2)
            out[s] = rho / np.sqrt(1 - rho**2) * z + rng.normal(size=n_archs)
        return out

    return method(mu_a), method(mu_b), g


def call_rate(base_seed: int, trials: int, n_seeds: int, delta: float, n_boot: int = 400, ci: str = "t") -> float:
    """Share of trials whose verdict says the methods differ (true tau difference ``delta``)."""
    rng = np.random.default_rng(base_seed)
    called = 0
    for i in range(trials):
        a, b, g = simulate(rng, n_seeds, mu_a=MU + delta / 2, mu_b=MU - delta / 2)
        r = P.paired_tau_difference(a, b, g, n_boot=n_boot, seed=i, ci=ci)
        called += r.verdict != "not distinguishable"
    return called / trials


# --------------------------------------------------------------------------- exactness


def _tied_data(rng, n):
    """Scores and truth with heavy ties and a -inf (a NaN score after harness.metrics' rule)."""
    x = rng.integers(0, 6, size=n).astype(float)
    x[0] = -np.inf
    g = rng.integers(0, 8, size=n).astype(float)
    return x, g


@pytest.mark.parametrize("vectorized", [True, False])
def test_resampled_tau_b_matches_scipy_per_row(vectorized):
    rng = np.random.default_rng(3)
    x, g = _tied_data(rng, 40)
    idx = rng.integers(0, 40, size=(200, 40))
    got = P.resampled_tau_b(x, g, idx, vectorized=vectorized)
    want = np.array([stats.kendalltau(x[i], g[i]).statistic for i in idx])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_resampled_tau_b_nan_for_constant_resample():
    x, g = np.array([1.0, 2.0, 3.0]), np.array([3.0, 1.0, 2.0])
    out = P.resampled_tau_b(x, g, np.array([[1, 1, 1], [0, 1, 2]]))
    assert np.isnan(out[0]) and out[1] == pytest.approx(stats.kendalltau(x, g).statistic, abs=1e-12)


def _brute_force_replicates(a, b, g, seed_draws, arch_draws):
    """The definition, one scipy call per (replicate, draw): what the vectorised code must equal."""
    reps = []
    seen = [0] * len(a)
    for row in seed_draws:
        diffs = []
        for s in row:
            idx = arch_draws[s][seen[s]]
            seen[s] += 1
            diffs.append(stats.kendalltau(a[s][idx], g[s][idx]).statistic
                         - stats.kendalltau(b[s][idx], g[s][idx]).statistic)
        reps.append(np.mean(diffs))
    return np.array(reps)


@pytest.mark.parametrize("vectorized", [True, False])
def test_hierarchical_replicates_equal_brute_force(vectorized):
    rng = np.random.default_rng(7)
    sizes = (12, 15, 9, 20)  # archs differ per seed
    a, b, g = [], [], []
    for n in sizes:
        x, t = _tied_data(rng, n)
        a.append(x)
        b.append(np.where(rng.random(n) < 0.5, t, rng.normal(size=n)))  # B: untied noise mixed with truth
        g.append(t)
    seed_draws, arch_draws = P.draw_hierarchical(sizes, 300, np.random.default_rng(11))
    got = P.hierarchical_replicates(a, b, g, seed_draws, arch_draws, vectorized=vectorized)
    want = _brute_force_replicates(a, b, g, seed_draws, arch_draws)
    assert np.isfinite(want).mean() > 0.9  # the comparison covers real values, NaNs on both sides agree
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_untied_scores_take_the_single_matmul_path_exactly():
    rng = np.random.default_rng(5)
    g = [np.round(rng.normal(size=50), 1) for _ in range(3)]
    a = [t + rng.normal(size=50) for t in g]
    b = [rng.normal(size=50) for _ in g]
    seed_draws, arch_draws = P.draw_hierarchical([50] * 3, 200, np.random.default_rng(0))
    got = P.hierarchical_replicates(a, b, g, seed_draws, arch_draws, vectorized=True)
    np.testing.assert_allclose(got, _brute_force_replicates(a, b, g, seed_draws, arch_draws), rtol=0, atol=1e-12)


def test_point_estimate_and_percentile_ci_follow_the_definition():
    rng = np.random.default_rng(2)
    g = np.round(rng.normal(size=30), 1)
    g[3] = np.nan  # dropped, as harness.metrics does
    sa = {s: g * 0.8 + rng.normal(size=30) for s in (0, 1, 2, 5)}
    sb = {s: g * 0.2 + rng.normal(size=30) for s in (0, 1, 2, 7)}  # shared seeds: 0, 1, 2
    sa[1][4] = np.nan  # worst score for A on seed 1
    r = P.paired_tau_difference(sa, sb, g, n_boot=250, seed=9, ci="percentile", a="fairnas", b="spos")
    keep = np.isfinite(g)
    per_seed = [stats.kendalltau(np.nan_to_num(sa[s][keep], nan=-np.inf), g[keep]).statistic
                - stats.kendalltau(sb[s][keep], g[keep]).statistic for s in (0, 1, 2)]
    assert r.seeds == (0, 1, 2) and r.n_seeds == 3 and r.n_archs == 29
    np.testing.assert_allclose(r.per_seed, per_seed, rtol=0, atol=1e-12)
    assert r.diff == pytest.approx(np.mean(per_seed), abs=1e-12)
    assert r.tau_a[0] == M.kendall_tau(sa[0], g)
    # the interval is the quantile of exactly the brute-force replicates of the same draws
    seed_draws, arch_draws = P.draw_hierarchical([29] * 3, 250, np.random.default_rng(9))
    clean = lambda x: np.nan_to_num(x[keep], nan=-np.inf)  # noqa: E731
    reps = _brute_force_replicates([clean(sa[s]) for s in (0, 1, 2)], [clean(sb[s]) for s in (0, 1, 2)],
                                   [g[keep]] * 3, seed_draws, arch_draws)
    reps = reps[np.isfinite(reps)]
    lo, hi = np.quantile(reps, [0.025, 0.975])
    assert (r.ci_low, r.ci_high) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    # the default t interval: diff +- t_{n-1} * sd(replicates) * sqrt(n / (n - 1))
    rt = P.paired_tau_difference(sa, sb, g, n_boot=250, seed=9, a="fairnas", b="spos")
    half = stats.t.ppf(0.975, 2) * reps.std(ddof=1) * np.sqrt(3 / 2)
    assert rt.ci_low == pytest.approx(r.diff - half, abs=1e-12)
    assert rt.ci_high == pytest.approx(r.diff + half, abs=1e-12)


def test_deterministic_and_truth_per_seed():
    rng = np.random.default_rng(4)
    truth = {s: np.round(rng.normal(size=n), 1) for s, n in ((0, 40), (1, 35), (2, 50))}
    sa = {s: t + rng.normal(size=t.size) for s, t in truth.items()}
    sb = {s: rng.normal(size=t.size) for s, t in truth.items()}
    r1 = P.paired_tau_difference(sa, sb, truth, n_boot=300, seed=1)
    r2 = P.paired_tau_difference(sa, sb, truth, n_boot=300, seed=1)
    assert r1 == r2 and r1.n_archs == 35 and r1.n_seeds == 3
    with pytest.raises(ValueError, match="same architectures"):
        P.paired_tau_difference(sa, {0: sb[0][:10], 1: sb[1], 2: sb[2]}, truth)


def test_timing_300_archs_3_seeds_2000_replicates():
    """The spec's budget: a 300 x 3 x 2000 bootstrap in a few seconds (measured 0.1-0.2 s on 2 busy cores)."""
    import time

    a, b, g = simulate(np.random.default_rng(0), 3)
    t0 = time.perf_counter()
    P.paired_tau_difference(a, b, g, n_boot=2000)
    assert time.perf_counter() - t0 < 5.0


# --------------------------------------------------------------------------- verdicts


def test_fewer_than_three_seeds_is_never_a_verdict():
    rng = np.random.default_rng(0)
    a, b, g = simulate(rng, 2, mu_a=0.8, mu_b=0.0, seed_sd=0.01)  # a huge, clean difference
    r = P.paired_tau_difference(a, b, g, n_boot=300, a="fairnas", b="spos")
    assert r.verdict == "not distinguishable (< 3 seeds)"
    assert r.n_seeds == 2 and np.isfinite(r.ci_low) and np.isfinite(r.ci_high) and r.ci_low < r.diff < r.ci_high
    one = P.paired_tau_difference({0: a[0]}, {0: b[0]}, g, n_boot=300)
    assert one.verdict == "not distinguishable (< 3 seeds)" and np.isnan(one.ci_low) and np.isfinite(one.diff)
    none = P.paired_tau_difference({0: a[0]}, {1: b[1]}, g, n_boot=300)
    assert none.n_seeds == 0 and none.verdict == "not distinguishable (< 3 seeds)" and np.isnan(none.diff)


def test_clear_difference_names_the_winner_with_the_real_names():
    rng = np.random.default_rng(1)
    a, b, g = simulate(rng, 4, mu_a=0.7, mu_b=0.1, seed_sd=0.03)
    assert P.paired_tau_difference(a, b, g, n_boot=300, a="fairnas", b="spos").verdict == "fairnas > spos (95 %)"
    assert P.paired_tau_difference(b, a, g, n_boot=300, a="spos", b="fairnas").verdict == "fairnas > spos (95 %)"
    assert P.paired_tau_difference(a, b, g, n_boot=300, level=0.9, a="x", b="y").verdict == "x > y (90 %)"


def test_sign_rule_overrides_an_interval_that_excludes_zero():
    assert P._verdict("a", "b", np.array([0.3, 0.3, -0.01]), 0.05, 0.5, 0.95) == "not distinguishable"
    assert P._verdict("a", "b", np.array([0.3, 0.3, 0.01]), 0.05, 0.5, 0.95) == "a > b (95 %)"
    assert P._verdict("a", "b", np.array([-0.3, -0.2, -0.1]), -0.5, -0.05, 0.95) == "b > a (95 %)"
    assert P._verdict("a", "b", np.array([-0.3, -0.2, -0.1]), -0.5, 0.05, 0.95) == "not distinguishable"


def test_the_note_says_intervals_are_unadjusted():
    assert "not adjusted for multiple comparisons" in P.MULTIPLE_COMPARISONS_NOTE
    assert "Nothing is adjusted for multiple comparisons" in P.__doc__


# --------------------------------------------------------------------------- error rates


def test_simulation_has_the_measured_noise():
    rng = np.random.default_rng(0)
    taus = []
    for _ in range(60):
        a, _, g = simulate(rng, 3)
        taus += [M.kendall_tau(a[s], g) - MU for s in a]
    assert 0.10 < np.std(taus) < 0.14
    assert abs(np.mean(taus)) < 0.03


@pytest.mark.parametrize("base_seed", [0, pytest.param(1, marks=pytest.mark.slow),
                                       pytest.param(2, marks=pytest.mark.slow),
                                       pytest.param(3, marks=pytest.mark.slow)])
def test_null_false_positive_rate(base_seed):
    """Equal methods, 3 seeds, 300 archs: at most 7 % of 200 trials called different.

    Measured (400 replicates): 1.5 / 2.5 / 1.5 / 1.5 % for base seeds 0-3.
    """
    assert call_rate(base_seed, 200, 3, 0.0) <= 0.07


def test_plain_percentile_interval_is_anti_conservative_with_3_seeds():
    """Why the t correction exists: the percentile interval calls ~20 % of equal methods
    different at 3 seeds (19.5-23.5 % over 200 trials x 4 base seeds)."""
    assert call_rate(0, 100, 3, 0.0, n_boot=300, ci="percentile") > 0.10


def test_real_difference_of_0_2_with_5_seeds():
    """A true difference of 0.2 is not reliably detectable with this noise: measured 16.5 %
    with 3 seeds, 45.5 % with 5, 38 % with 8 (200 trials; the sign rule caps it at p**n, with
    p = P(d_s > 0) ~ 0.87). The bound is conservative for 100 trials at ~45 %."""
    assert call_rate(10, 100, 5, 0.2) >= 0.30


def test_real_difference_of_0_3_with_5_seeds_is_detected_in_most_trials():
    """Measured 77.5 % (200 trials; 35.5 % with 3 seeds)."""
    assert call_rate(10, 100, 5, 0.3) >= 0.60


# --------------------------------------------------------------------------- tables


def test_default_pairs():
    assert P.default_pairs(["spos", "params", "fairnas", "random"]) == [
        ("spos", "params"), ("fairnas", "spos"), ("fairnas", "params"), ("random", "spos"), ("random", "params")]
    assert P.default_pairs(["fairnas", "random"]) == []
    assert P.default_pairs(["spos", "fairnas"], extra=["fairnas:spos", "kshot:fairnas", ("a", "b"), "x:x"]) == [
        ("fairnas", "spos"), ("kshot", "fairnas"), ("a", "b")]
    with pytest.raises(ConfigError, match="METHOD_A:METHOD_B"):
        P.default_pairs(["spos"], extra=["fairnas"])


def _estimates(rng, methods, seeds, n=60, strength=None, truth=None):
    archs = [f"arch{i}" for i in range(n)]
    truth = truth or dict(zip(archs, np.round(rng.normal(size=n), 1)))
    g = np.array(list(truth.values()))
    rows = []
    for m in methods:
        for s in seeds:
            score = (strength or {}).get(m, 0.5) * g + rng.normal(size=n)
            rows += [{"method": m, "seed": s, "subset": "scored", "arch_index": i, "arch": a, "score": v}
                     for i, (a, v) in enumerate(zip(archs, score))]
            rows.append({"method": m, "seed": s, "subset": "reference", "arch_index": 0, "arch": "ref", "score": 1.0})
    return pd.DataFrame(rows), truth


def test_paired_table_columns_and_values():
    rng = np.random.default_rng(0)
    est, truth = _estimates(rng, ["spos", "params", "fairnas"], [0, 1, 2], strength={"fairnas": 3.0, "spos": 0.3})
    est = est[~((est["method"] == "params") & (est["seed"] == 2))]  # params misses a seed
    pairs = P.default_pairs(["spos", "params", "fairnas"])
    df = P.paired_table(est, truth, pairs, gt="cifar10", n_boot=300)
    assert list(df.columns) == P.TABLE_COLUMNS and len(df) == 3
    row = df[(df["a"] == "fairnas") & (df["b"] == "spos")].iloc[0]
    assert row["gt"] == "cifar10" and row["n_seeds"] == 3 and row["n_archs"] == 60
    assert row["verdict"] == "fairnas > spos (95 %)"
    assert row["per_seed"].count("/") == 2 and all(p.startswith("+") for p in row["per_seed"].split("/"))
    sub = est[est["subset"] == "scored"]
    g = np.array(list(truth.values()))
    score = lambda m, s: sub[(sub.method == m) & (sub.seed == s)]["score"].to_numpy()  # noqa: E731
    per = [M.kendall_tau(score("fairnas", s), g) - M.kendall_tau(score("spos", s), g) for s in (0, 1, 2)]
    assert row["diff"] == pytest.approx(np.mean(per), abs=1e-12)
    assert row["per_seed"] == "/".join(f"{d:+.2f}" for d in per)
    assert df[df["b"] == "params"]["n_seeds"].tolist() == [2, 2]
    assert (df[df["b"] == "params"]["verdict"] == "not distinguishable (< 3 seeds)").all()
    # a truth function gives the same table as the dict
    fn_df = P.paired_table(est, lambda archs: [truth[a] for a in archs], pairs, gt="cifar10", n_boot=300)
    pd.testing.assert_frame_equal(df, fn_df)


def test_compare_pairs_the_same_method_across_runs(capsys):
    rng = np.random.default_rng(1)
    est_a, truth = _estimates(rng, ["spos", "params"], [0, 1, 2, 3], strength={"spos": 0.1})
    est_b, _ = _estimates(rng, ["spos", "fairnas"], [1, 2, 3, 4], strength={"spos": 3.0}, truth=truth)
    # run B listed the architectures in another order: its arch_index differs from A's, the strings match
    est_b["arch_index"] = 59 - est_b["arch_index"]
    est_b = est_b.iloc[::-1]
    run_a = SimpleNamespace(estimates=est_a, gt_map=truth, gt_column="c10")
    run_b = SimpleNamespace(estimates=est_b, gt_map=dict(truth), gt_column="c10")
    df, notes = check.paired_compare(run_a, run_b, n_boot=300)
    assert df[["a", "b"]].values.tolist() == [["spos (A)", "spos (B)"]]
    row = df.iloc[0]
    assert row["n_seeds"] == 3 and row["n_archs"] == 60 and row["verdict"] == "spos (B) > spos (A) (95 %)"
    assert any("not adjusted for multiple comparisons" in n for n in notes)
    text = check.format_paired(df)
    assert "spos (B) > spos (A)" in text
    only_a, notes = check.paired_compare(run_a, SimpleNamespace(estimates=est_b, gt_map=None, gt_column="c10"))
    assert len(only_a) == 1 and only_a.iloc[0]["diff"] == row["diff"]  # A's ground truth suffices
    none, notes = check.paired_compare(SimpleNamespace(estimates=est_a, gt_map=None, gt_column="c10"),
                                       SimpleNamespace(estimates=est_b, gt_map=None, gt_column="c10"))
    assert none.empty and "ground truth unavailable" in notes[0]
