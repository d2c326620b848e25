"""SPOS, the baseline: one path per training step, drawn uniformly from the space; only that path's
operators are trained in the step; scores come from the shared evaluator; a seed fixes everything."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from harness.engine.evaluator import SupernetEvaluator, SupernetScorer
from harness.engine.job import TrainingHooks
from harness.engine.method import create_method
from harness.spaces.base import Decision, OpSpec, SearchSpace, Supernet
from harness.spaces.nb201 import NB201_OPS, live_edges
from tests.conftest import make_job, tiny_data

# a statistic this far in the tail of its null distribution happens with probability 1e-6 under
# uniform sampling, whatever the seed; a biased or stuck sampler lands far beyond it at this length
P_FAIL = 1e-6


# --- a tiny layer-wise space with unequal choice counts: cheap steps, so many can be counted -------
class _Conv1(nn.Module):
    def __init__(self, spec: OpSpec):
        super().__init__()
        self.conv = nn.Conv2d(spec.c_in, spec.c_out, 1, bias=False)

    def forward(self, x, ctx=None):
        return self.conv(x)


class _TinyNet(Supernet):
    def __init__(self, space, cfg, factory, arch=None):
        super().__init__()
        c = cfg.channels
        self.stem = nn.Conv2d(3, c, 1, bias=False)
        self.layers = nn.ModuleList(
            nn.ModuleDict({str(ch): factory(OpSpec(d, ch, dec.choices[ch], c, c, 1, d, False, True))
                           for ch in (range(len(dec.choices)) if arch is None else [arch[d]])})
            for d, dec in enumerate(space.decisions))
        self.head = nn.Linear(c, cfg.num_classes)

    def features(self, x, arch, ctx=None):
        x = self.stem(x)
        for d, layer in enumerate(self.layers):
            x = torch.relu(layer[str(arch[d])](x, ctx))
        return x.mean((2, 3))


class TinySpace(SearchSpace):
    name = "tiny-spos"
    decisions = (Decision("a", ("p", "q")), Decision("b", ("p", "q", "r")), Decision("c", ("p", "q", "r", "s", "t")))

    def parse(self, text):
        return tuple(int(t) for t in text.split("-"))

    def format(self, arch):
        return "-".join(map(str, arch))

    def default_op(self, spec):
        return _Conv1(spec)

    def build_supernet(self, cfg, op_factory=None):
        return _TinyNet(self, cfg, op_factory or self.default_op)

    def build_standalone(self, arch, cfg, op_factory=None):
        return _TinyNet(self, cfg, op_factory or self.default_op, self.validate(arch))


class PathRecorder(TrainingHooks):
    """Records the architecture of every training forward (grad enabled) and, after each step,
    which parameters received a gradient and which changed."""

    def __init__(self, watch_steps: int = 0):
        self.paths: list[tuple[int, ...]] = []
        self.watch_steps = watch_steps
        self.steps: list[dict] = []  # per watched step: path, names with a grad, names changed

    def on_train_start(self, model, job):
        def pre_hook(_module, args):
            if torch.is_grad_enabled():
                self.paths.append(tuple(args[1]))

        model.register_forward_pre_hook(pre_hook)
        self._before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def on_step(self, model, step, total):
        # called after optimizer.step() and before the next zero_grad: .grad is this step's
        if step > self.watch_steps:
            return
        params = dict(model.named_parameters())
        self.steps.append({
            "path": self.paths[-1],
            "grad": {n for n, p in params.items() if p.grad is not None},
            "changed": {n for n, p in params.items() if not torch.equal(p.detach(), self._before[n])},
        })
        self._before = {n: p.detach().clone() for n, p in params.items()}


def _fit(job, hooks: PathRecorder | None = None):
    job.hooks = hooks or PathRecorder()
    return create_method("spos").fit(job), job.hooks


# --- uniform sampling, one path per step --------------------------------------------------------
@pytest.mark.slow
def test_each_step_samples_one_path_uniformly_from_the_space(tmp_path):
    """1,500 steps on a 2 x 3 x 5 space: the joint path counts (every path, 50 expected each) and
    each decision's counts pass a chi-square test at p = 1e-6; one training forward per step; and
    consecutive steps repeat a path about 1/30 of the time (a path drawn per step, not per epoch)."""
    steps = 1500
    space = TinySpace()
    data = tiny_data(n_train=256, n_search=16, n_score=16, resolution=4)
    job = make_job(tmp_path, space=space, data=data, resolution=4, channels=2, batch_size=2,
                   epochs=steps / 128, curve_points=0)
    _, rec = _fit(job)
    paths = rec.paths
    assert job.counters.steps == steps and len(paths) == steps  # exactly one path forward per step
    assert job.counters.path_forward == steps

    all_paths = list(space.enumerate())
    counts = np.array([paths.count(a) for a in all_paths])
    assert counts.sum() == steps
    stat, p = stats.chisquare(counts)
    assert p > P_FAIL, f"joint path counts not uniform: chi2={stat:.1f}, p={p:.2g}, counts={counts.tolist()}"
    for d, dec in enumerate(space.decisions):
        per = np.bincount([a[d] for a in paths], minlength=len(dec.choices))
        stat, p = stats.chisquare(per)
        assert p > P_FAIL, f"decision {dec.name}: counts {per.tolist()} not uniform (p={p:.2g})"

    # lag-1 repeats ~ Binomial(steps - 1, 1/30): within a two-sided 1e-6 band
    repeats = sum(a == b for a, b in zip(paths, paths[1:]))
    lo, hi = stats.binom.interval(1 - P_FAIL, steps - 1, 1 / len(all_paths))
    assert lo <= repeats <= hi, f"{repeats} consecutive repeats in {steps} steps (expected {lo:.0f}..{hi:.0f})"


# --- only the sampled path is trained in a step -------------------------------------------------
def _op_of(name: str) -> tuple[int, int, str] | None:
    """'layers.{i}.edges.{e}.{op}...' -> (layer index, edge, op name); None outside candidate ops."""
    parts = name.split(".")
    if parts[0] == "layers" and len(parts) > 4 and parts[2] == "edges":
        return int(parts[1]), int(parts[3]), parts[4]
    return None


def test_only_the_sampled_paths_operators_get_gradient_in_a_step(tmp_path):
    """NB201 at C=4: in each of the first steps, the candidate-operator parameters with a gradient
    are exactly those of the step's path on its live edges, and no other operator's weights move
    (momentum and weight decay included); the shared stem/head do get trained."""
    job = make_job(tmp_path, curve_points=0)
    _, rec = _fit(job, PathRecorder(watch_steps=6))
    assert len(rec.steps) == 6
    model_params = list(rec._before)
    op_params = {n: _op_of(n) for n in model_params if _op_of(n) is not None}
    assert op_params  # the conv operators have weights (BN is not affine at this shape)
    sampled_with_params = 0
    for s in rec.steps:
        arch = s["path"]
        expected = {n for n, (_, e, op) in op_params.items() if e in live_edges(arch) and op == NB201_OPS[arch[e]]}
        assert {n for n in s["grad"] if n in op_params} == expected, f"path {arch}"
        assert {n for n in s["changed"] if n in op_params} <= expected, f"path {arch}"
        assert "stem.0.weight" in s["grad"] and "head.weight" in s["changed"]
        sampled_with_params += bool(expected)
    assert len({s["path"] for s in rec.steps}) > 1  # a new path in the next step
    assert sampled_with_params > 0  # some step's path had trainable operators, so the check bit


# --- scoring and determinism --------------------------------------------------------------------
def test_scores_come_from_the_shared_evaluator(tmp_path):
    job = make_job(tmp_path, curve_points=0)
    scorer, _ = _fit(job)
    assert isinstance(scorer, SupernetScorer)
    archs = [job.space.sample(np.random.default_rng(i)) for i in range(12)]
    b = job.budget
    ref = SupernetEvaluator(scorer.evaluator.model, job.data.score_x, job.data.score_y, bn_mode=b.bn_mode,
                            batch_size=b.eval_batch_size, progress=False, prefix_cache=False)
    np.testing.assert_array_equal(scorer.score(archs), ref.score(archs))
    n = len(job.data.score_y)
    assert ((ref.last_accuracy * n) == np.floor(scorer.score(archs) * n)).all()  # accuracy + tie-breaker


def test_same_seed_same_scores_other_seed_other_scores(tmp_path):
    archs = [tuple(np.random.default_rng(i).integers(5, size=6).tolist()) for i in range(20)]
    runs = {}
    for tag, seed in (("a", 0), ("b", 0), ("c", 1)):
        job = make_job(tmp_path / tag, seed=seed, curve_points=0)
        scorer, rec = _fit(job)
        runs[tag] = (scorer.score(archs), rec.paths)
    np.testing.assert_array_equal(runs["a"][0], runs["b"][0])
    assert runs["a"][1] == runs["b"][1]
    assert runs["a"][1] != runs["c"][1]  # the path stream comes from the job seed
    assert not np.array_equal(runs["a"][0], runs["c"][0])
