"""SE-NAS mechanism: Eq. 4-7, shrinking, merging under T, per-partial-model weight copies."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from harness.core.errors import ArchError, ConfigError
from harness.spaces.base import Decision, NetConfig, OpSpec, SearchSpace, Supernet
from harness.spaces.nb201 import Nb201Space
import methods.senas as senas_module
from harness.engine.method import create_method
from methods.senas import (
    HISTORY_FILE,
    TIER_GAP,
    Grouping,
    PartialModelOp,
    SnapshotAverager,
    alive_size,
    enumerate_alive,
    expand,
    merge_groups,
    operator_scores,
    shrink,
    snapshot_steps,
    split_steps,
)




# --- a tiny layer-wise space: every candidate has weights and runs on every path -------------------
class _ConvOp(nn.Module):
    def __init__(self, c, k, track):
        super().__init__()
        self.conv = nn.Conv2d(c, c, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c, affine=False, track_running_stats=track)

    def forward(self, x, ctx=None):
        return self.bn(self.conv(torch.relu(x)))


class _ToyNet(Supernet):
    def __init__(self, space, cfg, factory):
        super().__init__()
        c = cfg.channels
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.layers = nn.ModuleList()
        for d, dec in enumerate(space.decisions):
            self.layers.append(nn.ModuleList(
                factory(OpSpec(d, ch, name, c, c, 1, d, cfg.bn_affine, cfg.bn_track))
                for ch, name in enumerate(dec.choices)))
        self.head = nn.Linear(c, cfg.num_classes)

    def features(self, x, arch, ctx=None):
        x = self.stem(x)
        for layer, ch in zip(self.layers, arch):
            x = x + layer[ch](x, ctx)
        return x.mean((2, 3))


class ToyLayerSpace(SearchSpace):
    """4 layers x 3 convolutions (1x1, 3x3, 5x5)."""

    name = "toy-layers"
    decisions = tuple(Decision(f"layer{i}", ("conv1", "conv3", "conv5")) for i in range(4))

    def parse(self, text):
        try:
            return self.validate(int(t) for t in text.split("-"))
        except ValueError:
            raise ArchError(f"bad toy arch {text!r}") from None

    def format(self, arch):
        return "-".join(map(str, arch))

    def default_op(self, spec):
        return _ConvOp(spec.c_in, (1, 3, 5)[spec.choice], spec.bn_track)

    def build_supernet(self, cfg: NetConfig, op_factory=None):
        return _ToyNet(self, cfg, op_factory or self.default_op)

    def build_standalone(self, arch, cfg, op_factory=None):  # pragma: no cover - not needed here
        raise NotImplementedError


def _senas(**overrides):
    m = create_method("senas")
    m.config = dataclasses.replace(m.config, **overrides)
    return m


def _ops(model) -> list[PartialModelOp]:
    return [m for m in model.modules() if isinstance(m, PartialModelOp)]


# --- Eq. 5-7 ---------------------------------------------------------------------------------------
def test_operator_score_matches_hand_example():
    # decision 0: SI 0.2, 0.4, 0.6; decision 1: SI 0.3, 0.5
    si = {(0, 0): 0.2, (0, 1): 0.4, (0, 2): 0.6, (1, 0): 0.3, (1, 1): 0.5}
    s = operator_scores(si)
    # SC = population variance of the decision's SI: 0.08/3 and 0.01 (Eq. 6)
    assert s.sc[(0, 1)] == pytest.approx(0.08 / 3)
    assert s.sc[(1, 0)] == pytest.approx(0.01)
    # mean SI = 0.4, mean SC over the 5 operators = (0.08 + 0.02) / 5 = 0.02
    # S = (SI / 0.4) / (SC / 0.02): d0 -> SI/0.4 * 3/4, d1 -> SI/0.4 * 2 (Eq. 7)
    expected = {(0, 0): 0.375, (0, 1): 0.75, (0, 2): 1.125, (1, 0): 1.5, (1, 1): 2.5}
    for o, v in expected.items():
        assert s.score[o] == pytest.approx(v)


def test_zero_confidence_is_never_pruned_first():
    s = operator_scores({(0, 0): 0.1, (0, 1): 0.9, (1, 0): 0.5, (1, 1): 0.5, (2, 0): 0.3})
    assert s.score[(1, 0)] == math.inf and s.score[(2, 0)] == math.inf
    _, removed = shrink(((0, 1), (0, 1), (0,)), s.score, 1)
    assert removed == [(0, 0)]


# --- shrinking ------------------------------------------------------------------------------------
def test_shrink_removes_k_lowest_and_never_empties_a_decision():
    alive = ((0, 1, 2), (0, 1), (0,))
    score = {(0, 0): 0.1, (0, 1): 0.2, (0, 2): 0.3, (1, 0): 0.5, (1, 1): 0.4, (2, 0): 0.0}
    new, removed = shrink(alive, score, 3)
    # (2,0) is lowest but the decision's last; (0,2) would empty decision 0
    assert removed == [(0, 0), (0, 1), (1, 1)]
    assert new == ((2,), (0,), (0,))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=7), st.integers(0, 30), st.data())
def test_shrink_property(counts, k, data):
    alive = tuple(tuple(range(c)) for c in counts)
    ops = [(d, c) for d, a in enumerate(alive) for c in a]
    vals = data.draw(st.lists(st.floats(0, 1), min_size=len(ops), max_size=len(ops)))
    score = dict(zip(ops, vals))
    new, removed = shrink(alive, score, k)
    assert all(len(a) >= 1 for a in new)
    assert len(removed) == min(k, len(ops) - len(counts))
    kept_removable = [(d, c) for d, a in enumerate(new) if len(a) >= 2 for c in a]
    if removed:
        worst_removed = max((score[o], o) for o in removed)
        assert all((score[o], o) > worst_removed for o in kept_removable)


# --- expanding ------------------------------------------------------------------------------------
def test_merge_groups_paper_toy_example():
    # Fig. 3: T = 6 merges layers 2-4 and 5-6 of a 6-layer space
    assert merge_groups([5, 2, 3, 1, 2, 3], 6) == [(1, 2, 3), (4, 5)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 7), min_size=1, max_size=10), st.integers(1, 60))
def test_merged_groups_respect_threshold(counts, t):
    groups = merge_groups(counts, t)
    seen = [d for g in groups for d in g]
    assert len(seen) == len(set(seen))
    for g in groups:
        assert len(g) >= 2 and list(g) == list(range(g[0], g[-1] + 1))  # adjacent decisions
        assert math.prod(counts[d] for d in g) <= t
        if g[-1] + 1 < len(counts):  # greedy: the next decision would break T
            assert math.prod(counts[d] for d in g) * counts[g[-1] + 1] > t


def _expanded_toy_model():
    space = ToyLayerSpace()
    cfg = NetConfig(channels=4, cells=1, resolution=8)
    model = space.build_supernet(cfg, op_factory=lambda spec: PartialModelOp(spec, space.default_op(spec)))
    shared = {k: v.clone() for k, v in model.state_dict().items()}
    alive = ((0, 1), (1, 2), (0,), (0, 1, 2))
    grouping = Grouping(tuple(merge_groups([len(a) for a in alive], 4)), 4)
    assert grouping.groups == ((0, 1, 2),)
    expand(_ops(model), Grouping((), 4), grouping, alive)
    return space, model, shared, alive, grouping


def test_copies_start_from_shared_weights():
    _, model, shared, alive, _ = _expanded_toy_model()
    for op in _ops(model):
        if op.decision in (0, 1, 2) and op.choice in alive[op.decision]:
            assert len(op.copies) == 4 // len(alive[op.decision])  # one per partial model containing it
            base = op.base.conv.weight
            for copy_ in op.copies.values():
                assert torch.equal(copy_.conv.weight, base) and copy_.conv.weight is not base
        else:
            assert len(op.copies) == 0  # unmerged decision or removed operator: shared weights only


def test_gradient_step_on_one_partial_model_leaves_others_unchanged():
    _, model, _, _, grouping = _expanded_toy_model()
    a, b = (0, 1, 0, 2), (1, 1, 0, 2)  # same group, different partial models; share (1, 1) and (2, 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    torch.nn.functional.cross_entropy(model(x, a, grouping.ctx(a)), y).backward()
    opt.step()
    after = model.state_dict()
    key_a, key_b = grouping.ctx(a).keys[0], grouping.ctx(b).keys[0]
    changed_a = unchanged_b = 0
    for name in before:
        if f"copies.{key_b}." in name:
            assert torch.equal(before[name], after[name]), name
            unchanged_b += 1
        if f"copies.{key_a}." in name and name.endswith("conv.weight"):
            assert not torch.equal(before[name], after[name]), name
            changed_a += 1
        if ".base." in name and any(f"layers.{d}." in name for d in (0, 1, 2)):
            assert torch.equal(before[name], after[name]), name  # merged: shared weights unused
    assert changed_a == 3 and unchanged_b > 0


# --- evaluation stability (Eq. 4) ------------------------------------------------------------------
def test_weight_averaging_equals_mean_of_snapshots():
    g = torch.Generator().manual_seed(0)
    snaps = [{"w": torch.randn(3, 4, generator=g), "b": torch.randn(4, generator=g),
              "num_batches_tracked": torch.tensor(i)} for i in range(5)]
    avg = SnapshotAverager()
    for s in snaps:
        avg.add(s)
    out = avg.average(snaps[0])
    assert torch.allclose(out["w"], torch.stack([s["w"] for s in snaps]).mean(0), atol=1e-7)
    assert torch.allclose(out["b"], torch.stack([s["b"] for s in snaps]).mean(0), atol=1e-7)
    assert out["w"].dtype == torch.float32 and int(out["num_batches_tracked"]) == 4
    restored = SnapshotAverager()
    restored.load(avg.state())
    assert torch.equal(restored.average(snaps[0])["w"], out["w"])


def test_snapshot_steps_lie_in_the_last_epoch():
    steps = snapshot_steps(total_steps=50, len_epoch=20, k=5)
    assert steps == [33, 37, 41, 45, 49]
    assert snapshot_steps(3, 20, 5) == [0, 1, 2]  # fewer steps than K: every step once
    assert sum(split_steps(585, (1, 1, 1))) == 585 and split_steps(10, (1, 3)) == [2, 8]


# --- the whole method -----------------------------------------------------------------------------
def test_final_stage_copies_diverge(job_factory):
    job = job_factory(space=ToyLayerSpace(), epochs=4)
    method = _senas(stages=1, k=4, threshold=4, stage_fractions=(0.25, 0.75), si_samples=8, snapshots=2)
    scorer = method.fit(job)
    groups = scorer.grouping.groups
    assert groups and all(math.prod(len(scorer.alive[d]) for d in g) <= 4 for g in groups)
    n_checked = 0
    for op in _ops(scorer.model):
        if len(op.copies) < 2:
            continue
        ws = [c.conv.weight.detach() for c in op.copies.values()]
        for i, w in enumerate(ws):
            assert not torch.equal(w, op.base.conv.weight), "a copy still equals the shared weights"
            for w2 in ws[i + 1:]:
                assert not torch.equal(w, w2), "two partial models share identical weights"
            n_checked += 1
    assert n_checked >= 2


def test_fit_on_nb201_budget_history_and_tiers(job_factory):
    job = job_factory(space=Nb201Space(), epochs=2)
    method = _senas(stages=2, k=10, threshold=50, si_samples=12, snapshots=2)
    scorer = method.fit(job)
    # the stages share exactly the budget SPOS trains on
    total = round(job.budget.epochs * job.train_stream().len_epoch)
    assert job.counters.steps == total and sum(scorer.history["stage_steps"]) == total
    assert sum(scorer.history["stage_epochs"]) == pytest.approx(job.budget.epochs)
    hist = json.loads((job.job_dir / HISTORY_FILE).read_text())
    assert [len(s["removed"]) for s in hist["stages"]] == [10, 10]
    assert all(len(ops) >= 1 for ops in hist["final"]["alive"].values())
    assert alive_size(scorer.alive) == hist["final"]["space_size"]
    survivors = scorer.subsets()["survivors"]
    assert survivors == enumerate_alive(scorer.alive)
    rng = np.random.default_rng(0)
    removed = [a for a in (Nb201Space().sample(rng) for _ in range(40)) if scorer.tier(a) < 2][:20]
    s_surv, s_rem = scorer.score(survivors), scorer.score(removed)
    assert s_rem.max() < s_surv.min()  # removed architectures rank below every survivor
    for a, s in zip(removed, s_rem):  # ...by tier (the shrink that removed them), then last estimate
        assert TIER_GAP * scorer.tier(a) <= s < TIER_GAP * (scorer.tier(a) + 1)
    assert scorer.picked() in survivors
    assert scorer.extra()["removed"][0] == [f"{r['decision']}:{r['op']}" for r in hist["stages"][0]["removed"]]


def test_bad_config_is_a_config_error(job_factory):
    with pytest.raises(ConfigError, match="si_sampling"):
        _senas(si_sampling="every").fit(job_factory())
    with pytest.raises(ConfigError, match="stage_fractions"):
        _senas(stages=2, stage_fractions=(1.0, 1.0)).fit(job_factory())


def test_operator_scores_run_under_the_jobs_autocast(job_factory, monkeypatch):
    """The search-split evaluator (Eq. 4's P(a)) forwards under ``job.autocast``: bfloat16 with
    ``--precision bf16``, like the shared evaluator; fp32 keeps its numbers (a no-op context)."""
    built = []

    class Recording(senas_module.SupernetEvaluator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.dtypes, inner = set(), self.forward_fn

            def forward(m, xb, arch, ctx):
                out = inner(m, xb, arch, ctx)
                self.dtypes.add(out.dtype)
                return out

            self.forward_fn = forward
            built.append(self)

    monkeypatch.setattr(senas_module, "SupernetEvaluator", Recording)
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        built.clear()
        job = job_factory(space=ToyLayerSpace(), epochs=2)
        job.precision = precision
        _senas(stages=1, k=2, si_samples=4, snapshots=1).fit(job)
        assert len(built) == 1 and built[0].dtypes == {dtype}, precision
