"""FairNAS: strict-fairness path sampling and m-path gradient accumulation per optimizer step."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from harness.spaces.base import Decision, NetConfig, OpSpec, SearchSpace, Supernet
from harness.engine.method import create_method
from methods.fairnas import accumulate_paths, fair_paths, space_fair_paths




# --- a tiny layer-wise space with unequal choice counts (2, 3, 4) -----------------------------
class _Op(nn.Module):
    def __init__(self, spec: OpSpec):
        super().__init__()
        kind = spec.name
        self.body = {"conv3": lambda: nn.Conv2d(spec.c_in, spec.c_out, 3, padding=1, bias=False),
                     "conv1": lambda: nn.Conv2d(spec.c_in, spec.c_out, 1, bias=False),
                     "skip": nn.Identity, "pool": lambda: nn.AvgPool2d(3, 1, 1)}[kind]()

    def forward(self, x, ctx=None):
        return self.body(x)


class _TinyNet(Supernet):
    def __init__(self, space, cfg: NetConfig, factory, arch=None):
        super().__init__()
        c = cfg.channels
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.layers = nn.ModuleList()
        for d, dec in enumerate(space.decisions):
            choices = range(len(dec.choices)) if arch is None else [arch[d]]
            self.layers.append(nn.ModuleDict({
                str(ch): factory(OpSpec(d, ch, dec.choices[ch], c, c, 1, d, cfg.bn_affine, cfg.bn_track))
                for ch in choices}))
        self.head = nn.Linear(c, cfg.num_classes)

    def features(self, x, arch, ctx=None):
        x = torch.relu(self.stem(x))
        for d, layer in enumerate(self.layers):
            x = torch.relu(layer[str(arch[d])](x, ctx))
        return x.mean((2, 3))


class TinySpace(SearchSpace):
    name = "tiny"
    decisions = (Decision("a", ("conv3", "conv1")), Decision("b", ("conv3", "conv1", "skip")),
                 Decision("c", ("conv3", "conv1", "skip", "pool")))

    def parse(self, text):
        return tuple(int(t) for t in text.split("-"))

    def format(self, arch):
        return "-".join(map(str, arch))

    def default_op(self, spec):
        return _Op(spec)

    def build_supernet(self, cfg, op_factory=None):
        return _TinyNet(self, cfg, op_factory or self.default_op)

    def build_standalone(self, arch, cfg, op_factory=None):
        return _TinyNet(self, cfg, op_factory or self.default_op, self.validate(arch))


# --- the sampler -----------------------------------------------------------------------------
def _columns(paths):
    return np.asarray(paths).T  # (decisions, m)


def test_equal_counts_every_step_is_a_permutation_per_decision():
    rng = np.random.default_rng(0)
    for _ in range(50):
        paths = fair_paths([5] * 6, rng)
        assert len(paths) == 5
        for col in _columns(paths):
            assert sorted(col) == [0, 1, 2, 3, 4]  # every operator exactly once


def test_paths_differ_between_steps_and_are_seeded():
    a = [fair_paths([5] * 6, np.random.default_rng(1)) for _ in range(2)]
    assert a[0] == a[1]  # same seed, same paths
    rng = np.random.default_rng(1)
    assert fair_paths([5] * 6, rng) != fair_paths([5] * 6, rng)  # fresh permutations every step


def test_unequal_counts_use_every_operator_and_fill_uniformly():
    counts = [2, 5, 3, 1]
    rng = np.random.default_rng(0)
    fills = np.zeros(3)
    for _ in range(3000):
        paths = fair_paths(counts, rng)
        assert len(paths) == 5  # m = largest count
        cols = _columns(paths)
        for n, col in zip(counts, cols):
            assert set(col) == set(range(n))  # each operator at least once, nothing out of range
        assert sorted(cols[1]) == [0, 1, 2, 3, 4]
        # the 2 extra entries of the 3-choice decision are uniform draws
        extra = np.bincount(cols[2], minlength=3) - 1
        fills += extra
    freq = fills / fills.sum()
    assert np.allclose(freq, 1 / 3, atol=0.03), freq
    # the per-path marginal stays uniform too (no fixed slot for the fill draws)
    rng = np.random.default_rng(1)
    first = np.bincount([fair_paths(counts, rng)[0][0] for _ in range(3000)], minlength=2) / 3000
    assert np.allclose(first, 0.5, atol=0.04)


def test_space_paths_on_nb201_and_tiny_space():
    from harness.spaces.nb201 import Nb201Space

    rng = np.random.default_rng(0)
    assert len(space_fair_paths(Nb201Space(), rng)) == 5
    paths = space_fair_paths(TinySpace(), rng)
    assert len(paths) == 4
    for a in paths:
        TinySpace().validate(a)


def test_bad_counts_raise():
    with pytest.raises(ValueError):
        fair_paths([3, 0], np.random.default_rng(0))


# --- gradient accumulation ---------------------------------------------------------------------
def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("average", [False, True])
def test_accumulate_paths_sums_the_paths_gradients(job_factory, average):
    job = job_factory()
    model = job.build_supernet()
    x, y = job.data.train_x[:16], job.data.train_y[:16]
    paths = space_fair_paths(job.space, np.random.default_rng(0))
    loss_fn = torch.nn.functional.cross_entropy

    expected: dict[str, torch.Tensor] = {}
    losses = []
    for arch in paths:  # independent reference: one path at a time from zero grads
        model.zero_grad(set_to_none=True)
        loss = loss_fn(model(x, arch), y)
        loss.backward()
        losses.append(float(loss.detach()))
        for n, g in _grads(model).items():
            expected[n] = expected.get(n, 0) + g
    model.zero_grad(set_to_none=True)
    mean_loss = accumulate_paths(model, x, y, paths, loss_fn, average=average)
    got = _grads(model)
    assert set(got) == set(expected)
    scale = 1 / len(paths) if average else 1.0
    for n in expected:
        torch.testing.assert_close(got[n], expected[n] * scale, rtol=1e-5, atol=1e-6)
    assert float(mean_loss) == pytest.approx(np.mean(losses), rel=1e-5)
    # every operator of every edge got a gradient (none has no parameters; convs must)
    names = {n.split(".edges.")[1].split(".")[:2][1] for n in got if ".edges." in n}
    assert names == {"nor_conv_1x1", "nor_conv_3x3"}


# --- the training loop -------------------------------------------------------------------------
def test_fit_one_optimizer_step_per_m_fair_paths(job_factory, monkeypatch):
    """Between two optimizer steps the model ran exactly m paths that cover every operator once,
    and zero_grad was not called among them (their gradients accumulate)."""
    events: list = []
    orig_step, orig_zero = torch.optim.SGD.step, torch.optim.Optimizer.zero_grad

    def step(self, *a, **k):
        events.append("step")
        return orig_step(self, *a, **k)

    def zero(self, *a, **k):
        events.append("zero")
        return orig_zero(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    monkeypatch.setattr(torch.optim.Optimizer, "zero_grad", zero)
    orig_features = _TinyNet.features

    def features(self, x, arch, ctx=None):
        out = orig_features(self, x, arch, ctx)
        if self.training and torch.is_grad_enabled():
            events.append(tuple(arch))
        return out

    monkeypatch.setattr(_TinyNet, "features", features)
    job = job_factory(space=TinySpace(), epochs=1)  # 256 images / 32 = 8 steps
    scorer = create_method("fairnas").fit(job)

    m = 4
    steps = [i for i, e in enumerate(events) if e == "step"]
    assert len(steps) == 8 == job.counters.steps
    start = 0
    for i in steps:
        group = events[start:i]
        assert group[0] == "zero" and "zero" not in group[1:]
        paths = group[1:]
        assert len(paths) == m
        for n, col in zip((2, 3, 4), _columns(paths)):
            assert set(col) == set(range(n))
        assert sorted(_columns(paths)[2]) == [0, 1, 2, 3]
        start = i + 1
    assert job.counters.path_forward == job.counters.path_backward == m * 8
    assert job.counters.path_forward_images == m * job.counters.images_seen
    assert job.state["fairnas_paths_per_step"] == m
    scores = scorer.score([(0, 0, 0), (1, 2, 3)])
    assert np.all(np.isfinite(scores))


def test_fit_nb201_runs_and_resumes_from_a_checkpoint(tmp_path):
    from tests.conftest import make_job

    job = make_job(tmp_path / "a", epochs=0.5, checkpoint_every=2)  # 4 steps
    s1 = create_method("fairnas").fit(job).score([(3, 3, 3, 3, 3, 3), (0, 1, 2, 3, 4, 0)])
    assert job.counters.path_forward == 5 * job.counters.steps
    # a second fit in the same folder resumes from the step-2 checkpoint and ends identically
    job2 = make_job(tmp_path / "a", epochs=0.5, checkpoint_every=2)
    s2 = create_method("fairnas").fit(job2).score([(3, 3, 3, 3, 3, 3), (0, 1, 2, 3, 4, 0)])
    assert job2.state.get("resumed_from_step") == 2
    np.testing.assert_allclose(s1, s2)


# --- issue 19: same batch for every path, m from the allowed choices, dead ops, live variant, clip --
def test_all_m_paths_of_a_step_see_the_same_batch(job_factory, monkeypatch):
    seen: list = []
    orig_features = _TinyNet.features

    def features(self, x, arch, ctx=None):
        if self.training and torch.is_grad_enabled():
            seen.append(x.detach().clone())
        return orig_features(self, x, arch, ctx)

    monkeypatch.setattr(_TinyNet, "features", features)
    job = job_factory(space=TinySpace(), epochs=0.5)  # 4 steps, m = 4
    create_method("fairnas").fit(job)
    assert len(seen) == 4 * 4
    for step in range(4):
        group = seen[4 * step: 4 * step + 4]
        assert all(torch.equal(group[0], x) for x in group[1:])
    assert not torch.equal(seen[0], seen[4])  # and the next step has the next batch


class _ConstrainedTiny(TinySpace):
    """Decision c forbids two of its four choices: m is 3 (from b), not 4."""

    def allowed_choices(self, decision):
        return (0, 1) if decision == 2 else super().allowed_choices(decision)

    def is_allowed(self, arch):
        return arch[2] in (0, 1)


def test_m_is_logged_from_the_allowed_choices(job_factory):
    from methods.fairnas import paths_per_step

    space = _ConstrainedTiny()
    assert paths_per_step(space) == 3
    paths = space_fair_paths(space, np.random.default_rng(0))
    assert len(paths) == 3 and all(p[2] in (0, 1) for p in paths)
    job = job_factory(space=space, epochs=0.25)
    create_method("fairnas").fit(job)
    assert job.state["fairnas_paths_per_step"] == 3 and job.counters.path_forward == 3 * job.counters.steps


def test_nb201_dead_edges():
    from harness.spaces.nb201 import Nb201Space, dead_edges

    # edges: 0: 1<-0, 1: 2<-0, 2: 2<-1, 3: 3<-0, 4: 3<-1, 5: 3<-2; ops 0 none, 2/3 convs
    assert dead_edges((3, 3, 3, 3, 3, 3)) == ()
    assert dead_edges((0, 3, 3, 3, 3, 3)) == (2, 4)  # node 1 unfed: its outgoing convs see zeros
    assert dead_edges((3, 3, 3, 3, 0, 0)) == (0, 1, 2)  # nodes 1 and 2 never reach node 3
    assert dead_edges((0, 0, 0, 0, 0, 0)) == ()  # nothing but `none`: nothing dead
    assert Nb201Space().dead_decisions((0, 3, 3, 3, 3, 3)) == (2, 4)
    assert TinySpace().dead_decisions((0, 0, 0)) == ()  # chain spaces: never


def test_default_fairnas_has_dead_ops_on_nb201_and_the_live_variant_none(job_factory):
    """`fairnas` on NB201: some sampled operators have no live route (recorded); `fairnas-live`:
    m = 4 paths without `none`, each non-zero operator once per decision per step, none dead."""
    from methods.fairnas import DeadOpTally

    tally = DeadOpTally(job_factory().space)
    rng = np.random.default_rng(0)
    for _ in range(200):
        tally.add(space_fair_paths(tally.space, rng))
    rec = tally.record()
    assert rec["steps_with_dead_op_fraction"] > 0.9 and 0.05 < rec["dead_op_fraction"] < 0.3

    live = DeadOpTally(tally.space)
    for _ in range(200):
        paths = space_fair_paths(live.space, rng, live_only=True)
        assert len(paths) == 4
        for col in _columns(paths):
            assert sorted(col) == [1, 2, 3, 4]  # every non-`none` operator exactly once
        live.add(paths)
    assert live.record()["dead_op_fraction"] == 0.0

    job = job_factory(epochs=0.25)  # 2 steps
    create_method("fairnas-live").fit(job)
    assert job.state["fairnas_paths_per_step"] == 4
    assert job.extra["fairnas_dead_ops"]["dead_op_fraction"] == 0.0 and job.extra["fairnas_dead_ops"]["steps"] == 2
    job = job_factory(epochs=0.25, seed=1)
    create_method("fairnas").fit(job)
    assert job.extra["fairnas_dead_ops"]["steps"] == 2 and job.state["fairnas_paths_per_step"] == 5


@pytest.mark.parametrize("rule,average,scale", [("sum", False, 1.0), ("mean-path", False, 4.0),
                                                 ("mean-path", True, 1.0), ("sum", True, 1.0)])
def test_clip_rule_scales_the_budget_clip(job_factory, rule, average, scale):
    import dataclasses

    from methods.fairnas import clip_scale

    assert clip_scale(rule, 4, average) == scale
    job = job_factory(space=TinySpace(), epochs=0.25, grad_clip=2.0)
    method = create_method("fairnas")
    method.config = dataclasses.replace(method.config, clip_rule=rule, average_grads=average)
    method.fit(job)
    assert job.extra["grad_clip"]["train"]["threshold"] == 2.0 * scale


def test_bad_clip_rule_is_a_config_error(job_factory):
    import dataclasses

    from harness.core.errors import ConfigError

    method = create_method("fairnas")
    method.config = dataclasses.replace(method.config, clip_rule="max")
    with pytest.raises(ConfigError, match="clip_rule='max'"):
        method.fit(job_factory(space=TinySpace(), epochs=0.25))
