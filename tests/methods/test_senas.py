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
    parse_key,
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


def test_zero_confidence_is_protected_not_infinite():
    s = operator_scores({(0, 0): 0.1, (0, 1): 0.9, (1, 0): 0.5, (1, 1): 0.5, (2, 0): 0.3})
    # SC = 0 (a tie, or the decision's last operator): no score at all, never +inf
    assert set(s.score) == {(0, 0), (0, 1)} and all(math.isfinite(v) for v in s.score.values())
    assert s.protected == {(1, 0): senas_module.SC_ZERO, (1, 1): senas_module.SC_ZERO,
                           (2, 0): senas_module.LAST_OP}
    _, removed = shrink(((0, 1), (0, 1), (0,)), s.score, 1)
    assert removed == [(0, 0)]
    # k larger than the prunable operators: protected ones still stay (+inf would have been cut)
    new, removed = shrink(((0, 1), (0, 1), (0,)), s.score, 3)
    assert removed == [(0, 0)] and new == ((1,), (0, 1), (0,))


def test_normalisation_does_not_change_the_ranking():
    rng = np.random.default_rng(3)
    si = {(d, c): float(rng.uniform(0.1, 0.9)) for d in range(4) for c in range(3)}
    s = operator_scores(si)
    ratio = {o: si[o] / s.sc[o] for o in si}  # Eq. 7 without the x / mean(x) normalisation
    assert sorted(s.score, key=s.score.get) == sorted(ratio, key=ratio.get)
    const = {round(s.score[o] / ratio[o], 9) for o in si}
    assert len(const) == 1  # one global factor: mean(SC) / mean(SI)


def test_si_only_rule_ranks_by_si():
    # decision 0: low SI, hardly any spread; decision 1: a clear gap
    si = {(0, 0): 0.20, (0, 1): 0.21, (1, 0): 0.3, (1, 1): 0.9, (2, 0): 0.5}
    s = operator_scores(si, rule="si")
    assert sorted(s.score, key=s.score.get) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert s.protected == {(2, 0): senas_module.LAST_OP}
    alive = ((0, 1), (0, 1), (0,))
    assert shrink(alive, s.score, 1)[1] == [(0, 0)]
    assert shrink(alive, operator_scores(si).score, 1)[1] == [(1, 0)]  # Eq. 7: the confident decision first


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


# --- issue 19: re-cut and fold-back, averaged weights, removed operators, SI noise, variants --------
def _toy_ops():
    space = ToyLayerSpace()
    model = space.build_supernet(NetConfig(channels=2, cells=1, resolution=8),
                                 op_factory=lambda spec: PartialModelOp(spec, space.default_op(spec)))
    return {(op.decision, op.choice): op for op in _ops(model)}


def test_expansion_recut_and_fold_back_start_from_the_matching_old_copies():
    ops = _toy_ops()
    alive = ((0, 1), (0, 1), (0, 1), (0,))
    old, new = Grouping(((0, 1),), 4), Grouping(((1, 2),), 4)  # decision 1 re-cut, 0 leaves, 2 joins
    expand(list(ops.values()), Grouping((), 4), old, alive)
    # give every old copy of decisions 0 and 1 its own constant weight: value = 10 * own + other + 1
    for (d, c), op in ops.items():
        for key, m in op.copies.items():
            c0, c1 = parse_key(key)
            with torch.no_grad():
                m.conv.weight.fill_(100 * d + 10 * c0 + c1 + 1)
    base2 = {c: ops[(2, c)].base.conv.weight.clone() for c in (0, 1)}
    expand(list(ops.values()), old, new, alive)
    for c1 in (0, 1):  # re-cut: (c1, c2) starts from the mean over c0 of the old copies (c0, c1)
        op = ops[(1, c1)]
        assert sorted(op.copies) == [f"{c1}_0", f"{c1}_1"]
        want = np.mean([100 + 10 * c0 + c1 + 1 for c0 in (0, 1)])
        for m in op.copies.values():
            assert torch.allclose(m.conv.weight, torch.full_like(m.conv.weight, want))
    for c0 in (0, 1):  # fold-back: decision 0 leaves every group, its base = mean of its old copies
        op = ops[(0, c0)]
        assert len(op.copies) == 0
        want = np.mean([10 * c0 + c1 + 1 for c1 in (0, 1)])
        assert torch.allclose(op.base.conv.weight, torch.full_like(op.base.conv.weight, want))
    for c2 in (0, 1):  # joining from unmerged: copies of the shared weights
        assert all(torch.equal(m.conv.weight, base2[c2]) for m in ops[(2, c2)].copies.values())


