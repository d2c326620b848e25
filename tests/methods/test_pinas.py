"""Pi-NAS mechanism tests: Eq. 2 EMA, FIFO feature container, cross-path sampling, Eq. 4 by hand,
collapse of the no-negatives ablation, frozen linear evaluation, label independence, cost."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import methods.pinas as pinas_module
from harness.engine.method import Collapsed, JobFailed, create_method
from harness.engine.trainer import CKPT
from harness.spaces.nb201 import Nb201Space
from methods.pinas import (
    LINEAR,
    FeatureQueue,
    Pinas,
    PinasConfig,
    ViewAugment,
    augment_views,
    ema_update,
    linear_evaluation,
    pinas_loss,
    relative_variance,
    sample_paths,
)
from methods.spos import Spos
from tests.conftest import make_job, tiny_data


def _method(name="pinas", **over) -> Pinas:
    m = create_method(name)
    if over:
        m = Pinas(name, dataclasses.replace(m.config, **over))
    return m


def _clone_state(module: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --- Eq. 2 ------------------------------------------------------------------------------
def test_ema_update_is_eq2():
    torch.manual_seed(0)
    student, teacher = nn.Linear(5, 3), nn.Linear(5, 3)
    before = [p.detach().clone() for p in teacher.parameters()]
    ema_update(teacher, student, 0.9)
    for t0, t1, s in zip(before, teacher.parameters(), student.parameters()):
        torch.testing.assert_close(t1, 0.9 * t0 + 0.1 * s, rtol=1e-6, atol=1e-7)
    ema_update(teacher, student, 0.0)  # pinas-no-mt: the teacher is an exact copy
    for t, s in zip(teacher.parameters(), student.parameters()):
        assert torch.equal(t, s)


def test_teacher_after_one_step_is_ema_of_init_and_student(tmp_path):
    job = make_job(tmp_path / "a", epochs=0.125)  # 8 batches per epoch -> exactly one step
    m = _method()
    init = m.build_student(make_job(tmp_path / "b"))  # same seed -> same initial weights
    scorer = m.fit(job)
    lam = job.state["pinas"]["ema_lambda"]
    assert lam == 0.99  # smoke-derived budget: the shorter-run value is used and recorded
    assert job.state["pinas"]["train_steps"] == 1
    moved = 0
    for (name, w0), t, s in zip(init.named_parameters(), scorer.teacher.parameters(), scorer.student.parameters()):
        torch.testing.assert_close(t, lam * w0 + (1 - lam) * s, rtol=1e-6, atol=1e-7, msg=name)
        moved += int(not torch.equal(w0, s))
    assert moved > 0  # the student did take a step


def test_no_mt_teacher_is_student_copy(tmp_path):
    scorer = _method("pinas-no-mt").fit(make_job(tmp_path))
    for t, s in zip(scorer.teacher.parameters(), scorer.student.parameters()):
        assert torch.equal(t, s)


# --- feature container ------------------------------------------------------------------
def test_queue_is_fifo_with_configured_length():
    q = FeatureQueue(5, 2, torch.Generator().manual_seed(0))
    rows = torch.arange(20, dtype=torch.float32).view(10, 2)
    q.enqueue(rows[:3])
    assert q.count == 3 and torch.equal(q.items(), rows[:3])
    q.enqueue(rows[3:7])  # wraps around: the two oldest are dropped
    assert q.buffer.shape == (5, 2) and q.count == 5
    assert torch.equal(q.items(), rows[2:7])
    q.enqueue(rows[:10])  # more keys than slots: only the newest five survive
    assert torch.equal(q.items(), rows[5:10])
    state = q.state_dict()
    q2 = FeatureQueue(5, 2)
    q2.load_state_dict(state)
    assert torch.equal(q2.items(), q.items())


def test_fit_queue_holds_latest_teacher_outputs(tmp_path):
    job = make_job(tmp_path)
    scorer = _method(queue_len=48).fit(job)
    q = scorer.queue
    assert q.length == 48 and q.buffer.shape == (48, 128) and q.count == 48
    # entries are means of two unit vectors: norms in (0, 1]
    norms = q.items().norm(dim=1)
    assert bool((norms <= 1 + 1e-5).all()) and bool((norms > 0).all())


# --- paths ------------------------------------------------------------------------------
def test_paths_differ_except_without_cross_path():
    space, rng = Nb201Space(), np.random.default_rng(0)
    for _ in range(200):
        a, b = sample_paths(space, rng, cross_path=True, differ_everywhere=True)
        assert all(x != y for x, y in zip(a, b))
        a, b = sample_paths(space, rng, cross_path=True, differ_everywhere=False)
        assert a != b
        a, b = sample_paths(space, rng, cross_path=False)
        assert a == b


@pytest.mark.parametrize("name,equal", [("pinas", False), ("pinas-no-cp", True)])
def test_fit_uses_two_paths_unless_no_cp(tmp_path, name, equal):
    job = make_job(tmp_path)
    _method(name).fit(job)
    info = job.state["pinas"]
    assert info["equal_path_steps"] == (info["train_steps"] if equal else 0)


# --- Eq. 4 ------------------------------------------------------------------------------
def test_loss_matches_hand_computation():
    z_i, zt_j = torch.tensor([[3.0, 4.0]]), torch.tensor([[2.0, 0.0]])  # -> (0.6, 0.8), (1, 0)
    z_j, zt_i = torch.tensor([[0.0, 2.0]]), torch.tensor([[0.0, -5.0]])  # -> (0, 1), (0, -1)
    neg = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = 0.5
    # term 1: q=(.6,.8), k=(1,0): pos .6/t; negatives .6/t, .8/t
    l1 = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(1.6) + math.exp(1.2)))
    # term 2: q=(0,1), k=(0,-1): pos -1/t; negatives 0, 1/t
    l2 = -math.log(math.exp(-2.0) / (math.exp(0.0) + math.exp(2.0) + math.exp(-2.0)))
    got = pinas_loss(z_i, z_j, zt_i, zt_j, neg, t)
    assert got.item() == pytest.approx(l1 + l2, rel=1e-6)
    # without negatives: Eq. 1, -(D(z_i, z'_j) + D(z_j, z'_i))
    assert pinas_loss(z_i, z_j, zt_i, zt_j, None, t).item() == pytest.approx(-(1.2 - 2.0), rel=1e-6)


def test_loss_gradient_reaches_student_only():
    z_i = torch.randn(4, 3, requires_grad=True)
    z_j = torch.randn(4, 3, requires_grad=True)
    zt_i = torch.randn(4, 3, requires_grad=True)
    zt_j = torch.randn(4, 3, requires_grad=True)
    pinas_loss(z_i, z_j, zt_i, zt_j, torch.randn(6, 3), 0.2).backward()
    assert z_i.grad is not None and z_j.grad is not None
    assert zt_i.grad is None and zt_j.grad is None


# --- collapse ---------------------------------------------------------------------------
@pytest.mark.slow
def test_no_negatives_collapses_but_full_does_not(tmp_path):
    """The paper's 'w/o nontrivial' collapse, on a tiny run (96 steps): the full method on the same
    run keeps per-image variance, so the check can fail."""
    with pytest.raises(Collapsed, match="constant"):
        _method("pinas-no-neg").fit(make_job(tmp_path / "a", epochs=12))
    job = make_job(tmp_path / "b", epochs=12)
    _method("pinas").fit(job)
    assert job.state["pinas"]["embed_rel_var_min"] > PinasConfig().collapse_rel_threshold


def test_all_zero_embeddings_are_collapsed_not_nan(tmp_path):
    job = make_job(tmp_path)
    m = _method()
    student = m.build_student(job)
    with torch.no_grad():
        for p in student.proj.parameters():
            p.zero_()
    assert math.isnan(float(relative_variance(torch.zeros(8, 4))))
    with pytest.raises(Collapsed):
        m.check_collapse(student, job, [job.space.sample(job.rng("c")) for _ in range(2)])


DISCONNECTED = "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|none~2|"  # node 3 unreached
CONNECTED = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


@pytest.mark.parametrize(("path_i", "path_j", "skipped"), [(DISCONNECTED, DISCONNECTED, True),
                                                           (DISCONNECTED, CONNECTED, False)])
def test_in_step_collapse_check_never_reads_a_cell_without_a_route(tmp_path, monkeypatch, path_i, path_j, skipped):
    """A cell with no non-zero route embeds every image alike at any state of training: the check
    reads the step's other path instead, and skips (counting) when neither has a route. Reading it
    called the study's seed-0 job collapsed."""
    job = make_job(tmp_path)
    space = job.space
    a, b = space.parse(path_i), space.parse(path_j)
    assert not space.computes_from_input(a) and space.computes_from_input(b) == (not skipped)
    monkeypatch.setattr(pinas_module, "sample_paths", lambda *args, **kw: (a, b))
    _method("pinas", collapse_check_every=1).fit(job)  # raised Collapsed at step 1 before
    steps = job.state["pinas"]["train_steps"]
    assert job.state["pinas"]["collapse_checks_skipped"] == (steps if skipped else 0)


