"""Paired comparisons between two methods: is A's Kendall tau really higher than B's?

Why paired, and why hierarchical
    Two methods scored on the same seed see the same architecture list and the same ground
    truth, so the honest unit of comparison is the per-seed difference
    ``d_s = tau(A_s, GT) - tau(B_s, GT)`` and the statistic is its mean over the seeds both
    methods have. Its uncertainty has two sources, and the first one dominates: (1) the seed
    (one method's tau across 3 seeds can read 0.44, 0.19, 0.43) and (2) which architectures
    happen to be in the benchmark (300 architectures alone give about +-0.04). A bootstrap over
    architectures only would therefore claim far too much. Each bootstrap replicate here
    resamples seeds with replacement (the same seed for both methods), then within every drawn
    seed resamples architectures with replacement (the same indices for A, B and the truth),
    and recomputes the mean of the paired tau differences.

Why a t interval around the bootstrap, not the plain percentile interval
    With 3 seeds the percentile interval of that bootstrap is anti-conservative: resampling 3
    values underestimates the seed-level variance by (n-1)/n and its distribution is very
    discrete (all three draws equal to the smallest difference already has probability
    1/27 > 2.5 %, so the lower 2.5 % quantile is about min(d_s)). Measured on the null
    simulation of ``tests/harness/test_paired.py`` (3 seeds, 300 architectures, per-seed tau
    std 0.12 for each method, independent between methods; 200 trials x 4 base seeds,
    400 replicates), the percentile interval with the sign rule below called about 22 % of
    equal methods different (23.5 / 21.5 / 23 / 19.5 % per base seed; 5 % with 5 seeds).
    The default interval (``ci="t"``) keeps the hierarchical bootstrap at its core but uses it
    only for the standard error: ``se = sd(replicates) * sqrt(n/(n-1))`` (undoing the
    (n-1)/n shrinkage) and ``CI = diff +- t_{n-1, 1-(1-level)/2} * se`` (Student t on
    n_seeds-1 degrees of freedom: 12.7 at 2 seeds, 4.30 at 3, 2.78 at 5). On the same null it
    called 1.5 / 2.5 / 1.5 / 1.5 % different (1.5 % with 5 seeds): conservative against the
    nominal 5 %, because the architecture noise is counted twice (once in the observed
    per-seed differences, once by the resampling; the se is ~9 % above a classical paired
    t-test's in the median). A classical paired t-test on the d_s would sit at 5 % (4.75 %
    measured) with barely more power (below), but it ignores the architecture level.

Verdict rule
    ``"A > B (95 %)"`` only when the interval excludes 0 *and* every seed's difference has the
    same sign; symmetric for B > A; otherwise ``"not distinguishable"``. With fewer than 3
    seeds always ``"not distinguishable (< 3 seeds)"`` (the interval is still reported).
    The sign rule protects against one outlying seed carrying the mean, but it caps power:
    with p = P(d_s > 0) all n seeds agree with probability p**n, so more seeds help the
    interval and hurt the sign rule.

What it can detect (measured, same simulation, t interval + sign rule, 200 trials)
    A true tau difference of 0.2 (per-seed difference std about 0.17) is *not* reliably
    detected with 3 seeds: 16.5-17.5 % of trials (two base seeds). With 5 seeds 43.5-45.5 %,
    with 8 38 %, with 10 31 %: the sign rule caps it near p**n with p = P(d_s > 0) ~ 0.87
    (p**5 = 0.51). A difference of 0.3 is found in 35.5 % of trials with 3 seeds and
    76.5-77.5 % with 5. (Classical paired t + sign rule: 22 % / 46 % for 0.2 at 3 / 5 seeds.)
    So "not distinguishable" with 3 seeds means "not shown", not "equal"; showing a 0.2
    difference at this seed noise needs about 5 seeds and even then succeeds about half the time.

Multiple comparisons
    Every interval is for one pair on its own. Nothing is adjusted for multiple comparisons:
    with many pairs some will look different by chance (:data:`MULTIPLE_COMPARISONS_NOTE`).

Ties
    Resampling duplicates architectures, so every replicate has ties in scores and truth; the
    statistic is tau-b, as :func:`harness.metrics.kendall_tau` computes it (same NaN rules:
    non-finite truth dropped, NaN score = worst). Point estimates use that function directly;
    the replicates use an exact vectorised form (see :func:`resampled_tau_b`) that agrees with
    ``scipy.stats.kendalltau`` to ~1e-15.

Speed
    One 300 archs x 3 seeds x 2000 replicates comparison takes 0.1-0.2 s on 2 busy CPU cores
    (a scipy loop: about 6 s). Replicates are quadratic forms of resample counts over n x n
    sign matrices, one matmul per seed (two when both methods' scores have ties); above
    VECTOR_MAX_N architectures per seed it falls back to scipy per replicate.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats

from harness import metrics as M
from harness.core.errors import ConfigError

__all__ = [
    "CI_METHODS",
    "MIN_SEEDS",
    "MULTIPLE_COMPARISONS_NOTE",
    "PairedResult",
    "default_pairs",
    "draw_hierarchical",
    "hierarchical_replicates",
    "paired_table",
    "paired_tau_difference",
    "parse_pair",
    "resampled_tau_b",
]

MULTIPLE_COMPARISONS_NOTE = (
    "Confidence intervals are per pair and not adjusted for multiple comparisons: "
    "with many pairs, some will look different by chance."
)
MIN_SEEDS = 3  # below this no verdict: 2 seeds cannot tell a method effect from seed luck
CI_METHODS = ("t", "percentile")
# Up to this many architectures per seed, replicates are computed as quadratic forms over n x n
# sign matrices (one BLAS matmul for all replicates); above it memory (n^2 floats) and flops
# (n^2 per replicate) lose to scipy's O(n log n) per replicate, so it loops over scipy instead.
VECTOR_MAX_N = 1000
_CHUNK = 2048  # replicate rows per matmul block (bounds memory at _CHUNK x n floats)
TABLE_COLUMNS = ["a", "b", "gt", "n_seeds", "n_archs", "diff", "ci_low", "ci_high", "verdict", "per_seed"]


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class PairedResult:
    """One paired comparison of method A against method B (difference = A - B in Kendall tau).

    ``per_seed`` holds d_s for each seed in ``seeds`` (sorted); ``tau_a`` / ``tau_b`` the
    per-seed taus behind them. ``n_archs`` is the number of architectures per seed (the
    smallest one when seeds differ). ``ci_low``/``ci_high`` are a ``level`` interval for the
    mean difference built as ``ci_method`` says (see the module docstring). ``se`` is the
    hierarchical-bootstrap standard error, inflated by sqrt(n/(n-1)).
    ``boot_share_positive`` is the share of bootstrap replicates with A - B > 0: descriptive
    only, not a p-value (it is anti-conservative with few seeds, like the percentile interval).
    Intervals are not adjusted for multiple comparisons.
    """

    a: str
    b: str
    n_seeds: int
    n_archs: int
    diff: float
    per_seed: tuple[float, ...]
    ci_low: float
    ci_high: float
    level: float
    verdict: str
    seeds: tuple = ()
    tau_a: tuple[float, ...] = ()
    tau_b: tuple[float, ...] = ()
    se: float = math.nan
    boot_share_positive: float = math.nan
    n_boot: int = 0
    ci_method: str = "t"

    @property
    def per_seed_text(self) -> str:
        """Per-seed differences as ``"+0.12/-0.03/+0.20"`` (seed order), for tables."""
        return "/".join(f"{d:+.2f}" for d in self.per_seed)


# --------------------------------------------------------------------------- vectorised tau-b


def _sign_matrix(x: np.ndarray) -> np.ndarray:
    """S[i, j] = sign(x_i - x_j), by comparisons so that -inf vs -inf is a tie (0), not NaN."""
    return (x[:, None] > x[None, :]).astype(np.float64) - (x[:, None] < x[None, :])


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of n positions appears in each row of idx, shape (rows, n), float64."""
    rows = idx.shape[0]
    flat = (idx + n * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


_F32_MAX_N = 4096  # N^2 <= 2^24: every partial sum below is an integer float32 holds exactly


def _matrix_dtype(n: int) -> type:
    return np.float32 if n <= _F32_MAX_N else np.float64


def _quad(c: np.ndarray, mat: np.ndarray) -> np.ndarray:
    """Row-wise c_r^T mat c_r, exact: integer counts and a {-1, 0, 1} matrix keep every partial
    sum an integer of at most N^2, so float32 (2x faster matmul) is exact up to n = 4096."""
    return np.einsum("ri,ri->r", (c.astype(mat.dtype) @ mat).astype(np.float64), c)


def _untied(c: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Row-wise number of ordered pairs of draws not tied: N^2 - sum over tie groups of
    (group count)^2, which is c^T |S| c without a matmul. ``groups=None``: no ties."""
    if groups is None:
        return c.sum(axis=1) ** 2 - (c * c).sum(axis=1)
    k, n_groups = c.shape[0], int(groups.max()) + 1
    flat = (groups[None, :] + n_groups * np.arange(k)[:, None]).ravel()
    sums = np.bincount(flat, weights=c.ravel(), minlength=k * n_groups).reshape(k, n_groups)
    return c.sum(axis=1) ** 2 - (sums * sums).sum(axis=1)


def _tie_groups(x: np.ndarray) -> np.ndarray | None:
    """Label of each value's tie group (equal values share one), or None when all differ."""
    _, labels = np.unique(x, return_inverse=True)
    return labels.ravel() if labels.max(initial=-1) + 1 < x.size else None


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / sqrt(den); NaN where den is 0 (a constant side: tau undefined, as in scipy)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / np.sqrt(den)
    out[~(den > 0)] = np.nan
    return out


class _TauB:
    """Tau-b of a fixed (x, y) pair under many architecture resamples, as quadratic forms.

    A resample is a count vector c (c_i copies of architecture i). Over the ordered pairs of its
    draws, concordant - discordant = c^T (Sx * Sy) c, and the pairs untied in x = c^T |Sx| c
    (copies of one architecture tie in both: sign 0), so
    tau_b = c^T (Sx*Sy) c / sqrt(c^T |Sx| c * c^T |Sy| c): exact, one matmul for all
    replicates. c^T |Sx| c = N^2 - sum over tie groups of their count^2 needs no matmul.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.conc = (_sign_matrix(x) * _sign_matrix(y)).astype(_matrix_dtype(x.size))
        self.groups_x = _tie_groups(x)
        self.groups_y = _tie_groups(y)

    def __call__(self, c: np.ndarray, ty: np.ndarray | None = None) -> np.ndarray:
        ty = _untied(c, self.groups_y) if ty is None else ty
        return _ratio(_quad(c, self.conc), _untied(c, self.groups_x) * ty)


def _clean_scores(pred: np.ndarray) -> np.ndarray:
    """harness.metrics' NaN rule for scores: NaN -> -inf (the worst prediction)."""
    return np.where(np.isnan(pred), -np.inf, pred)


def resampled_tau_b(
    x: npt.ArrayLike, y: npt.ArrayLike, idx: npt.ArrayLike, *, vectorized: bool | None = None
) -> np.ndarray:
    """Kendall tau-b of ``(x[idx[r]], y[idx[r]])`` for every row r of idx (shape (R, m)).

    Exists so a bootstrap does not call scipy R times: for n <= VECTOR_MAX_N it uses the
    quadratic-form identity of :class:`_TauB` (exact, ties included), above that a loop over
    ``scipy.stats.kendalltau``. ``vectorized`` forces one path (tests compare them).
    Inputs are used as given (no NaN cleaning); a row whose x or y is constant gives NaN.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    idx = np.atleast_2d(np.asarray(idx, dtype=np.int64))
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got {x.shape} and {y.shape}")
    use_vec = x.size <= VECTOR_MAX_N if vectorized is None else vectorized
    if not use_vec:
        return _loop_tau_b(x, y, idx)
    tau = _TauB(x, y)
    out = np.empty(idx.shape[0])
    for start in range(0, idx.shape[0], _CHUNK):
        out[start:start + _CHUNK] = tau(_counts(idx[start:start + _CHUNK], x.size))
    return out


def _loop_tau_b(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    out = np.empty(idx.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant resample -> NaN
        for r, row in enumerate(idx):
            out[r] = stats.kendalltau(x[row], y[row]).statistic
    return out


# --------------------------------------------------------------------------- the bootstrap


def draw_hierarchical(
    n_archs: Sequence[int], n_boot: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Draw the resample indices of a paired hierarchical bootstrap.

    Returns ``seed_draws`` (n_boot, n_seeds): seed positions drawn with replacement for each
    replicate, and ``arch_draws``: for each seed position s an int array (k_s, n_archs[s]);
    row j is the architecture resample of the j-th occurrence of s in ``seed_draws`` read in
    row-major order. One draw serves A, B and the truth, which is what makes it paired.
    """
    m = len(n_archs)
    seed_draws = rng.integers(0, m, size=(n_boot, m))
    occurrences = np.bincount(seed_draws.ravel(), minlength=m)
    arch_draws = [rng.integers(0, n, size=(int(k), n)) for n, k in zip(n_archs, occurrences)]
    return seed_draws, arch_draws


def hierarchical_replicates(
    scores_a: Sequence[np.ndarray], scores_b: Sequence[np.ndarray], truth: Sequence[np.ndarray],
    seed_draws: np.ndarray, arch_draws: Sequence[np.ndarray], *, vectorized: bool | None = None,
) -> np.ndarray:
    """Replicate values mean_j[tau(A_{s_j}*, G*) - tau(B_{s_j}*, G*)] for given draws.

    Inputs are per seed position (lists, cleaned: finite truth), draws as
    :func:`draw_hierarchical` returns them. Each seed's architecture resamples are evaluated
    in one vectorised batch and scattered back to their (replicate, draw) slots.
    """
    seed_draws = np.asarray(seed_draws)
    flat = seed_draws.ravel()
    d = np.full(flat.shape, np.nan)
    for s, (a, b, g) in enumerate(zip(scores_a, scores_b, truth)):
        where = np.flatnonzero(flat == s)
        idx = np.asarray(arch_draws[s])
        if where.size != idx.shape[0]:
            raise ValueError(f"seed position {s}: {where.size} draws but {idx.shape[0]} architecture resamples")
        if not where.size:
            continue
        use_vec = g.size <= VECTOR_MAX_N if vectorized is None else vectorized
        if use_vec:
            ta, tb = _TauB(a, g), _TauB(b, g)
            # scores without ties on both sides share one denominator: then a single matmul
            # with the difference of the concordance matrices gives tau_A - tau_B directly
            one = ta.groups_x is None and tb.groups_x is None
            conc_diff = ta.conc - tb.conc if one else None
            vals = np.empty(where.size)
            for start in range(0, where.size, _CHUNK):
                c = _counts(idx[start:start + _CHUNK], g.size)
                ty = _untied(c, ta.groups_y)  # the truth's untied pairs, shared by A and B
                if one:
                    vals[start:start + _CHUNK] = _ratio(_quad(c, conc_diff), _untied(c, None) * ty)
                else:
                    vals[start:start + _CHUNK] = ta(c, ty) - tb(c, ty)
        else:
            vals = _loop_tau_b(a, g, idx) - _loop_tau_b(b, g, idx)
        d[where] = vals
    return d.reshape(seed_draws.shape).mean(axis=1)


# --------------------------------------------------------------------------- the comparison


def _level_text(level: float) -> str:
    return f"{level * 100:g} %"


def _verdict(a: str, b: str, per_seed: np.ndarray, lo: float, hi: float, level: float) -> str:
    if per_seed.size < MIN_SEEDS:
        return f"not distinguishable (< {MIN_SEEDS} seeds)"
    if np.isfinite(lo) and lo > 0 and (per_seed > 0).all():
        return f"{a} > {b} ({_level_text(level)})"
    if np.isfinite(hi) and hi < 0 and (per_seed < 0).all():
        return f"{b} > {a} ({_level_text(level)})"
    return "not distinguishable"


def _per_seed_inputs(scores_a, scores_b, truth):
    seeds = sorted(set(scores_a) & set(scores_b))
    if isinstance(truth, Mapping):
        seeds = [s for s in seeds if s in truth]
    out = []
    for s in seeds:
        a = np.asarray(scores_a[s], dtype=np.float64)
        b = np.asarray(scores_b[s], dtype=np.float64)
        g = np.asarray(truth[s] if isinstance(truth, Mapping) else truth, dtype=np.float64)
        if not (a.ndim == b.ndim == g.ndim == 1) or not (a.size == b.size == g.size):
            raise ValueError(f"seed {s}: scores_a, scores_b and truth must be 1-D over the same architectures, "
                             f"got lengths {a.size}, {b.size}, {g.size}")
        out.append((s, a, b, g))
    return out


def paired_tau_difference(
    scores_a: Mapping[object, npt.ArrayLike],
    scores_b: Mapping[object, npt.ArrayLike],
    truth: npt.ArrayLike | Mapping[object, npt.ArrayLike],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    a: str = "A",
    b: str = "B",
    ci: str = "t",
    vectorized: bool | None = None,
) -> PairedResult:
    """Mean over seeds of tau(A_s, GT) - tau(B_s, GT), with a paired hierarchical-bootstrap CI.

    ``scores_a`` / ``scores_b``: seed -> 1-D scores over the same architecture list (same order)
    for that seed; ``truth``: the ground truth of that list, or seed -> array when the lists
    differ per seed. Only seeds present in both (and in ``truth`` when it is a dict) are used,
    in sorted order; a seed where either tau is undefined (NaN, e.g. constant scores) is left
    out, as :func:`harness.metrics.summarize_seeds` leaves out failed seeds; so is a bootstrap
    replicate with an undefined tau (a resample with constant scores or truth, tiny sets only).

    ``ci="t"`` (default): diff +- t_{n-1} * se with the bootstrap se inflated by sqrt(n/(n-1));
    ``ci="percentile"``: the plain percentile interval, kept to measure how anti-conservative it
    is (module docstring). With a single seed no seed-level interval exists: ci is (nan, nan).
    Verdict: see the module docstring; fewer than MIN_SEEDS seeds is never a verdict.
    Not adjusted for multiple comparisons. Deterministic for a given ``seed``.
    """
    if ci not in CI_METHODS:
        raise ValueError(f"ci={ci!r}: choose one of {CI_METHODS}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level!r} must be in (0, 1)")
    if int(n_boot) < 2:
        raise ValueError(f"n_boot={n_boot!r} must be an int >= 2")
    seeds, taus_a, taus_b, xs_a, xs_b, gs = [], [], [], [], [], []
    for s, sa, sb, g in _per_seed_inputs(scores_a, scores_b, truth):
        ta, tb = M.kendall_tau(sa, g), M.kendall_tau(sb, g)
        if not (np.isfinite(ta) and np.isfinite(tb)):
            continue
        keep = np.isfinite(g)
        seeds.append(s)
        taus_a.append(ta)
        taus_b.append(tb)
        xs_a.append(_clean_scores(sa[keep]))
        xs_b.append(_clean_scores(sb[keep]))
        gs.append(g[keep])
    per_seed = np.asarray(taus_a) - np.asarray(taus_b)
    m = len(seeds)
    n_archs = min((g.size for g in gs), default=0)
    diff = float(per_seed.mean()) if m else math.nan
    lo = hi = se = share = math.nan
    if m:
        rng = np.random.default_rng(seed)
        seed_draws, arch_draws = draw_hierarchical([g.size for g in gs], int(n_boot), rng)
        reps = hierarchical_replicates(xs_a, xs_b, gs, seed_draws, arch_draws, vectorized=vectorized)
        reps = reps[np.isfinite(reps)]
        if reps.size >= 2:
            share = float((reps > 0).mean())
            if m >= 2:
                se = float(reps.std(ddof=1) * math.sqrt(m / (m - 1)))
            if ci == "percentile":
                alpha = 1.0 - level
                lo, hi = (float(v) for v in np.quantile(reps, [alpha / 2, 1 - alpha / 2]))
            elif m >= 2:
                half = float(stats.t.ppf(1 - (1 - level) / 2, df=m - 1)) * se
                lo, hi = diff - half, diff + half
    return PairedResult(
        a=a, b=b, n_seeds=m, n_archs=int(n_archs), diff=diff, per_seed=tuple(map(float, per_seed)),
        ci_low=lo, ci_high=hi, level=float(level), verdict=_verdict(a, b, per_seed, lo, hi, level),
        seeds=tuple(seeds), tau_a=tuple(map(float, taus_a)), tau_b=tuple(map(float, taus_b)), se=se,
        boot_share_positive=share, n_boot=int(n_boot), ci_method=ci,
    )


# --------------------------------------------------------------------------- tables


def parse_pair(text: str | tuple[str, str]) -> tuple[str, str]:
    """``"A:B"`` (or a 2-tuple) -> (A, B); a ConfigError names a malformed pair."""
    if isinstance(text, tuple):
        if len(text) != 2:
            raise ConfigError(f"pair {text!r} must have two methods")
        return str(text[0]), str(text[1])
    left, sep, right = str(text).partition(":")
    if not sep or not left.strip() or not right.strip() or ":" in right:
        raise ConfigError(f"malformed pair '{text}': write METHOD_A:METHOD_B, e.g. fairnas:spos")
    return left.strip(), right.strip()


def default_pairs(methods: Iterable[str], extra: Iterable[str | tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """Every method against ``spos`` and against ``params`` (the supernet baseline and the
    zero-cost baseline a supernet must beat), where present; then the user's ``"A:B"`` pairs.

    Self-pairs are skipped, and so is a pair already listed in either order (spos vs params
    appears once). Extra pairs may name methods outside ``methods`` (the table then shows no
    shared seeds for them).
    """
    methods = list(dict.fromkeys(methods))
    out: list[tuple[str, str]] = []
    seen: set[frozenset] = set()

    def add(pair: tuple[str, str]) -> None:
        key = frozenset(pair)
        if pair[0] != pair[1] and key not in seen:
            seen.add(key)
            out.append(pair)

    for m in methods:
        for base in ("spos", "params"):
            if base in methods:
                add((m, base))
    for p in extra:
        add(parse_pair(p))
    return out


def _truth_lookup(truth_fn: Callable[[list[str]], npt.ArrayLike] | Mapping[str, float],
                  archs: list[str]) -> dict[str, float]:
    if isinstance(truth_fn, Mapping):
        return {a: float(truth_fn.get(a, math.nan)) for a in archs}
    values = np.asarray(truth_fn(list(archs)), dtype=np.float64)
    if values.shape != (len(archs),):
        raise ValueError(f"truth_fn returned shape {values.shape} for {len(archs)} architectures")
    return dict(zip(archs, values.tolist()))


def paired_table(
    estimates: pd.DataFrame,
    truth_fn: Callable[[list[str]], npt.ArrayLike] | Mapping[str, float],
    pairs: Iterable[str | tuple[str, str]],
    *,
    gt: str = "",
    subset: str = "scored",
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    ci: str = "t",
) -> pd.DataFrame:
    """One row per pair (A, B) from a run's estimates.csv (columns method, seed, subset,
    arch_index, arch, score): the paired tau difference A - B on the seeds and architectures
    both methods scored (rows of ``subset``, matched on seed, arch_index and arch).

    ``truth_fn`` maps a list of arch strings to ground-truth values (or is a dict arch -> value;
    missing archs are NaN and dropped, as in harness.metrics); it is called once for all archs.
    ``gt`` only labels the column. Columns: :data:`TABLE_COLUMNS`. Not adjusted for multiple
    comparisons (:data:`MULTIPLE_COMPARISONS_NOTE`).
    """
    pairs = [parse_pair(p) for p in pairs]
    est = estimates[estimates["subset"] == subset] if "subset" in estimates.columns else estimates
    est = est[["method", "seed", "arch_index", "arch", "score"]]
    truth = _truth_lookup(truth_fn, list(dict.fromkeys(est["arch"].astype(str)))) if len(est) else {}
    rows = []
    for a, b in pairs:
        ea, eb = est[est["method"] == a], est[est["method"] == b]
        both = ea.merge(eb, on=["seed", "arch_index", "arch"], suffixes=("_a", "_b")).sort_values(
            ["seed", "arch_index"], kind="stable")
        sa, sb, g = {}, {}, {}
        for s, grp in both.groupby("seed", sort=True):
            sa[s] = grp["score_a"].to_numpy(dtype=np.float64)
            sb[s] = grp["score_b"].to_numpy(dtype=np.float64)
            g[s] = np.array([truth[str(x)] for x in grp["arch"]], dtype=np.float64)
        r = paired_tau_difference(sa, sb, g, n_boot=n_boot, seed=seed, level=level, a=a, b=b, ci=ci)
        rows.append({"a": a, "b": b, "gt": gt, "n_seeds": r.n_seeds, "n_archs": r.n_archs, "diff": r.diff,
                     "ci_low": r.ci_low, "ci_high": r.ci_high, "verdict": r.verdict, "per_seed": r.per_seed_text})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)