def test_fold_back_ignores_copies_of_removed_partners():
    ops = _toy_ops()
    alive = ((0, 1), (0, 1), (0,), (0,))
    old = Grouping(((0, 1),), 4)
    expand(list(ops.values()), Grouping((), 4), old, alive)
    for key, m in ops[(0, 0)].copies.items():
        with torch.no_grad():
            m.conv.weight.fill_(1.0 + parse_key(key)[1])  # copy (0, 0) = 1, copy (0, 1) = 2
    shrunk = ((0, 1), (1,), (0,), (0,))  # (1, 0) removed: its partner copy must not be averaged in
    expand(list(ops.values()), old, Grouping((), 4), shrunk)
    w = ops[(0, 0)].base.conv.weight
    assert torch.equal(w, torch.full_like(w, 2.0))
    assert len(ops[(1, 0)].copies) == 0


def test_selection_importance_uses_the_snapshot_averaged_weights(job_factory, monkeypatch):
    snaps, seen = [], []
    add = SnapshotAverager.add

    def recording_add(self, state):
        snaps.append({k: v.detach().clone() for k, v in state.items()})
        return add(self, state)

    class Recording(senas_module.SupernetEvaluator):
        def __init__(self, model, *args, **kwargs):
            super().__init__(model, *args, **kwargs)
            seen.append(({k: v.detach().clone() for k, v in model.state_dict().items()}, len(snaps)))

    monkeypatch.setattr(SnapshotAverager, "add", recording_add)
    monkeypatch.setattr(senas_module, "SupernetEvaluator", Recording)
    job = job_factory(space=ToyLayerSpace(), epochs=2)
    _senas(stages=1, k=2, si_samples=4, snapshots=3).fit(job)
    (state, n_snaps), = seen  # one SI evaluator: stage 0's
    assert n_snaps == 3
    live = snaps[-1]  # the last snapshot is the live model at the end of the stage
    differs = 0
    for name, t in state.items():
        if t.is_floating_point():
            mean = torch.stack([s[name] for s in snaps[:n_snaps]]).mean(0)
            torch.testing.assert_close(t, mean, rtol=1e-6, atol=1e-7)
            differs += int(not torch.equal(t, live[name]))
    assert differs > 0  # the SI weights are not the live ones


def test_removed_operators_are_never_sampled_again(job_factory, monkeypatch):
    events = []
    sample, shrink_ = senas_module.sample_alive, senas_module.shrink

    def recording_sample(alive, rng, *a, **k):
        arch = sample(alive, rng, *a, **k)
        events.append(("arch", arch))
        return arch

    def recording_shrink(alive, score, k):
        new, removed = shrink_(alive, score, k)
        events.append(("removed", removed))
        return new, removed

    monkeypatch.setattr(senas_module, "sample_alive", recording_sample)
    monkeypatch.setattr(senas_module, "shrink", recording_shrink)
    job = job_factory(space=ToyLayerSpace(), epochs=3)
    _senas(stages=2, k=3, si_samples=6, snapshots=1, threshold=4).fit(job)
    gone: set = set()
    n_after = 0
    for kind, value in events:
        if kind == "removed":
            assert value and not gone & set(value)
            gone |= set(value)
        else:
            assert not gone & set(enumerate(value)), (value, gone)
            n_after += bool(gone)
    assert len(gone) == 6 and n_after > 0