# --- linear evaluation ------------------------------------------------------------------
def test_linear_evaluation_leaves_supernet_and_bn_buffers_unchanged(tmp_path):
    job = make_job(tmp_path)
    m = _method()
    net = m.build_student(job).net
    with torch.no_grad():  # non-trivial BN buffers, so a reset would also show
        for name, buf in net.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_()
    before = _clone_state(net)
    assert any(k.endswith("running_var") for k in before)
    classifier, info = linear_evaluation(job, net, m.config, np.random.default_rng(0))
    _assert_same_state(before, _clone_state(net))
    assert all(not p.requires_grad or p.grad is None for p in net.parameters())
    assert info["linear_steps"] == 16 and job.counters.path_backward == 0
    assert job.counters.path_forward == 16  # one frozen path forward per batch
    assert job.counters.steps == job.counters.images_seen == 0  # not the supernet's image budget


def test_linear_evaluation_runs_under_bf16_autocast(tmp_path):
    """Same frozen supernet, same streams: only ``--precision bf16`` differs, and the classifier
    it trains differs (the features and logits ran in bfloat16), while staying finite."""
    m = _method()
    out = {}
    for precision in ("fp32", "bf16"):
        job = make_job(tmp_path / precision)
        job.precision = precision
        net = m.build_student(job).net
        dtypes = []
        orig = net.features

        def features(x, arch, ctx=None, _orig=orig):
            f = _orig(x, arch, ctx)
            dtypes.append(f.dtype)
            return f

        net.features = features
        clf, _ = linear_evaluation(job, net, m.config, np.random.default_rng(0))
        out[precision] = (clf.weight.detach().clone(), set(dtypes))
    assert out["fp32"][1] == {torch.float32} and out["bf16"][1] == {torch.bfloat16}
    assert out["bf16"][0].dtype == torch.float32 and torch.isfinite(out["bf16"][0]).all()
    assert not torch.equal(out["fp32"][0], out["bf16"][0])


