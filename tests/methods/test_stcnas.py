"""STC-NAS (methods/stcnas.py): sampling (Eq. 5), schedules, projection (Eq. 6-8), JS term (Eq. 9),
disjoint data for the two updates, and that alpha stops choosing a `none` operator that hurts."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.engine.job import TaskData
from harness.spaces.base import Decision, OpSpec, SearchSpace, Supernet
from harness.engine.method import create_method
from methods.stcnas import (
    HISTORY_FILE,
    AlphaScale,
    StcNasConfig,
    StcSearch,
    js_divergence,
    js_lambda,
    noise_range,
    project_,
    sample_ops,
    scaled_alpha_lr,
    stc_js_loss,
)
from tests.conftest import make_job


@pytest.fixture(autouse=True)
def one_thread():
    # tiny tensors: OpenMP threads only add contention (10x slower on a loaded 2-core machine)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- Eq. 5: sampling ------------------------------------------------------------------------------
def test_sampled_op_is_argmax_of_alpha_plus_uniform_noise():
    alphas = [torch.tensor([0.5, 0.45, 0.3, 0.6, 0.52]), torch.tensor([0.2, 0.25, 0.1])]
    for seed in range(30):
        arch, flips = sample_ops(alphas, 0.3, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        expect = tuple(int(np.argmax(a.numpy() + rng.uniform(0, 0.3, a.numel()))) for a in alphas)
        assert arch == expect
        assert flips == sum(c != int(a.argmax()) for a, c in zip(alphas, arch))
    assert sample_ops(alphas, 0.0, np.random.default_rng(0)) == ((3, 1), 0)


def test_noise_range_bounds_which_ops_can_be_sampled():
    # eps ~ U(0, r): an op more than r below the max is never sampled, one within r sometimes
    alphas = [torch.tensor([0.6, 0.45, 0.29])]
    rng = np.random.default_rng(0)
    counts = np.bincount([sample_ops(alphas, 0.3, rng)[0][0] for _ in range(2000)], minlength=3)
    assert counts[2] == 0 and counts[1] > 0 and counts[0] > counts[1]
    counts = np.bincount([sample_ops(alphas, 0.1, rng)[0][0] for _ in range(500)], minlength=3)
    assert counts[1] == 0  # 0.15 below the max is out of reach once r = 0.1


def test_noise_schedule_anneals_to_zero():
    total = 50
    r = [noise_range(s, total, 0.3) for s in range(total)]
    assert r[0] == pytest.approx(0.3) and r[-1] == 0.0
    assert all(a >= b for a, b in zip(r, r[1:]))
    assert r[(total - 1) // 2] == pytest.approx(0.3 * (1 - 24 / 49))


def test_lambda_schedule_rises_zero_to_two():
    total = 41
    lam = [js_lambda(s, total) for s in range(total)]
    assert lam[0] == 0.0 and lam[-1] == pytest.approx(2.0) and lam[20] == pytest.approx(1.0)
    assert np.allclose(np.diff(lam), 2.0 / 40)


def test_alpha_lr_scales_with_budget():
    from harness.budgets import get_budget

    assert scaled_alpha_lr(get_budget("paper")) == pytest.approx(3e-4)
    assert scaled_alpha_lr(get_budget("smoke")) == pytest.approx(3e-4 * (50 / 64) / (3 / 128))


# --- Eq. 9: JS divergence ---------------------------------------------------------------------------
def test_js_term_matches_hand_computation():
    alpha = torch.tensor([0.2, 0.6, -0.1, 0.0, 0.4], requires_grad=True)
    # ReLU -> [0.2, 0.6, 0, 0, 0.4] / 1.2 = q = [1/6, 1/2, 0, 0, 1/3]; p = one-hot(1); m = (p + q) / 2
    # KL(p||m) = log(4/3); KL(q||m) = 1/6 log 2 + 1/2 log(2/3) + 1/3 log 2
    hand = 0.5 * math.log(4 / 3) + 0.5 * (0.5 * math.log(2) + 0.5 * math.log(2 / 3))
    loss = stc_js_loss([alpha], (1,))
    assert loss.item() == pytest.approx(hand, rel=1e-6)
    loss.backward()
    assert torch.isfinite(alpha.grad).all()  # zero weights (0 log 0) give finite gradients
    # mean over decisions; the bounds of JS: 0 for identical, log 2 for disjoint distributions
    second = torch.tensor([0.0, 1.0])
    assert stc_js_loss([alpha, second], (1, 1)).item() == pytest.approx(hand / 2, rel=1e-6)
    e0, e1 = torch.eye(2)
    assert float(js_divergence(e0, e0)) == pytest.approx(0.0, abs=1e-9)
    assert float(js_divergence(e0, e1)) == pytest.approx(math.log(2), rel=1e-6)


# --- projection, gradient flow, disjoint data -------------------------------------------------------
def test_project_clips_to_unit_box():
    a = [torch.tensor([-0.3, 0.5, 1.7]), torch.tensor([2.0, -1.0])]
    project_(a)
    assert a[0].tolist() == [0.0, 0.5, 1.0] and a[1].tolist() == [1.0, 0.0]


def test_alpha_in_unit_box_after_steps(tmp_path):
    job = make_job(tmp_path)
    search = StcSearch(job, StcNasConfig(alpha_lr=0.5))  # huge steps: unprojected alpha would leave [0, 1]
    with torch.no_grad():
        for a in search.alphas:
            a.copy_(torch.tensor([0.02, 0.98, 0.5, 0.97, 0.03]))
    arch = (3, 3, 3, 3, 3, 3)
    x, y = search.next_search_batch()
    for step in range(3):
        search.alpha_step(x, y, arch, step=search.total - 1)  # lambda = 2
        values = torch.cat([a.detach() for a in search.alphas])
        assert float(values.min()) >= 0.0 and float(values.max()) <= 1.0
    assert float(values.min()) == 0.0 or float(values.max()) == 1.0  # the projection was active


def test_scale_passes_gradient_to_the_chosen_alpha_only(tmp_path):
    job = make_job(tmp_path)
    search = StcSearch(job, StcNasConfig(alpha_lr=0.01))
    before = [a.detach().clone() for a in search.alphas]
    arch = (3, 3, 3, 3, 3, 3)  # every edge live
    search.alpha_step(*search.next_search_batch(), arch, step=0)  # lambda(0) = 0: CE only, via the scale
    for a, b, c in zip(search.alphas, before, arch):
        changed = (a.detach() != b).nonzero().flatten().tolist()
        assert changed == [c]


def _marker_data() -> TaskData:
    """Train pixels in [1, 2], search in [-2, -1], score in [10, 11]: a batch tells its split."""
    g = torch.Generator().manual_seed(0)

    def make(n, lo):
        return torch.rand(n, 3, 8, 8, generator=g) + lo, torch.randint(0, 10, (n,), generator=g)

    return TaskData(*make(256, 1.0), *make(128, -2.0), *make(128, 10.0))


def _split(x: torch.Tensor) -> str:
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0.0 and hi <= 2.0:  # augmentation pads with zeros
        return "train"
    if hi < 0:
        return "search"
    return "score" if lo >= 10 else "mixed"


def test_weight_updates_see_train_data_and_alpha_updates_search_data(tmp_path, monkeypatch):
    seen = {"weight": set(), "alpha": set()}
    w_step, a_step = StcSearch.weight_step, StcSearch.alpha_step

    def spy_weight(self, x, y, arch):
        seen["weight"].add(_split(x))
        alphas = [a.detach().clone() for a in self.alphas]
        loss = w_step(self, x, y, arch)
        assert all(torch.equal(a, b) and a.grad is None for a, b in zip(self.alphas, alphas))
        return loss

    def spy_alpha(self, x, y, arch, step):
        seen["alpha"].add(_split(x))
        state = {k: v.clone() for k, v in self.model.state_dict().items()}  # weights and BN buffers
        a_step(self, x, y, arch, step)
        assert all(torch.equal(v, state[k]) for k, v in self.model.state_dict().items())

    monkeypatch.setattr(StcSearch, "weight_step", spy_weight)
    monkeypatch.setattr(StcSearch, "alpha_step", spy_alpha)
    job = make_job(tmp_path, data=_marker_data())
    create_method("stcnas").fit(job)
    assert seen == {"weight": {"train"}, "alpha": {"search"}}
    assert job.counters.images_seen == 2 * 256 and job.counters.path_forward_images == 2 * 2 * 256


# --- end to end on the tiny NB201 job ----------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    torch.set_num_threads(1)
    out = {}
    for name in ("stcnas", "stcnas-alpha"):
        job = make_job(tmp_path_factory.mktemp(name))
        out[name] = (job, create_method(name).fit(job))
    return out


def test_fit_logs_alpha_history_and_summary(fitted):
    job, scorer = fitted["stcnas"]
    hist = pd.read_csv(job.job_dir / HISTORY_FILE)
    alpha_cols = [f"{d.name}/{c}" for d in job.space.decisions for c in d.choices]
    assert set(alpha_cols) <= set(hist.columns) and {"flip_rate", "noise_r", "js_lambda"} <= set(hist.columns)
    total = job.counters.steps
    assert hist["step"].iloc[0] == 0 and hist["step"].iloc[-1] == total
    assert hist["noise_r"].iloc[1] == pytest.approx(0.3) and hist["noise_r"].iloc[-1] == 0.0
    assert hist["js_lambda"].iloc[-1] == pytest.approx(2.0)
    values = hist[alpha_cols].to_numpy()
    assert values.min() >= 0 and values.max() <= 1
    final = values[-1].reshape(len(job.space.decisions), -1)
    assert scorer.picked() == tuple(int(i) for i in final.argmax(1))
    extra = scorer.extra()
    assert extra["derived"] == job.space.format(scorer.picked())
    assert 0.0 <= extra["flip_rate"] <= 1.0 and extra["alpha_lr"] == pytest.approx(scaled_alpha_lr(job.budget))


def test_alpha_variant_scores_sum_of_relu_alpha_after_identical_training(fitted):
    job, scorer = fitted["stcnas-alpha"]
    sup_job, sup = fitted["stcnas"]
    alphas = sup.search.alphas
    assert all(torch.equal(a, b) for a, b in zip(scorer.search.alphas, alphas))  # same seed, same training
    archs = [job.space.sample(np.random.default_rng(i)) for i in range(5)]
    expect = [sum(max(float(a.detach()[c]), 0.0) for a, c in zip(alphas, arch)) for arch in archs]
    assert np.allclose(scorer.score(archs), expect)
    assert scorer.picked() == sup.picked()
    # the supernet scorer evaluates with the ReLU(alpha) scale it was trained under
    assert isinstance(sup.evaluator.ctx_fn(archs[0]), AlphaScale)
    assert np.isfinite(sup.score(archs)).all()


def test_search_state_survives_a_weights_only_checkpoint(fitted, tmp_path):
    job, scorer = fitted["stcnas"]
    state = scorer.search.get_state()
    torch.save(state, tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)
    fresh = StcSearch(make_job(tmp_path), StcNasConfig())
    fresh.set_state(loaded)
    assert all(torch.equal(a, b) for a, b in zip(fresh.alphas, scorer.search.alphas))
    assert fresh.noise_rng.bit_generator.state == scorer.search.noise_rng.bit_generator.state
    assert pd.DataFrame(fresh.history).equals(pd.DataFrame(state["history"]))
    assert (fresh.search_epoch, fresh.search_pos) == tuple(state["search_pos"])


# --- synthetic task: one edge whose `none` operator clearly hurts ----------------------------------------
class _ConvBN(nn.Module):
    def __init__(self, c: int, affine: bool, track: bool):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c, affine=affine, track_running_stats=track)

    def forward(self, x, ctx=None):
        return self.bn(self.conv(F.relu(x)))


class _ChainNet(Supernet):
    """stem -> the one searched edge -> pool -> head: with `none` the features are all zero."""

    def __init__(self, space, cfg, factory, arch):
        super().__init__()
        c = cfg.channels
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c, affine=False))
        self.ops = nn.ModuleDict({"conv": factory(OpSpec(0, 1, "conv", c, c, 1, 0, cfg.bn_affine, cfg.bn_track))})
        self.head = nn.Linear(c, cfg.num_classes)

    def features(self, x, arch, ctx=None):
        h = self.stem(x)
        h = torch.zeros_like(h) if arch[0] == 0 else self.ops["conv"](h, ctx)
        return F.relu(h).mean((2, 3))


class _ChainSpace(SearchSpace):
    name = "chain"
    decisions = (Decision("edge", ("none", "conv")),)

    def parse(self, text):
        return tuple(int(c) for c in text)

    def format(self, arch):
        return "".join(map(str, arch))

    def default_op(self, spec):
        return _ConvBN(spec.c_in, spec.bn_affine, spec.bn_track)

    def build_supernet(self, cfg, op_factory=None):
        return _ChainNet(self, cfg, op_factory or self.default_op, None)

    def build_standalone(self, arch, cfg, op_factory=None):  # pragma: no cover - not used
        return _ChainNet(self, cfg, op_factory or self.default_op, arch)


def _colour_data(seed: int, res: int = 4) -> TaskData:
    """Four classes, each a colour; easy for the conv path, chance for `none`."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]])

    def make(n):
        y = torch.randint(0, 4, (n,), generator=g)
        return torch.randn(n, 3, res, res, generator=g) * 0.5 + colours[y].view(n, 3, 1, 1), y

    return TaskData(*make(256), *make(128), *make(128), num_classes=4)