def test_si_standard_error_and_close_call_warnings():
    assert senas_module.si_standard_error([0.5]) == 0.0
    assert senas_module.si_standard_error([0.1, 0.3]) == pytest.approx(np.std([0.1, 0.3], ddof=1) / math.sqrt(2))
    assert senas_module.si_standard_error([0.1, 0.3], population=2) == 0.0  # enumerated: exact
    si = {(0, 0): 0.50, (0, 1): 0.51, (0, 2): 0.80, (1, 0): 0.2, (1, 1): 0.6}
    scores = operator_scores(si, si_se={(0, 0): 0.01, (0, 1): 0.01, (0, 2): 0.01, (1, 0): 0.01, (1, 1): 0.01})
    calls = senas_module.close_calls(scores, [(0, 0), (1, 0)])
    # (0,0) vs its nearest kept rival (0,1): 0.01 < sqrt(2) * 0.01; (1,0) vs (1,1): 0.4, a clear call
    assert [(c["removed"], c["kept"]) for c in calls] == [((0, 0), (0, 1))]
    assert calls[0]["se"] == pytest.approx(math.sqrt(2) * 0.01)
    history = {"stages": [{"stage": 1, "removed": [{}], "removed_short_of_k": 2, "close_calls": [
        {"decision": "edge1<-0", "removed": "nor_conv_1x1", "kept": "avg_pool_3x3", "si_diff": 0.003, "se": 0.011}]}]}
    assert senas_module.stage_warnings(history) == [
        "SE-NAS stage 1, edge1<-0: SI of nor_conv_1x1 (removed) and avg_pool_3x3 (kept) differ by 0.0030 < SE 0.0110",
        "SE-NAS stage 1: removed 1 operators, 2 short of k (the rest are protected: SC = 0 or last operator)"]


def test_eval_images_are_a_class_mixed_draw_not_a_prefix(job_factory):
    job = job_factory()
    order = torch.argsort(job.data.search_y, stable=True)  # a class-sorted search split
    job.data = dataclasses.replace(job.data, search_x=job.data.search_x[order], search_y=job.data.search_y[order])
    x, y = senas_module.Senas.eval_subset(job, 32)
    assert len(y) == 32 and len(set(y.tolist())) > 3
    x2, _ = senas_module.Senas.eval_subset(job, 32)
    assert torch.equal(x, x2)  # the same images at every stage


@pytest.mark.parametrize("name", ["senas", "senas-si-only"])
def test_variants_run_and_record_si_noise(job_factory, name):
    job = job_factory(space=ToyLayerSpace(), epochs=2)
    method = create_method(name)
    method.config = dataclasses.replace(method.config, stages=1, k=3, si_samples=6, snapshots=2, threshold=4)
    scorer = method.fit(job)
    st0 = scorer.history["stages"][0]
    ops = st0["operators"]
    assert all(o["si_se"] >= 0 for o in ops) and any(o["si_se"] > 0 for o in ops)  # a sample: SI has noise
    removed = [o for o in ops if o["removed"]]
    assert len(removed) == 3
    if name == "senas-si-only":  # SI alone, no expanding (Table 6's "Shrinking (SI)")
        assert scorer.grouping.groups == () and st0["groups"] == []
        kept = [o for o in ops if not o["removed"] and o["protected"] is None]
        # a removal skips a decision's last operator only; otherwise the lowest SI goes first
        assert max(o["si"] for o in removed) <= max(o["si"] for o in kept)
    extra = scorer.extra()
    assert isinstance(extra["warnings"], list) and all(isinstance(w, str) for w in extra["warnings"])
    assert extra["survivor_archs"] == [job.space.format(a) for a in scorer.subsets()["survivors"]]
    assert "tier-constructed" in extra["metric_notes"]["scored"]
    json.dumps(extra)  # result.json must be able to hold it
