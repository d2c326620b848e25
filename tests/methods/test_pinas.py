"""Pi-NAS mechanism tests: Eq. 2 EMA, FIFO feature container, cross-path sampling, Eq. 4 by hand,
collapse of the no-negatives ablation, frozen linear evaluation, label independence, cost."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
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