def test_diverging_linear_evaluation_fails_the_job(tmp_path):
    job = make_job(tmp_path)
    m = _method(linear_lr=1e38)
    with pytest.raises(JobFailed, match=r"non-finite training loss .* \(pinas-linear\)"):  # the trainer's check
        linear_evaluation(job, m.build_student(job).net, m.config, np.random.default_rng(0))


def test_scores_come_from_the_linear_classifier(tmp_path):
    job = make_job(tmp_path)
    scorer = _method().fit(job)
    archs = [job.space.sample(np.random.default_rng(i)) for i in range(4)]
    s1 = scorer.score(archs)
    with torch.no_grad():
        scorer.classifier.weight.mul_(-1)
        scorer.classifier.bias.mul_(-1)
    s2 = scorer.score(archs)
    assert not np.allclose(s1, s2)


# --- unsupervised -----------------------------------------------------------------------
def test_supernet_training_ignores_labels(tmp_path):
    data = tiny_data(resolution=8)
    shuffled = dataclasses.replace(data, train_y=data.train_y[torch.randperm(len(data.train_y),
                                                                             generator=torch.Generator().manual_seed(1))])
    assert not torch.equal(shuffled.train_y, data.train_y)
    a = _method().fit(make_job(tmp_path / "a", data=data))
    b = _method().fit(make_job(tmp_path / "b", data=shuffled))
    _assert_same_state(_clone_state(a.student), _clone_state(b.student))
    _assert_same_state(_clone_state(a.teacher), _clone_state(b.teacher))
    # the labels do reach the linear classifier (the search), so it must differ
    assert not torch.equal(a.classifier.weight, b.classifier.weight)


