"""SE-NAS: shrinking-and-expanding supernet (Hu et al., "Improving One-Shot NAS with Shrinking-and-
Expanding Supernet", Pattern Recognition 2021; Algorithm 1).

The budget's training images are split over ``stages + 1`` training stages (equal shares by
default, ``stage_fractions`` otherwise). Each stage is plain SPOS training (uniform single path, its
own SGD + cosine schedule, as the paper trains the shrunk supernet "identically to the initial
training") over the *current* space, continuing the run's data order. After each of the first
``stages`` stages:

1. **Evaluation stability (Eq. 4)** - ``snapshots`` (K) weight snapshots taken at evenly spaced
   iterations of the stage's last epoch are averaged; P(a) is an architecture's accuracy under the
   averaged weights on ``eval_images`` images of the ``search`` split (never the reserved ``score``
   subset), a seeded uniform draw fixed for the job. Not a prefix of the split: the CIFAR-10 JPEG
   source stores it class by class, and until issue 19 the first 1,024 images were all class 0, so
   P(a) measured how often a path predicts that class (the committed study's SI values were
   0.11-0.14, near chance, while the same weights scored 0.5-0.7 on the balanced ``score`` subset).
2. **Selection importance (Eq. 5)** - SI_o = mean P(a) over sampled architectures that contain o. By
   default one shared sample of n architectures from the current space (each contributes to every
   operator it contains, so an NB201 operator gets about n/5; the whole current space when it holds
   <= n, and then SI is exact); ``si_sampling="per_operator"`` draws n architectures per operator
   (the paper's 1,000 at ImageNet scale, variant ``senas-paper``: 30 x 1,000 evaluations per stage on
   NB201, some 25x the training cost at `study`). SI's standard error (sd of the P(a) / sqrt(n_o);
   0 when enumerated) is recorded per operator; see *Noise* below for the default n.
3. **Selection confidence (Eq. 6)** - SC_o = Var(SI) over the operators still in o's decision
   (population variance).
4. **Score (Eq. 7)** - S_o = normalize(SI_o) / normalize(SC_o) with normalize(x) = x / mean(x) over all
   operators of the current space. The paper only says "mean normalisation"; dividing by the mean
   keeps both terms positive, so the ratio keeps its meaning (low importance and high confidence ->
   low score). Both means are global constants, so S_o = SI_o / SC_o x mean(SC) / mean(SI): the
   normalisation never changes the ranking (kept for fidelity; tested). SC = 0 is treated
   explicitly, not as +inf: a decision with one operator left, or whose operators' SI tie exactly,
   has no score and its operators are *protected* (recorded with the reason) - Eq. 7 is undefined
   there and there is no confidence to prune them. If fewer than k operators are prunable, fewer
   go (the stage records how many short and warns); +inf used to let k > prunable cut protected
   operators in index order. ``score_rule="si"`` scores by normalize(SI) alone (variant
   ``senas-si-only``, Table 6's "SPOS + Shrinking (SI)" row, so it also does not expand; compare it
   with ``senas-no-expand``, the "(SI + SC)" row).
5. **Shrinking** - the ``k`` operators with the lowest S_o over the whole space are removed, never a
   decision's last operator.
6. **Expanding** - adjacent decisions (consecutive decision indices) are merged shallow to deep while
   the product of their remaining choices stays <= T (``threshold``). Inside a merged group every
   combination of choices (a *partial model*) gets its own copy of the weights of its operators,
   initialised from the weights that path used until then (the shared weights on the first
   expansion). This is done by the operator factory: every candidate operator is a
   :class:`PartialModelOp` that wraps ``space.default_op(spec)`` and routes a forward pass to the copy
   named by the partial-model key in ``ctx`` (:class:`SenasCtx`, built from the architecture).

A final training stage always follows the last shrink/expand, so the copies diverge.

Scoring. ``subsets()["survivors"]`` is the shrunk space (enumerated when it holds <= 5,000
architectures, else a seeded sample), the set on which the paper measures tau. ``score(archs)`` on
the run's full architecture set ranks every architecture removed by shrinking below all survivors:
an architecture's tier is the shrink that removed it (later = higher), and inside a tier it is
ordered by its *last estimate*, its score under the snapshot-averaged weights of the last stage in
which it was still in the space (the weights that decided its removal), measured with the shared
evaluator on the ``score`` subset. Survivors are scored with the final stage's averaged weights
(Eq. 4 also drives the paper's final ranking; ``average_final=False`` uses the last weights).

The full-set tau is *tier-constructed*: removed architectures are ranked below every survivor by
construction, so it rewards the shrink order as much as the final supernet. It stays the number
paired with other methods (every method ranks the same set); the ``survivors`` subset's tau (the
final stage's space, listed in ``extra()["survivor_archs"]``, scored into ``scores.csv`` and reported
by aggregation as its own subset in ``metrics.csv`` and under the method's summary row) measures the
final supernet alone.

Noise. Per stage the history records each operator's SI standard error, the median SE, the median
SI difference between two operators of one decision and the share of such pairs whose difference
is below its standard error sqrt(SE_a^2 + SE_b^2). A removal whose SI is within that of the kept
operator of its decision nearest to it is a *close call*: ``extra()["warnings"]`` gets one line per
close call (and one per stage that removed fewer than k), with the numbers in the history.

The default n is 1,000 (100 before issue 19), chosen by measurement at `smoke` (the study's shapes,
3 epochs, seed 0; stage 0 over all 15,625 architectures): the median SI standard error was 0.0100 /
0.0052 / 0.0028 at n = 100 / 300 / 1,000 against a median SI difference between two operators of one
decision of 0.015 / 0.012 / 0.011, and 47 % / 37 % / 22 % of those pairs differed by less than their
standard error; at n = 1,000 stage 1's space (375) is enumerated, so its SI is exact. Cost: one P(a)
on 1,024 images costs about 3 training steps (0.21 CPU s against 0.066-0.075 s per step at these
shapes); at `study` n = 1,000 adds at most 2,000 evaluations to 19,500 steps (stage 0: 965 distinct,
stage 1: 375 at smoke), about 20-30 % of SPOS's training. Where the committed study's SE-NAS time went
(1,626 s against SPOS's 869 s, n = 100): stages 0 and 1 took 259 s and 333 s for 6,500 steps each
(median 0.81 and 1.05 s per 20 steps, SPOS 0.79), stage 2 878 s (median 2.52 s per 20 steps, 794 s
in intervals over 2 s, up to 19 s) with a smaller network, which no per-step work explains and which
the next job (stcnas) shows too, i.e. a loaded machine; P(a) took 11 s and 12 s, the curve points 109 s against SPOS's 80 s (no prefix
cache with a partial-model ``ctx``). In CPU time the three stages' training matches SPOS (16.5, 14.3,
7.9 s at smoke). Without the neighbours SE-NAS at n = 1,000 comes to about 1.2-1.35x SPOS's wall.

The shrink/merge history is written to ``<job_dir>/senas_history.json`` and summarised in ``extra()``.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.core.errors import ConfigError
from harness.engine.evaluator import SupernetEvaluator, SupernetScorer, check_not_collapsed, score_workers
from harness.spaces.base import Arch, OpSpec
from harness.core.io import write_json
from harness.engine.trainer import SupernetTrainer
from harness.engine.method import JobFailed, Method, MethodConfig, Scorer, register_method

# Per decision, the choice indices still in the (shrunk) space.
Alive = tuple[tuple[int, ...], ...]
Op = tuple[int, int]  # (decision, choice)

HISTORY_FILE = "senas_history.json"
TIER_GAP = 2.0  # scores lie in [0, 1 + 1/n) < 2: tiers offset by 2 never overlap
SURVIVORS_LISTED = 200  # survivor architectures listed in the job's extra (all are in scores.csv)
TAU_NOTE = ("tier-constructed: architectures removed by a shrink rank below every survivor, by the "
            "shrink that removed them, so the full-set tau rewards the shrink order as much as the final "
            "supernet; the `survivors` subset's tau measures the final supernet alone")


@dataclass(frozen=True)
class SenasConfig(MethodConfig):
    stages: int = 2  # shrink/expand steps (the paper: 2 on NB201); a final training stage follows
    stage_fractions: tuple[float, ...] = ()  # share of the budget per training stage; () = equal
    k: int = 10  # operators removed per shrink (the paper: 10 on NB201)
    threshold: int = 50  # T: merged groups hold at most T partial models (the paper: 50)
    expand: bool = True  # False: shrinking only (ablation)
    snapshots: int = 5  # K weight snapshots over the last epoch of a stage (Eq. 4)
    si_samples: int = 1000  # n architectures for SI (Eq. 5): shared sample, or per operator (was 100)
    si_sampling: str = "shared"  # "shared" | "per_operator" (the paper's protocol)
    score_rule: str = "si_sc"  # "si_sc": Eq. 7; "si": SI alone (Table 6's "Shrinking (SI)" row)
    eval_images: int = 1024  # search-split images for P(a) (a seeded class-mixed draw); 0 = all of it
    max_enumerate: int = 5000  # survivors subset: enumerated up to this size, else sampled
    survivor_sample: int = 1000
    average_final: bool = True  # score with the final stage's averaged weights (Eq. 4)
    label_smoothing: float = 0.0


# --- the shrunk space ---------------------------------------------------------------------------
def full_space(space) -> Alive:
    return tuple(tuple(space.allowed_choices(d)) for d in range(len(space.decisions)))


def alive_size(alive: Alive) -> int:
    return math.prod(len(a) for a in alive)


def contains(alive: Alive, arch: Arch) -> bool:
    return all(c in a for c, a in zip(arch, alive))


def enumerate_alive(alive: Alive, allowed: Callable[[Arch], bool] = lambda a: True) -> list[Arch]:
    return [a for a in itertools.product(*alive) if allowed(a)]


def sample_alive(alive: Alive, rng: np.random.Generator, allowed: Callable[[Arch], bool] = lambda a: True,
                 fixed: dict[int, int] | None = None, max_tries: int = 1000) -> Arch:
    """Uniform over the current space (choices of ``fixed`` decisions pinned); rejection for
    spaces with constraints."""
    for _ in range(max_tries):
        arch = tuple(int(a[rng.integers(len(a))]) for a in alive)
        if fixed:
            arch = tuple(fixed.get(d, c) for d, c in enumerate(arch))
        if allowed(arch):
            return arch
    raise JobFailed(f"could not sample an allowed architecture from the shrunk space in {max_tries} tries")


# --- operator scores (Eq. 5-7) and shrinking ------------------------------------------------------
@dataclass(frozen=True)
class OperatorScores:
    si: dict[Op, float]  # selection importance (Eq. 5)
    sc: dict[Op, float]  # selection confidence (Eq. 6)
    score: dict[Op, float]  # S_o (Eq. 7) of every operator that may be pruned
    protected: dict[Op, str] = dataclasses.field(default_factory=dict)  # not prunable, with the reason
    si_se: dict[Op, float] = dataclasses.field(default_factory=dict)  # standard error of SI_o (sampling)


def _normalize(values: dict[Op, float]) -> dict[Op, float]:
    """x / mean(x) over all operators of the space (positive mean normalisation)."""
    mean = float(np.mean(list(values.values()))) if values else 0.0
    if mean <= 0:
        return {o: 1.0 for o in values}
    return {o: v / mean for o, v in values.items()}


SC_ZERO = "SC = 0: every operator of the decision has the same SI, no confidence to prune it"
LAST_OP = "the decision's last operator"


def operator_scores(si: dict[Op, float], rule: str = "si_sc", si_se: dict[Op, float] | None = None) -> OperatorScores:
    """S_o = normalize(SI_o) / normalize(SC_o), SC_o = Var over o's decision of SI (Eq. 6-7).

    ``normalize`` divides by the mean over all operators of the space, i.e. by two global
    constants, so S_o = SI_o / SC_o x const: the normalisation never changes the ranking.
    SC_o = 0 is handled explicitly, not as +inf: a decision with one operator left, or whose
    operators' SI all tie exactly, gets no score and is ``protected`` (never pruned, whatever k).
    ``rule="si"`` (Table 6's SI-only ablation) scores by normalize(SI_o) alone; SC is still recorded.
    """
    by_decision: dict[int, list[float]] = {}
    for (d, _c), v in si.items():
        by_decision.setdefault(d, []).append(v)
    sc = {(d, c): float(np.var(by_decision[d])) for (d, c) in si}
    nsi, nsc = _normalize(si), _normalize(sc)
    protected = {o: LAST_OP for o in si if len(by_decision[o[0]]) == 1}
    if rule == "si":
        score = {o: nsi[o] for o in si if o not in protected}
    else:
        protected.update({o: SC_ZERO for o in si if o not in protected and sc[o] <= 0})
        score = {o: nsi[o] / nsc[o] for o in si if o not in protected}
    return OperatorScores(si=dict(si), sc=sc, score=score, protected=protected, si_se=dict(si_se or {}))


def shrink(alive: Alive, score: dict[Op, float], k: int) -> tuple[Alive, list[Op]]:
    """Remove the ``k`` lowest-scoring operators over the whole space, never a decision's last one.

    Only operators in ``score`` can go (protected ones have none); fewer than ``k`` go when fewer
    are prunable. Ties are broken by (decision, choice) so the result is deterministic.
    """
    left = {d: len(a) for d, a in enumerate(alive)}
    removed: list[Op] = []
    for op in sorted(score, key=lambda o: (score[o], o)):
        if len(removed) >= k:
            break
        d = op[0]
        if left[d] <= 1:
            continue
        removed.append(op)
        left[d] -= 1
    gone = set(removed)
    return tuple(tuple(c for c in a if (d, c) not in gone) for d, a in enumerate(alive)), removed


def si_standard_error(values: Sequence[float], population: int | None = None) -> float:
    """Standard error of a mean of sampled P(a): sd / sqrt(n) (0 for one value); ``population``
    (sampling without replacement from that many) applies the finite-population correction, so an
    enumerated population has SE 0 (its SI is exact up to the evaluation images' own noise)."""
    n = len(values)
    if n < 2:
        return 0.0
    se = float(np.std(values, ddof=1)) / math.sqrt(n)
    if population is not None and population > 1:
        se *= math.sqrt(max(0.0, (population - n) / (population - 1)))
    return se


def close_calls(scores: OperatorScores, removed: Sequence[Op]) -> list[dict]:
    """Removals decided inside SI's noise: per removed operator, the kept operator of the same
    decision with the nearest SI, when the SI difference is below the difference's standard error
    sqrt(SE_r^2 + SE_k^2). Inside a decision S orders operators as SI does (one SC per decision),
    so these are the removals that another draw of architectures could have reversed."""
    gone = set(removed)
    out = []
    for r in removed:
        kept = [o for o in scores.si if o[0] == r[0] and o not in gone]
        if not kept:
            continue
        k = min(kept, key=lambda o: (abs(scores.si[o] - scores.si[r]), o))
        diff = abs(scores.si[k] - scores.si[r])
        se = math.sqrt(scores.si_se.get(r, 0.0) ** 2 + scores.si_se.get(k, 0.0) ** 2)
        if diff < se:
            out.append({"removed": r, "kept": k, "si_diff": diff, "se": se})
    return out


# --- expanding -----------------------------------------------------------------------------------
def merge_groups(counts: Sequence[int], threshold: int) -> list[tuple[int, ...]]:
    """Merge adjacent decisions shallow to deep while the product of their choices is <= T.

    Greedy from the shallowest decision: a group grows while the next decision keeps the product
    <= ``threshold``; only groups of two or more decisions are returned (a lone decision's operators
    already have their own weights).
    """
    groups, i, n = [], 0, len(counts)
    while i < n:
        j, prod = i, counts[i]
        while j + 1 < n and prod * counts[j + 1] <= threshold:
            j += 1
            prod *= counts[j]
        if j > i:
            groups.append(tuple(range(i, j + 1)))
        i = j + 1
    return groups


def partial_key(choices: Iterable[int]) -> str:
    """ModuleDict key of a partial model: its choices over the group's decisions."""
    return "_".join(str(int(c)) for c in choices)


def parse_key(key: str) -> tuple[int, ...]:
    return tuple(int(c) for c in key.split("_"))


@dataclass(frozen=True)
class SenasCtx:
    """Per-call ctx: the architecture and, per decision, its partial-model key (None: not merged)."""

    arch: Arch
    keys: tuple[str | None, ...]


@dataclass(frozen=True)
class Grouping:
    groups: tuple[tuple[int, ...], ...]
    n_decisions: int

    def group_of(self, d: int) -> tuple[int, ...]:
        for g in self.groups:
            if d in g:
                return g
        return (d,)

    def ctx(self, arch: Arch) -> SenasCtx:
        keys: list[str | None] = [None] * self.n_decisions
        for g in self.groups:
            key = partial_key(arch[d] for d in g)
            for d in g:
                keys[d] = key
        return SenasCtx(tuple(arch), tuple(keys))


def _has_state(m: nn.Module) -> bool:
    return any(True for _ in m.parameters()) or any(True for _ in m.buffers())


def mean_state(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating tensors; other tensors (BN batch counters) from the last."""
    out = {}
    for name, t in states[-1].items():
        if t.is_floating_point():
            out[name] = torch.stack([s[name].detach() for s in states]).mean(0).to(t.dtype)
        else:
            out[name] = t.detach().clone()
    return out


class PartialModelOp(nn.Module):
    """A candidate operator with independent weight copies per partial model of its merged group.

    ``base`` is the space's own operator (the shared weights). After an expansion, a forward pass of
    an architecture in a merged group runs ``copies[key]`` for the architecture's partial-model key
    (from ``ctx``); ``base`` keeps the shared weights the copies started from and gets no gradients.
    Parameter-free operators (skip, pooling) never need copies.
    """

    def __init__(self, spec: OpSpec, base: nn.Module):
        super().__init__()
        self.decision, self.choice = spec.decision, spec.choice
        self.base = base
        self.copies = nn.ModuleDict()
        self.has_state = _has_state(base)

    def forward(self, x, ctx=None):
        key = ctx.keys[self.decision] if isinstance(ctx, SenasCtx) else None
        if key is None or not self.has_state:
            return self.base(x, None)
        if key not in self.copies:
            raise KeyError(f"partial model {key} of decision {self.decision} has no weight copy "
                           f"(architecture {ctx.arch} is outside the shrunk space)")
        return self.copies[key](x, None)

    def expand(self, old: Grouping, new: Grouping, alive: Alive) -> None:
        """Re-key this operator's copies for the grouping ``new`` over the space ``alive``.

        A new partial model starts from the weights its path used under ``old``: the shared
        weights when the decision was not merged, the matching old copy when the old group is
        contained in the new one, otherwise (groups re-cut) the mean of the old copies that agree
        with it on the shared decisions. A decision that leaves every group folds that back into
        ``base``.
        """
        if not self.has_state:
            return
        d = self.decision
        if self.choice not in alive[d]:  # a removed operator is never run again
            self.copies = nn.ModuleDict()
            return
        old_g, new_g = old.group_of(d), new.group_of(d)
        if len(old_g) == 1 and len(new_g) == 1:
            return
        old_copies = {parse_key(k): m for k, m in self.copies.items()}

        def source(combo: tuple[int, ...]) -> dict[str, torch.Tensor]:
            if len(old_g) == 1:
                return self.base.state_dict()
            want = {dd: c for dd, c in zip(new_g, combo) if dd in old_g}
            matches = [m.state_dict() for key, m in old_copies.items()
                       if all(want.get(dd, c) == c for dd, c in zip(old_g, key))
                       and all(c in alive[dd] for dd, c in zip(old_g, key))]
            if not matches:  # pragma: no cover - old copies cover every combination still alive
                raise RuntimeError(f"no weights to initialise partial model {combo} of decision {d}")
            return mean_state(matches)

        if len(new_g) == 1:
            self.base.load_state_dict(source((self.choice,)))
            self.copies = nn.ModuleDict()
            return
        choices = [alive[dd] if dd != d else (self.choice,) for dd in new_g]
        fresh = nn.ModuleDict()
        for combo in itertools.product(*choices):
            m = copy.deepcopy(self.base)
            m.load_state_dict(source(combo))
            fresh[partial_key(combo)] = m
        self.copies = fresh


def expand(ops: Sequence[PartialModelOp], old: Grouping, new: Grouping, alive: Alive) -> int:
    """Expand every operator for the new grouping; returns the number of weight copies held."""
    for op in ops:
        op.expand(old, new, alive)
    return sum(len(op.copies) for op in ops)


# --- evaluation stability (Eq. 4) -----------------------------------------------------------------
class SnapshotAverager:
    """Running mean of K weight snapshots (Eq. 4) without holding K copies of the model."""

    def __init__(self):
        self.sum: dict[str, torch.Tensor] = {}
        self.last: dict[str, torch.Tensor] = {}
        self.count = 0

    @torch.no_grad()
    def add(self, state: dict[str, torch.Tensor]) -> None:
        for name, t in state.items():
            if t.is_floating_point():
                acc = t.detach().to(torch.float64)
                self.sum[name] = acc.clone() if name not in self.sum else self.sum[name].add_(acc)
            else:
                self.last[name] = t.detach().clone()
        self.count += 1

    def average(self, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.count == 0:
            raise RuntimeError("no weight snapshots were taken")
        out = {}
        for name, t in like.items():
            out[name] = (self.sum[name] / self.count).to(t.dtype) if t.is_floating_point() else self.last[name]
        return out

    def state(self) -> dict:
        return {"sum": self.sum, "last": self.last, "count": self.count}

    def load(self, state: dict) -> None:
        self.sum, self.last, self.count = dict(state["sum"]), dict(state["last"]), int(state["count"])


def snapshot_steps(total_steps: int, len_epoch: int, k: int) -> list[int]:
    """K step indices evenly spaced over the last epoch of a stage, ending at its last step."""
    last = max(1, min(len_epoch, total_steps))
    start = total_steps - last
    return sorted({start + max(1, ((j + 1) * last) // k) - 1 for j in range(k)})


def averaged_copy(model: nn.Module, averager: SnapshotAverager) -> nn.Module:
    avg = copy.deepcopy(model)
    avg.load_state_dict(averager.average(model.state_dict()))
    avg.eval()
    return avg


def split_steps(total: int, fractions: Sequence[float]) -> list[int]:
    """Integer steps per stage summing exactly to ``total`` (cumulative rounding)."""
    cum = np.cumsum(np.asarray(fractions, dtype=float))
    bounds = [0] + [int(round(total * c / cum[-1])) for c in cum]
    bounds[-1] = total
    return [b - a for a, b in zip(bounds, bounds[1:])]


# --- the method ----------------------------------------------------------------------------------
@dataclass
class _StageModel:
    """Snapshot-averaged weights of a finished stage with the grouping they were trained under."""

    model: nn.Module
    grouping: Grouping


@register_method("senas-no-expand", expand=False)
@register_method("senas-si-only", score_rule="si", expand=False)
@register_method("senas-paper", si_sampling="per_operator", si_samples=1000, eval_images=0)
@register_method("senas")
class Senas(Method):
    Config = SenasConfig

    def _check_config(self) -> None:
        c = self.config
        if c.stages < 0:
            raise ConfigError(f"SE-NAS stages={c.stages}: use 0 or more shrink/expand stages")
        if c.k < 0:
            raise ConfigError(f"SE-NAS k={c.k}: the number of operators removed per stage must be >= 0")
        if c.threshold < 1:
            raise ConfigError(f"SE-NAS threshold={c.threshold}: T must be >= 1 (the paper uses 50)")
        if c.snapshots < 1:
            raise ConfigError(f"SE-NAS snapshots={c.snapshots}: K must be >= 1")
        if c.si_samples < 1:
            raise ConfigError(f"SE-NAS si_samples={c.si_samples}: n must be >= 1")
        if c.si_sampling not in ("shared", "per_operator"):
            raise ConfigError(f"SE-NAS si_sampling='{c.si_sampling}': use 'shared' or 'per_operator'")
        if c.score_rule not in ("si_sc", "si"):
            raise ConfigError(f"SE-NAS score_rule='{c.score_rule}': use 'si_sc' (Eq. 7) or 'si' (SI only)")
        if c.eval_images < 0:
            raise ConfigError(f"SE-NAS eval_images={c.eval_images}: use 0 (all) or a positive count")
        if c.stage_fractions and (len(c.stage_fractions) != c.stages + 1 or min(c.stage_fractions) <= 0):
            raise ConfigError(f"SE-NAS stage_fractions={c.stage_fractions}: give {c.stages + 1} positive shares "
                              f"(one per training stage) or () for equal shares")

    def fit(self, job) -> "SenasScorer":
        self._check_config()
        cfg, space = self.config, job.space
        n_dec = len(space.decisions)
        ops: list[PartialModelOp] = []

        def op_factory(spec: OpSpec) -> nn.Module:
            op = PartialModelOp(spec, space.default_op(spec))
            ops.append(op)
            return op

        model = job.build_supernet(op_factory=op_factory)
        alive = full_space(space)
        grouping = Grouping((), n_dec)
        path_rng = job.rng("path")

        len_epoch = job.train_stream().len_epoch
        total = max(1, int(round(job.budget.epochs * len_epoch)))  # what SPOS trains: the same budget
        fractions = cfg.stage_fractions or (1.0,) * (cfg.stages + 1)
        steps = split_steps(total, fractions)
        if min(steps) < 1:
            raise ConfigError(f"SE-NAS: the budget's {total} training steps cannot feed {cfg.stages + 1} stages; "
                              f"lower stages or raise epochs")
        history: dict = {
            "decisions": [d.name for d in space.decisions],
            "config": dataclasses.asdict(cfg),
            "total_steps": total, "len_epoch": len_epoch,
            "stage_steps": steps, "stage_epochs": [s / len_epoch for s in steps],
            "stages": [],
        }
        stage_models: list[_StageModel] = []
        removed_at: dict[Op, int] = {}
        offset = 0
        # curve points: the current stage's models (the closure reads the current alive/grouping);
        # the live weights, since the snapshot average exists only at a stage's end
        job.set_curve_scorer(lambda: SenasScorer(job, model, model, alive, grouping, stage_models, removed_at, history,
                                                 max_enumerate=cfg.max_enumerate,
                                                 survivor_sample=cfg.survivor_sample),
                             note="senas: points before 100 % score the current stage's live weights "
                                  "(the final scores use the snapshot average)")
        for stage in range(cfg.stages + 1):
            averager = self._train_stage(job, model, grouping, alive, path_rng, stage, steps[stage], offset)
            offset += steps[stage]
            if stage == cfg.stages:
                break
            avg_model = averaged_copy(model, averager)
            stage_models.append(_StageModel(avg_model, grouping))
            scores, n_eval = self._score_operators(job, avg_model, grouping, alive, stage)
            size_before = alive_size(alive)
            new_alive, removed = shrink(alive, scores.score, cfg.k)
            for op in removed:
                removed_at[op] = stage
            new_grouping = Grouping(tuple(merge_groups([len(a) for a in new_alive], cfg.threshold))
                                    if cfg.expand else (), n_dec)
            n_copies = expand(ops, grouping, new_grouping, new_alive)
            history["stages"].append(self._stage_record(space, stage, steps[stage], scores, removed, new_alive,
                                                        new_grouping, size_before, n_eval, n_copies, cfg.k))
            job.log.info("senas stage %d: removed %s; groups %s; space %d -> %d", stage,
                         [f"{space.decisions[d].name}:{space.decisions[d].choices[c]}" for d, c in removed],
                         new_grouping.groups, size_before, alive_size(new_alive))
            alive, grouping = new_alive, new_grouping
            write_json(job.job_dir / HISTORY_FILE, history)

        history["final"] = {"stage": cfg.stages, "steps": steps[-1], "space_size": alive_size(alive),
                            "alive": {space.decisions[d].name: [space.decisions[d].choices[c] for c in a]
                                      for d, a in enumerate(alive)},
                            "groups": [list(g) for g in grouping.groups]}
        write_json(job.job_dir / HISTORY_FILE, history)
        job.state["senas_history"] = HISTORY_FILE

        crng = job.rng("collapse")
        check_not_collapsed(model, job.data.score_x[:64],
                            [sample_alive(alive, crng, space.is_allowed) for _ in range(4)], ctx_fn=grouping.ctx)
        eval_model = averaged_copy(model, averager) if cfg.average_final else model
        return SenasScorer(job, model, eval_model, alive, grouping, stage_models, removed_at, history,
                           max_enumerate=cfg.max_enumerate, survivor_sample=cfg.survivor_sample)

    # --- one training stage (SPOS over the current space) ----------------------------------------
    def _train_stage(self, job, model, grouping: Grouping, alive: Alive, path_rng, stage: int, steps: int,
                     offset: int) -> SnapshotAverager:
        space, cfg = job.space, self.config
        trainer = SupernetTrainer(job, model, epochs=steps / job.train_stream().len_epoch,
                                  name=f"senas-stage{stage}", data_offset=offset, backward=True)
        assert trainer.total_steps == steps, (trainer.total_steps, steps)
        snaps = set(snapshot_steps(trainer.total_steps, trainer.stream.len_epoch, cfg.snapshots))
        averager = SnapshotAverager()

        def step(x, y, i):
            arch = sample_alive(alive, path_rng, space.is_allowed)
            loss = F.cross_entropy(model(x, arch, grouping.ctx(arch)), y, label_smoothing=cfg.label_smoothing)
            job.counters.add_path(len(x))
            return loss  # one loss: the trainer runs its backward

        def after_step(i):
            if i in snaps:
                averager.add(model.state_dict())

        def get_state():
            return {"path_rng": path_rng.bit_generator.state, "snapshots": averager.state()}

        def set_state(s):
            path_rng.bit_generator.state = s["path_rng"]
            averager.load(s["snapshots"])

        trainer.run(step, get_state=get_state, set_state=set_state, after_step=after_step)
        if job.budget.checkpoint_every:
            trainer.save(get_state())  # a finished stage: a resumed job does not retrain it
        return averager

    # --- operator scores (Eq. 4-7) on the search split ------------------------------------------
    def _si_archs(self, job, alive: Alive, stage: int) -> tuple[dict[Op, list[Arch]], bool]:
        """The architectures each operator's SI averages over (with multiplicity), and whether they
        are an enumeration (SI exact: no sampling error) rather than a sample (with replacement)."""
        cfg, allowed = self.config, job.space.is_allowed
        rng = job.rng(f"senas-si-{stage}")
        ops = [(d, c) for d, a in enumerate(alive) for c in a]
        per_op: dict[Op, list[Arch]] = {o: [] for o in ops}
        if cfg.si_sampling == "per_operator":
            exact = True
            for d, c in ops:
                sub = alive[:d] + ((c,),) + alive[d + 1:]
                if alive_size(sub) <= cfg.si_samples:
                    per_op[(d, c)] = enumerate_alive(sub, allowed)
                else:
                    exact = False
                    per_op[(d, c)] = [sample_alive(alive, rng, allowed, fixed={d: c}) for _ in range(cfg.si_samples)]
            return per_op, exact
        exact = alive_size(alive) <= cfg.si_samples
        if exact:
            archs = enumerate_alive(alive, allowed)  # exact expectation of Eq. 5
        else:
            archs = [sample_alive(alive, rng, allowed) for _ in range(cfg.si_samples)]
        for a in archs:
            for d, c in enumerate(a):
                per_op[(d, c)].append(a)
        for (d, c), lst in per_op.items():  # every operator gets at least one architecture
            if not lst:
                lst.append(sample_alive(alive, rng, allowed, fixed={d: c}))
        return per_op, exact

    @staticmethod
    def eval_subset(job, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` search-split images for P(a), a seeded uniform draw (the same at every stage).

        Not a prefix: a data source may store the split class by class (the CIFAR-10 JPEG archive
        does: the first 1,024 search images are all one class, so a prefix measured how often a
        path predicts that class)."""
        total = len(job.data.search_y)
        if not n or n >= total:
            return job.data.search_x, job.data.search_y
        idx = np.sort(job.rng("senas-eval-images").choice(total, size=n, replace=False))
        i = torch.as_tensor(idx, dtype=torch.long, device=job.data.search_y.device)
        return job.data.search_x[i], job.data.search_y[i]

    def _score_operators(self, job, avg_model, grouping: Grouping, alive: Alive,
                         stage: int) -> tuple[OperatorScores, int]:
        b, cfg = job.budget, self.config
        x, y = self.eval_subset(job, cfg.eval_images)
        evaluator = SupernetEvaluator(
            avg_model, x, y, bn_mode=b.bn_mode,
            recal_x=job.data.recal_x(b.recal_batches * b.eval_batch_size), recal_batches=b.recal_batches,
            batch_size=b.eval_batch_size, ctx_fn=grouping.ctx, progress=job.progress,
            autocast=job.autocast, workers=score_workers(job))  # bf16 forwards with --precision bf16, as the shared evaluator
        per_op, exact = self._si_archs(job, alive, stage)
        unique = list(dict.fromkeys(a for lst in per_op.values() for a in lst))
        evaluator.score(unique)
        job.counters.add_path(len(evaluator.y), forward=len(unique), backward=0)  # search cost, visible
        p = dict(zip(unique, evaluator.last_accuracy.tolist()))  # P(a), Eq. 4
        si = {o: float(np.mean([p[a] for a in lst])) for o, lst in per_op.items()}
        se = {o: 0.0 if exact else si_standard_error([p[a] for a in lst]) for o, lst in per_op.items()}
        return operator_scores(si, cfg.score_rule, se), len(unique)

    @staticmethod
    def _stage_record(space, stage, steps, scores: OperatorScores, removed, alive: Alive, grouping: Grouping,
                      size_before, n_eval, n_copies, k: int) -> dict:
        def name(o):
            return {"decision": space.decisions[o[0]].name, "op": space.decisions[o[0]].choices[o[1]]}

        gone = set(removed)
        by_decision: dict[int, list[Op]] = {}
        for o in sorted(scores.si):
            by_decision.setdefault(o[0], []).append(o)
        pairs = [(a, b) for ops in by_decision.values() for a, b in itertools.combinations(ops, 2)]
        diffs = [abs(scores.si[a] - scores.si[b]) for a, b in pairs]
        pair_se = [math.sqrt(scores.si_se.get(a, 0.0) ** 2 + scores.si_se.get(b, 0.0) ** 2) for a, b in pairs]
        return {
            "stage": stage, "steps": steps, "space_size_before": size_before, "archs_evaluated": n_eval,
            "operators": [{**name(o), "si": scores.si[o], "si_se": scores.si_se.get(o, 0.0), "sc": scores.sc[o],
                           "score": scores.score.get(o), "protected": scores.protected.get(o),
                           "removed": o in gone} for o in sorted(scores.si)],
            "removed": [{**name(o), "score": scores.score[o]} for o in removed],
            "removed_short_of_k": max(0, k - len(removed)),
            # SI noise against SI differences, over pairs of operators of one decision
            "si_se_median": float(np.median(list(scores.si_se.values()))) if scores.si_se else 0.0,
            "si_pair_diff_median": float(np.median(diffs)) if diffs else None,
            "si_pairs_within_se": (sum(d < s for d, s in zip(diffs, pair_se)) / len(pairs)) if pairs else None,
            "close_calls": [{"decision": space.decisions[c["removed"][0]].name,
                             "removed": space.decisions[c["removed"][0]].choices[c["removed"][1]],
                             "kept": space.decisions[c["kept"][0]].choices[c["kept"][1]],
                             "si_diff": c["si_diff"], "se": c["se"]} for c in close_calls(scores, removed)],
            "alive_after": {space.decisions[d].name: [space.decisions[d].choices[c] for c in a]
                            for d, a in enumerate(alive)},
            "space_size_after": alive_size(alive),
            "groups": [{"decisions": [space.decisions[d].name for d in g],
                        "partial_models": math.prod(len(alive[d]) for d in g)} for g in grouping.groups],
            "weight_copies": n_copies,
        }


def stage_warnings(history: dict) -> list[str]:
    """One plain sentence per detected fallback: a removal decided inside SI's noise, a stage that
    removed fewer than k operators (the rest protected)."""
    out = []
    for st in history.get("stages", []):
        for c in st.get("close_calls", []):
            out.append(f"SE-NAS stage {st['stage']}, {c['decision']}: SI of {c['removed']} (removed) and "
                       f"{c['kept']} (kept) differ by {c['si_diff']:.4f} < SE {c['se']:.4f}")
        if st.get("removed_short_of_k"):
            out.append(f"SE-NAS stage {st['stage']}: removed {len(st['removed'])} operators, "
                       f"{st['removed_short_of_k']} short of k (the rest are protected: SC = 0 or last operator)")
    return out


class SenasScorer(Scorer):
    """Survivors by the final (averaged) weights; removed architectures ranked below them."""

    def __init__(self, job, model, eval_model, alive: Alive, grouping: Grouping, stage_models: list[_StageModel],
                 removed_at: dict[Op, int], history: dict, max_enumerate: int = 5000, survivor_sample: int = 1000):
        self.job, self.model, self.eval_model = job, model, eval_model
        self.alive, self.grouping, self.removed_at, self.history = alive, grouping, removed_at, history
        self.n_stages = len(stage_models)
        self.final = SupernetScorer(job, model, ctx_fn=grouping.ctx, model_for_eval=eval_model)
        self.stage_scorers = [SupernetScorer(job, sm.model, ctx_fn=sm.grouping.ctx) for sm in stage_models]
        self.max_enumerate, self.survivor_sample = max_enumerate, survivor_sample
        self._survivors: list[Arch] | None = None
        self._cache: dict[Arch, float] = {}

    def tier(self, arch: Arch) -> int:
        """The shrink that removed ``arch`` (0-based); ``n_stages`` for survivors."""
        return min((self.removed_at.get((d, c), self.n_stages) for d, c in enumerate(arch)), default=self.n_stages)

    def score(self, archs: Sequence[Arch]) -> np.ndarray:
        archs = [tuple(a) for a in archs]
        out = np.empty(len(archs))
        tiers = np.array([self.tier(a) for a in archs], dtype=int)
        for t in np.unique(tiers):
            idx = np.flatnonzero(tiers == t)
            todo = [archs[i] for i in idx]
            if t == self.n_stages:
                missing = [a for a in dict.fromkeys(todo) if a not in self._cache]
                if missing:
                    self._cache.update(zip(missing, self.final.score(missing).tolist()))
                s = np.array([self._cache[a] for a in todo])
            else:
                s = self.stage_scorers[t].score(todo)
            out[idx] = TIER_GAP * t + s
        return out

    def subsets(self) -> dict[str, list[Arch]]:
        if self._survivors is None:
            allowed = self.job.space.is_allowed
            if alive_size(self.alive) <= self.max_enumerate:
                self._survivors = enumerate_alive(self.alive, allowed)
            else:  # the paper samples large shrunk spaces
                rng, seen = self.job.rng("senas-survivors"), {}
                while len(seen) < self.survivor_sample:
                    seen.setdefault(sample_alive(self.alive, rng, allowed), None)
                self._survivors = list(seen)
        return {"survivors": list(self._survivors)}

    def picked(self) -> Arch | None:
        """The best survivor by the final scores (the paper searches the shrunk space)."""
        survivors = self.subsets()["survivors"]
        scores = self.score(survivors)
        return survivors[int(np.argmax(scores))]

    def extra(self) -> dict:
        space = self.job.space
        stages = self.history["stages"]
        survivors = self.subsets()["survivors"]
        return {
            "history_file": HISTORY_FILE,
            "stage_steps": self.history["stage_steps"],
            "removed": [[f"{r['decision']}:{r['op']}" for r in st["removed"]] for st in stages],
            "groups": [[g["decisions"] for g in st["groups"]] for st in stages],
            "space_size": [st["space_size_after"] for st in stages],
            "survivors": alive_size(self.alive),
            # the final stage's space: its operators, and its architectures (the `survivors` subset of
            # scores.csv, whose metrics aggregation reports beside the full set's)
            "survivor_ops": {space.decisions[d].name: [space.decisions[d].choices[c] for c in a]
                             for d, a in enumerate(self.alive)},
            "survivor_archs": [space.format(a) for a in survivors[:SURVIVORS_LISTED]],
            "survivor_archs_listed": min(len(survivors), SURVIVORS_LISTED),
            "si_se_median": [st["si_se_median"] for st in stages],
            "si_pair_diff_median": [st["si_pair_diff_median"] for st in stages],
            "si_pairs_within_se": [st["si_pairs_within_se"] for st in stages],
            "si_close_calls": [{"stage": st["stage"], **c} for st in stages for c in st["close_calls"]],
            "removed_short_of_k": [st["removed_short_of_k"] for st in stages],
            "metric_notes": {"scored": TAU_NOTE},
            "warnings": stage_warnings(self.history),
        }