def _search_chain(tmp_path, seed: int, **cfg) -> tuple[StcSearch, list[int]]:
    job = make_job(tmp_path, space=_ChainSpace(), seed=seed, data=_colour_data(seed), resolution=4, epochs=20)
    # exact tie (no init noise): argmax picks `none` (index 0) at the start
    search = StcSearch(job, StcNasConfig(alpha_lr=0.005, alpha_init_noise=0.0, **cfg))
    assert search.derived() == (0,)
    picks: list[int] = []
    sample = search.sample
    search.sample = lambda step: (lambda a: (picks.append(a[0]), a)[1])(sample(step))
    search.run()
    return search, picks


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_search_loss_through_the_relu_scale_moves_alpha_off_none(tmp_path, seed):
    # JS off: the only signal is the validation CE through ReLU(alpha_n) * o_n(x). `none` has no
    # module, so its alpha never moves; conv's must rise because scaling conv up lowers the loss.
    # (Measured: 10/10 seeds; with the scale detached alpha would not move at all.)
    search, picks = _search_chain(tmp_path, seed, js_lambda_end=0.0)
    none_alpha, conv_alpha = search.alphas[0].tolist()
    assert none_alpha == 0.5 and conv_alpha > 0.9
    assert search.derived() == (1,)
    assert sum(p == 0 for p in picks[-len(picks) // 4:]) == 0  # last quarter: never `none`


N_RATE_SEEDS = 10
MIN_RATE = 0.7  # measured 9/10 on seeds 0-9 (18/20 on 0-19); 14/20 with the paper's optimiser


@pytest.mark.slow
def test_full_method_stops_choosing_none_where_it_hurts_at_a_rate_over_seeds(tmp_path):
    # CE + JS (lambda 0 -> 2). JS reinforces whatever is sampled (Adam normalises even a tiny
    # lambda's gradient), so the outcome is partly an early coin flip: a rate over seeds 0..9, not
    # picked seeds. Measured (issue 19, seeds 0-19): the default (the budget's optimiser) reaches
    # conv on 18/20 (9/10 of the seeds run here), the paper's optimiser (`stcnas-paper`) on 14/20;
    # before issue 19, about 5/10 with the CE route cut; alpha that never moved stays at `none` on 0.
    ok = []
    for seed in range(N_RATE_SEEDS):
        search, picks = _search_chain(tmp_path / f"s{seed}", seed)
        none_alpha, conv_alpha = search.alphas[0].tolist()
        ok.append(search.derived() == (1,) and conv_alpha > none_alpha + 0.5
                  and sum(p == 0 for p in picks[-len(picks) // 4:]) == 0)
    assert sum(ok) >= MIN_RATE * N_RATE_SEEDS, ok


# --- issue 19: the budget's optimiser, stcnas-paper, stuck alphas, autocast ---------------------------
def test_default_weight_optimiser_is_the_budgets_and_stcnas_paper_keeps_the_papers(tmp_path):
    job = make_job(tmp_path)
    b = job.budget
    search = StcSearch(job, create_method("stcnas").config)
    opt = search.trainer.optimizer.defaults
    assert search.trainer.base_lr == b.lr and search.trainer.final_lr == 0.0
    assert (opt["momentum"], opt["weight_decay"], opt["nesterov"]) == (b.momentum, b.weight_decay, b.nesterov)
    assert search.trainer.grad_clip == b.grad_clip
    paper = StcSearch(make_job(tmp_path / "p"), create_method("stcnas-paper").config)
    opt = paper.trainer.optimizer.defaults
    assert paper.trainer.base_lr == 0.025 and paper.trainer.final_lr == 0.001
    assert (opt["momentum"], opt["weight_decay"], opt["nesterov"]) == (0.9, 3e-4, False)
    assert create_method("stcnas-paper").config.score_by == "supernet"


def test_stuck_alphas_are_counted_with_when_and_warned(tmp_path):
    """An alpha projected to exactly 0 has no gradient left (ReLU'(0) = 0): it stays 0; the
    statistic counts it with the alpha step it got stuck at, and a warning names the numbers."""
    job = make_job(tmp_path)
    search = StcSearch(job, StcNasConfig(alpha_lr=1e-3))
    with torch.no_grad():
        search.alphas[0].copy_(torch.tensor([0.5, 0.5, 0.0, 0.5, 0.5]))  # edge 0: nor_conv_1x1 at 0
        search.alphas[1].copy_(torch.tensor([0.0, 0.5, 0.5, 0.5, 0.5]))  # edge 1: none at 0
    arch = (3, 3, 3, 3, 3, 3)
    for step in range(3):
        search.alpha_step(*search.next_search_batch(), arch, step=step)
    assert search.alphas[0][2].item() == 0.0 and search.alphas[1][0].item() == 0.0  # still stuck
    st = search.stuck()
    assert st["ops_at_zero"] == 1 and st["none_at_zero"] == 1 and st["at_zero"] == 2
    assert st["stuck_since_step"] == {"edge1<-0/nor_conv_1x1": 1, "edge2<-0/none": 1}
    assert st["ops"] == 24 and st["ops_at_zero_fraction"] == pytest.approx(1 / 24)
    search.warn_stuck()
    assert len(job.warnings) == 1 and job.warnings[0].startswith("STC-NAS: 1 of 24 non-`none` operators")
    assert job.extra["stc_ops_at_zero"] == 1
    assert search.summary()["stc_alpha_stuck"]["ops_at_zero"] == 1
    # a stuck alpha that a projection lifts off 0 (only by hand here) is no longer counted
    with torch.no_grad():
        search.alphas[0][2] = 0.3
    search.alpha_step(*search.next_search_batch(), arch, step=3)
    assert search.stuck()["ops_at_zero"] == 0
    # the state survives a checkpoint
    fresh = StcSearch(make_job(tmp_path / "f"), StcNasConfig(alpha_lr=1e-3))
    fresh.set_state(search.get_state())
    assert fresh.stuck()["stuck_since_step"] == search.stuck()["stuck_since_step"]


def test_no_warning_when_no_operator_is_stuck(tmp_path):
    job = make_job(tmp_path)
    search = StcSearch(job, StcNasConfig())
    search.warn_stuck()
    assert job.warnings == [] and search.stuck()["at_zero"] == 0


def test_alpha_step_runs_under_the_jobs_autocast(tmp_path, monkeypatch):
    job = make_job(tmp_path)
    job.precision = "bf16"
    search = StcSearch(job, StcNasConfig())
    dtypes = []
    orig = type(search.model).features

    def spy(self, x, arch, ctx=None):
        out = orig(self, x, arch, ctx)
        dtypes.append((torch.is_autocast_enabled("cpu"), out.dtype))
        return out

    monkeypatch.setattr(type(search.model), "features", spy)
    search.alpha_step(*search.next_search_batch(), (3, 3, 3, 3, 3, 3), step=0)
    assert dtypes == [(True, torch.bfloat16)]
    assert all(a.dtype == torch.float32 for a in search.alphas)  # alpha and its update stay fp32