# --- cost accounting --------------------------------------------------------------------
def test_path_passes_are_three_to_four_times_spos(tmp_path):
    spos_job, pinas_job = make_job(tmp_path / "s"), make_job(tmp_path / "p")
    Spos("spos", Spos.Config()).fit(spos_job)
    _method().fit(pinas_job)
    s, p = spos_job.counters.as_dict(), pinas_job.counters.as_dict()
    assert s["images_seen"] == p["images_seen"]  # same image budget
    info = pinas_job.state["pinas"]
    # training alone: 2 student forward+backward, 2 teacher forward per image
    assert info["train_forward_images"] == 4 * p["images_seen"]
    assert info["train_backward_images"] == 2 * p["images_seen"]
    ratio = (p["forward_passes_per_image"] + p["backward_passes_per_image"]) / (
        s["forward_passes_per_image"] + s["backward_passes_per_image"])
    assert 3.0 <= ratio <= 4.0  # linear evaluation adds one frozen forward per image


# --- downsample sharing -----------------------------------------------------------------
def test_no_ds_rejected_on_nb201(tmp_path):
    with pytest.raises(JobFailed, match="downsample"):
        create_method("pinas-no-ds").fit(make_job(tmp_path))


def test_no_ds_builds_unshared_supernet_where_supported(tmp_path):
    seen = []

    class ProbeLike(Nb201Space):
        supports_downsample_sharing = True

        def build_supernet(self, cfg, op_factory=None):
            seen.append(cfg.share_downsample)
            return super().build_supernet(cfg, op_factory)

    job = make_job(tmp_path, space=ProbeLike())
    create_method("pinas-no-ds").build_student(job)
    create_method("pinas").build_student(job)
    assert seen == [False, True]


# --- checkpoints ------------------------------------------------------------------------
def test_resume_reproduces_uninterrupted_run(tmp_path):
    full = _method().fit(make_job(tmp_path / "a"))
    job = make_job(tmp_path / "b", checkpoint_every=5)
    _method().fit(job)  # leaves the finished training (step 16) and linear step-15 checkpoints
    job2 = make_job(tmp_path / "b", checkpoint_every=5)  # same folder: resumes both
    resumed = _method().fit(job2)
    assert job2.state["resumed_from_step"] == 16 and job2.state["resumed"] == {"train": 16, LINEAR: 15}
    for part in ("student", "teacher", "classifier"):
        _assert_same_state(_clone_state(getattr(full, part)), _clone_state(getattr(resumed, part)))
    assert torch.equal(full.queue.buffer, resumed.queue.buffer)


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("stop_at,resumed_at", [(25, 19), (39, 38)])
def test_interrupted_linear_evaluation_resumes_with_identical_scores(tmp_path, monkeypatch, stop_at, resumed_at):
    """A job stopped during its linear evaluation (40 steps, checkpoints every 19: at 19 and 38)
    reruns in the same folder from the linear checkpoint, not from scratch, and ends with the
    uninterrupted job's classifier, training accuracy, counters and scores bit for bit; (39, 38)
    resumes inside the last 10 % of the steps, whose training accuracy the checkpoint carries."""
    over = dict(linear_epochs_ratio=2.5)  # 2.5 x 2 epochs x 8 batches = 40 linear steps
    archs = [Nb201Space().sample(np.random.default_rng(i)) for i in range(12)]
    ref_job = make_job(tmp_path / "full", checkpoint_every=19)
    ref = _method(**over).fit(ref_job)
    ref_scores = ref.score(archs)

    job = make_job(tmp_path / "part", checkpoint_every=19)
    decay = pinas_module.step_decay
    calls = []

    def interrupting(base, step, total, milestones, gamma=0.1):  # the linear trainer's lr schedule
        calls.append(step)
        if step == stop_at:
            raise _Interrupt
        return decay(base, step, total, milestones, gamma)

    monkeypatch.setattr(pinas_module, "step_decay", interrupting)
    with pytest.raises(_Interrupt):
        _method(**over).fit(job)
    monkeypatch.setattr(pinas_module, "step_decay", decay)
    assert calls == list(range(stop_at + 1))
    assert (job.job_dir / f"{LINEAR}-{CKPT}").is_file() and (job.job_dir / f"train-{CKPT}").is_file()

    job2 = make_job(tmp_path / "part", checkpoint_every=19)  # a fresh process in the same folder
    resumed = _method(**over).fit(job2)
    assert job2.state["resumed"] == {"train": 16, LINEAR: resumed_at}
    assert job2.state["resumed_from_step"] == 16  # the supernet's training did not rerun
    _assert_same_state(_clone_state(ref.classifier), _clone_state(resumed.classifier))
    assert resumed.info == ref.info and resumed.info["linear_steps"] == 40
    assert job2.counters == ref_job.counters
    np.testing.assert_array_equal(resumed.score(archs), ref_scores)


# --- augmentation -----------------------------------------------------------------------
def test_views_are_seeded_distinct_and_crop_is_exact_at_full_scale():
    x = torch.randn(6, 3, 8, 8)
    aug = ViewAugment()
    v1 = augment_views(x, 4, torch.Generator().manual_seed(3), aug)
    v2 = augment_views(x, 4, torch.Generator().manual_seed(3), aug)
    assert len(v1) == 4 and all(v.shape == x.shape for v in v1)
    assert all(torch.equal(a, b) for a, b in zip(v1, v2))
    assert not torch.allclose(v1[0], v1[1])
    plain = ViewAugment(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0, gray_p=0, blur_p=0)
    (same,) = augment_views(x, 1, torch.Generator().manual_seed(0), plain)
    torch.testing.assert_close(same, x, rtol=1e-5, atol=1e-5)
    flipped = dataclasses.replace(plain, flip_p=1.0)
    (mirror,) = augment_views(x, 1, torch.Generator().manual_seed(0), flipped)
    torch.testing.assert_close(mirror, x.flip(-1), rtol=1e-5, atol=1e-5)
    gray = dataclasses.replace(plain, gray_p=1.0, mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0))
    (g,) = augment_views(x.clamp(-0.5, 0.5), 1, torch.Generator().manual_seed(0), gray)
    torch.testing.assert_close(g[:, 0], g[:, 1])


# --- issue 19: who sees which view, what the queue holds, BN re-estimation, sampled-blocks EMA ------
def _is_teacher(net: nn.Module) -> bool:
    return not next(net.parameters()).requires_grad


def test_fit_sends_views_1_2_to_the_student_and_3_4_to_the_teacher(tmp_path, monkeypatch):
    steps, paths = [], []
    views_fn, paths_fn, forward = pinas_module.augment_views, pinas_module.sample_paths, pinas_module.PiNet.forward

    def rec_views(x, n_views, g, aug):
        out = views_fn(x, n_views, g, aug)
        if n_views == 4:
            steps.append({"views": out, "calls": []})
        return out

    def rec_paths(*a, **k):
        pair = paths_fn(*a, **k)
        paths.append(pair)
        return pair

    def rec_forward(self, x, arch, ctx=None):
        if steps:
            steps[-1]["calls"].append((_is_teacher(self), x, tuple(arch)))
        return forward(self, x, arch, ctx)

    monkeypatch.setattr(pinas_module, "augment_views", rec_views)
    monkeypatch.setattr(pinas_module, "sample_paths", rec_paths)
    monkeypatch.setattr(pinas_module.PiNet, "forward", rec_forward)
    _method().fit(make_job(tmp_path))
    assert len(steps) == len(paths) == 16
    for st, (arch_i, arch_j) in zip(steps, paths):
        v = st["views"]
        want = [(False, v[0], arch_i), (False, v[1], arch_j), (True, v[2], arch_i), (True, v[3], arch_j)]
        for (teacher, x, arch), (w_teacher, w_x, w_arch) in zip(st["calls"][:4], want):
            assert teacher == w_teacher and arch == w_arch and torch.equal(x, w_x)
        assert not any(torch.equal(v[a], v[b]) for a in range(4) for b in range(a))


def test_queue_entries_are_the_teachers_outputs(tmp_path, monkeypatch):
    seen = []
    loss_fn = pinas_module.pinas_loss

    def rec_loss(z_i, z_j, zt_i, zt_j, negatives, t):
        seen.append([z.detach().clone() for z in (z_i, z_j, zt_i, zt_j)])
        return loss_fn(z_i, z_j, zt_i, zt_j, negatives, t)

    monkeypatch.setattr(pinas_module, "pinas_loss", rec_loss)
    scorer = _method(queue_len=64).fit(make_job(tmp_path))  # batch 32: the last two steps' keys
    mean_key = lambda a, b: (F.normalize(a, dim=1) + F.normalize(b, dim=1)) / 2  # noqa: E731
    teacher_keys = torch.cat([mean_key(s[2], s[3]) for s in seen[-2:]])
    student_keys = torch.cat([mean_key(s[0], s[1]) for s in seen[-2:]])
    torch.testing.assert_close(scorer.queue.items(), teacher_keys, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(scorer.queue.items(), student_keys, atol=1e-3)


def test_grouped_forward_is_shuffle_bn():
    """Each sub-batch is normalised alone; the teacher's sub-batches are drawn from a shuffled order
    and its outputs come back in the data order."""
    bn = nn.BatchNorm1d(3, affine=False)
    net = lambda x, arch: bn(x)  # noqa: E731
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(pinas_module.grouped_forward(net, x, None, 1), bn(x))
    perm = torch.tensor([3, 0, 6, 1, 7, 2, 5, 4])
    out = pinas_module.grouped_forward(net, x, None, 2, perm)
    for chunk in perm.view(2, 4):  # images 3, 0, 6, 1 share statistics; so do 7, 2, 5, 4
        torch.testing.assert_close(out[chunk], bn(x[chunk]))
    plain = pinas_module.grouped_forward(net, x, None, 2)
    torch.testing.assert_close(plain[:4], bn(x[:4]))
    assert not torch.allclose(out, plain)  # query and key batches hold different images


def test_shuffle_bn_variant_trains_and_records_pretext_accuracy(tmp_path):
    job = make_job(tmp_path)
    scorer = _method("pinas-shuffle-bn").fit(job)
    info = job.state["pinas"]
    assert info["shuffle_bn_groups"] == 4 and 0.0 <= info["pretext_top1_last10pct"] <= 1.0
    assert np.all(np.isfinite(scorer.score([job.space.sample(np.random.default_rng(0))])))


def _bn_of(modules) -> set[int]:
    return {id(b) for m in modules for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)}


def test_recalibration_reestimates_only_the_scored_paths_bn_and_leaves_training_state(tmp_path):
    job = make_job(tmp_path)
    scorer = _method().fit(job)
    assert scorer.evaluator.bn_mode == "recal"
    net = scorer.student.net
    arch = job.space.sample(np.random.default_rng(5))
    on_path = _bn_of(m for (d, c), mods in scorer.student.ops.items() if arch[d] == c for m in mods)
    off_path = _bn_of(m for (d, c), mods in scorer.student.ops.items() if arch[d] != c for m in mods)
    assert on_path and off_path
    before = {part: _clone_state(getattr(scorer, part)) for part in ("student", "teacher", "classifier")}
    queue, rng_state = scorer.queue.buffer.clone(), torch.random.get_rng_state()
    inputs, used = {}, {}

    def hook(bn, args, _out):
        if bn.training:  # re-estimation pass: the per-batch channel means of the BN's input
            inputs.setdefault(id(bn), []).append(args[0].detach().mean((0, 2, 3)))
        else:  # scoring pass: the statistics it normalises with
            used[id(bn)] = bn.running_mean.clone()

    handles = [b.register_forward_hook(hook) for b in net.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
    try:
        scorer.score([arch])
    finally:
        for h in handles:
            h.remove()
    assert not set(used) & off_path and not set(inputs) & off_path  # other paths' BN never runs
    ran_ops = set(used) & on_path
    assert ran_ops
    for key in used:  # BN re-estimated on the training images (cumulative mean of the batch means)
        torch.testing.assert_close(used[key], torch.stack(inputs[key]).mean(0), rtol=1e-4, atol=1e-5)
        assert not torch.equal(used[key], dict(net.named_buffers())[
            next(n for n, b in net.named_modules() if id(b) == key) + ".running_mean"])
    for part, state in before.items():  # ...and every buffer is back afterwards
        _assert_same_state(state, _clone_state(getattr(scorer, part)))
    assert torch.equal(queue, scorer.queue.buffer) and torch.equal(rng_state, torch.random.get_rng_state())


def test_batch_bn_variant_scores_with_batch_statistics(tmp_path):
    job = make_job(tmp_path)
    scorer = _method("pinas-batch-bn").fit(job)
    assert scorer.evaluator.bn_mode == "batch" and job.state["pinas"]["recal_images"] == 0


def test_recal_images_are_a_seeded_draw_not_a_prefix(tmp_path):
    job = make_job(tmp_path)
    order = torch.argsort(job.data.train_y, stable=True)  # a class-sorted training split
    job.data = dataclasses.replace(job.data, train_x=job.data.train_x[order], train_y=job.data.train_y[order])
    x = pinas_module.train_images(job, 64, "pinas-recal-images")
    labels = [int(job.data.train_y[(job.data.train_x == xi).flatten(1).all(1)][0]) for xi in x]
    assert len(x) == 64 and len(set(labels)) > 3
    assert torch.equal(x, pinas_module.train_images(job, 64, "pinas-recal-images"))


def test_sampled_blocks_only_ema_leaves_the_other_blocks(tmp_path, monkeypatch):
    paths = []
    paths_fn = pinas_module.sample_paths
    monkeypatch.setattr(pinas_module, "sample_paths", lambda *a, **k: paths.append(paths_fn(*a, **k)) or paths[-1])
    job = make_job(tmp_path / "a", epochs=0.125)  # one step
    m = _method("pinas-sampled-ema")
    init = m.build_student(make_job(tmp_path / "b"))
    scorer = m.fit(job)
    lam = job.state["pinas"]["ema_lambda"]
    (arch_i, arch_j), = paths
    skip = Pinas.unsampled_params(scorer.student, [arch_i, arch_j])
    assert skip and len(skip) < len(list(init.parameters()))
    for i, (w0, t, s) in enumerate(zip(init.parameters(), scorer.teacher.parameters(), scorer.student.parameters())):
        if i in skip:
            assert torch.equal(t, w0)  # not on path i or j: the teacher keeps its weights
        else:
            torch.testing.assert_close(t, lam * w0 + (1 - lam) * s, rtol=1e-6, atol=1e-7)
    # skipped = candidate operators of choices on neither path, nothing else
    ops_off = {id(p) for (d, c), mods in scorer.student.ops.items() if c not in (arch_i[d], arch_j[d])
               for mod in mods for p in mod.parameters()}
    params = list(scorer.student.parameters())
    assert {id(params[i]) for i in skip} == ops_off


def test_uninformative_warnings_fire_on_shortcut_and_chance_only():
    cfg = pinas_module.PinasConfig()
    healthy = {"pretext_top1_last10pct": 0.4, "linear_train_acc_last10pct": 0.45}
    assert pinas_module.uninformative_warnings(healthy, 10, cfg) == []
    shortcut = pinas_module.uninformative_warnings({**healthy, "pretext_top1_last10pct": 0.95}, 10, cfg)
    assert len(shortcut) == 1 and "0.950" in shortcut[0][0] and "0.450" in shortcut[0][0]
    assert shortcut[0][1] == {"pinas_pretext_top1": 0.95}
    chance = pinas_module.uninformative_warnings({**healthy, "linear_train_acc_last10pct": 0.12}, 10, cfg)
    assert len(chance) == 1 and "1/10 = 0.100" in chance[0][0] and chance[0][1] == {"pinas_linear_acc": 0.12}
    # the threshold is relative to the class count: 0.12 is well above chance for 100 classes
    assert pinas_module.uninformative_warnings({**healthy, "linear_train_acc_last10pct": 0.12}, 100, cfg) == []
    both = pinas_module.uninformative_warnings({"pretext_top1_last10pct": 1.0, "linear_train_acc_last10pct": 0.1},
                                               10, cfg)
    assert len(both) == 2
    # no negatives (pinas-no-neg): no pretext accuracy, no shortcut warning
    assert pinas_module.uninformative_warnings({"pretext_top1_last10pct": None,
                                                "linear_train_acc_last10pct": 0.5}, 10, cfg) == []


def test_a_finished_job_records_the_warning_it_triggers(tmp_path):
    """The fit path hands every warning to Job.warn (chance_factor 100: any accuracy is 'near
    chance' for 10 classes), and a healthy threshold leaves the job without it."""
    for factor, warned in ((100.0, True), (0.0, False)):
        job = make_job(tmp_path / str(factor), epochs=1)
        m = create_method("pinas")
        Pinas("pinas", dataclasses.replace(m.config, chance_factor=factor)).fit(job)
        assert any("near chance" in w for w in job.warnings) is warned
        assert ("pinas_linear_acc" in job.extra) is warned
