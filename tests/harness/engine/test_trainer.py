"""The shared training loop: gradient clipping, the NaN check, checkpoint + resume bit for bit,
the cosine learning-rate schedule."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.engine.job import TrainingHooks
from harness.engine.method import JobFailed, rng_state_hooks
from harness.engine.trainer import CKPT, CKPT_PREV, SupernetTrainer, cosine_lr
from tests.conftest import make_job


def _linear(job) -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(3 * job.budget.resolution ** 2, job.data.num_classes)


def _grad_norm(params) -> float:
    return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))


# --- gradient clipping ------------------------------------------------------------------------
def test_clip_threshold_comes_from_the_budget_and_its_firing_is_recorded(tmp_path):
    """Default: the budget's grad_clip (x the method's scale). Every step of a loss scaled by 1e4
    is clipped; of an unscaled loss under a huge threshold, none. The record counts the steps
    whose total norm exceeded the threshold and the norms seen."""
    def run(job, scale_loss, **kw):
        model = _linear(job)
        trainer = SupernetTrainer(job, model, **kw)
        norms = []

        def step(x, y, i):
            loss = scale_loss * F.cross_entropy(model(x.flatten(1)), y)
            loss.backward()
            norms.append(_grad_norm(model.parameters()))
            return loss

        trainer.run(step)
        return trainer, norms

    job = make_job(tmp_path / "a", epochs=0.5, grad_clip=2.0)
    trainer, norms = run(job, 1e4, grad_clip_scale=1.5)
    assert trainer.grad_clip == 3.0
    rec = job.extra["grad_clip"]["train"]
    assert rec["threshold"] == 3.0 and rec["steps"] == 4 == rec["clipped_steps"] and rec["clipped_fraction"] == 1.0
    assert rec["grad_norm_max"] == pytest.approx(max(norms), rel=1e-5)
    assert rec["grad_norm_mean"] == pytest.approx(np.mean(norms), rel=1e-5)
    job = make_job(tmp_path / "b", epochs=0.5, grad_clip=1e6)
    run(job, 1.0)
    assert job.extra["grad_clip"]["train"]["clipped_steps"] == 0
    # off: grad_clip 0 in the budget; a loop's own explicit value wins over the budget
    job = make_job(tmp_path / "c", epochs=0.5, grad_clip=0)
    trainer, _ = run(job, 1e4)
    assert trainer.grad_clip is None and job.extra["grad_clip"]["train"]["rule"] == "off"
    job = make_job(tmp_path / "d", epochs=0.5, grad_clip=0)
    trainer, _ = run(job, 1e4, grad_clip=0.5, name="head")
    assert trainer.grad_clip == 0.5 and job.extra["grad_clip"]["head"]["clipped_fraction"] == 1.0


@pytest.mark.parametrize("clip", [0.5, 2.0])
def test_budget_clip_equals_an_explicit_clip_bit_for_bit(tmp_path, clip):
    """The budget field reproduces what an explicit grad_clip did (the committed numbers)."""
    out = []
    for name, kw, budget in (("explicit", {"grad_clip": clip}, {}), ("budget", {}, {"grad_clip": clip})):
        job = make_job(tmp_path / name, epochs=0.5, **budget)
        model = _linear(job)

        def step(x, y, i, model=model):
            loss = 30 * F.cross_entropy(model(x.flatten(1)), y)
            loss.backward()
            return loss

        SupernetTrainer(job, model, **kw).run(step)
        out.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(out[0], out[1])



@pytest.mark.parametrize("clip", [0.5, 2.0])
def test_gradients_are_clipped_to_the_trainers_norm(tmp_path, clip):
    """A loss scaled by 1e4 has gradients far above the clip: each applied update is lr x the
    clipped gradient, whose norm is the clip (momentum and weight decay off to see it exactly)."""
    job = make_job(tmp_path, epochs=0.5)
    model = _linear(job)
    trainer = SupernetTrainer(job, model, grad_clip=clip, momentum=0.0, weight_decay=0.0, nesterov=False)
    raw_norms, applied, before = [], [], {}

    def step(x, y, i):
        before.update({n: p.detach().clone() for n, p in model.named_parameters()})
        loss = 1e4 * F.cross_entropy(model(x.flatten(1)), y)
        loss.backward()
        raw_norms.append(_grad_norm(model.parameters()))
        return loss

    def after(i):
        lr = trainer.optimizer.param_groups[0]["lr"]
        delta = [(before[n] - p.detach()) / lr for n, p in model.named_parameters()]
        applied.append(float(torch.linalg.vector_norm(torch.stack([d.norm() for d in delta]))))
        assert _grad_norm(model.parameters()) == pytest.approx(clip, rel=1e-5)

    trainer.run(step, after_step=after)
    assert len(applied) == trainer.total_steps == 4
    assert min(raw_norms) > 10 * clip
    assert applied == pytest.approx([clip] * len(applied), rel=1e-4)


def test_no_clip_leaves_gradients_as_they_are(tmp_path):
    job = make_job(tmp_path, epochs=0.5)
    model = _linear(job)
    trainer = SupernetTrainer(job, model, grad_clip=None)
    raw, seen = [], []

    def step(x, y, i):
        loss = 1e4 * F.cross_entropy(model(x.flatten(1)), y)
        loss.backward()
        raw.append(_grad_norm(model.parameters()))
        return loss

    trainer.run(step, after_step=lambda i: seen.append(_grad_norm(model.parameters())))
    assert seen == raw and min(seen) > 10


# --- the NaN check ----------------------------------------------------------------------------
@pytest.mark.parametrize("bad_step", [3, 27, 49])
def test_non_finite_loss_fails_the_job_with_its_step(tmp_path, bad_step):
    """A NaN loss at step ``bad_step`` raises JobFailed at the next check (checks run every 20
    steps and at the last one), naming that step; no step runs after it."""
    job = make_job(tmp_path, epochs=50 / 8)  # 256 images / batch 32 = 8 steps per epoch -> 50 steps
    model = _linear(job)
    trainer = SupernetTrainer(job, model)
    assert trainer.total_steps == 50
    calls = []

    def step(x, y, i):
        calls.append(i)
        loss = F.cross_entropy(model(x.flatten(1)), y)
        loss.backward()
        return loss * float("nan") if i == bad_step else loss

    with pytest.raises(JobFailed, match="non-finite training loss") as info:
        trainer.run(step)
    detected = info.value.step
    assert bad_step < detected <= min(bad_step + 20, trainer.total_steps)
    assert detected % 20 == 0 or detected == trainer.total_steps
    assert str(detected) in str(info.value)
    assert len(calls) == detected == job.counters.steps


# --- checkpoint and resume ----------------------------------------------------------------------
class _Interrupt(Exception):
    pass


def _spos_like_run(job, stop_at: int | None = None):
    """A supernet trained with a numpy path stream and torch-RNG dropout, so every piece of state
    a checkpoint holds (weights, optimizer, torch RNG, method RNG, counters) matters for the result."""
    model = job.build_supernet()
    rng = job.rng("path")
    trainer = SupernetTrainer(job, model)

    def step(x, y, i):
        if stop_at is not None and i == stop_at:
            raise _Interrupt
        logits = F.dropout(model(x, job.space.sample(rng)), 0.3)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        job.counters.add_path(len(x))
        return loss

    trainer.run(step, **rng_state_hooks(rng))
    return model, trainer, rng


@pytest.mark.parametrize("corrupt_latest", [False, True])
def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path, corrupt_latest):
    """Stopped at step 10 (checkpoints every 4 steps: 4 and 8 written), a new model, trainer and
    job counters resume from the checkpoint (or, if the newest is corrupt, the one before) and
    finish with the uninterrupted run's weights, optimizer state, path stream and counters."""
    full = make_job(tmp_path / "full", checkpoint_every=4)
    ref_model, ref_trainer, ref_rng = _spos_like_run(full)
    ref_torch_rng = torch.get_rng_state()

    part = make_job(tmp_path / "part", checkpoint_every=4)
    with pytest.raises(_Interrupt):
        _spos_like_run(part, stop_at=10)
    ckpt = part.job_dir / f"train-{CKPT}"
    assert ckpt.is_file() and (part.job_dir / f"train-{CKPT_PREV}").is_file()
    if corrupt_latest:
        raw = bytearray(ckpt.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        ckpt.write_bytes(bytes(raw))

    resumed = make_job(tmp_path / "part", checkpoint_every=4)  # a fresh process: new counters
    model, trainer, rng = _spos_like_run(resumed)
    assert torch.equal(torch.get_rng_state(), ref_torch_rng)  # dropout drew the same numbers after resuming
    assert resumed.state["resumed_from_step"] == (4 if corrupt_latest else 8)
    ref_state, state = ref_model.state_dict(), model.state_dict()
    assert ref_state.keys() == state.keys()
    for k in ref_state:
        assert torch.equal(ref_state[k], state[k]), k
    ref_opt, opt = ref_trainer.optimizer.state_dict()["state"], trainer.optimizer.state_dict()["state"]
    assert ref_opt.keys() == opt.keys() and all(
        torch.equal(ref_opt[i]["momentum_buffer"], opt[i]["momentum_buffer"]) for i in ref_opt)
    assert resumed.counters == full.counters and resumed.counters.steps == ref_trainer.total_steps
    assert rng.bit_generator.state == ref_rng.bit_generator.state
    # the clip statistics continue across the checkpoint too
    assert resumed.extra["grad_clip"] == full.extra["grad_clip"]


def test_resume_without_a_checkpoint_starts_from_step_zero(tmp_path):
    job = make_job(tmp_path, checkpoint_every=0)
    _, trainer, _ = _spos_like_run(job)
    assert "resumed_from_step" not in job.state and not (job.job_dir / f"train-{CKPT}").exists()
    assert job.counters.steps == trainer.total_steps


# --- the learning-rate schedule ----------------------------------------------------------------
def test_cosine_lr_endpoints_and_shape():
    assert cosine_lr(0.1, 0, 100) == pytest.approx(0.1)
    assert cosine_lr(0.1, 100, 100) == pytest.approx(0.0, abs=1e-15)
    assert cosine_lr(0.1, 50, 100) == pytest.approx(0.05)
    assert cosine_lr(0.1, 100, 100, final=0.01) == pytest.approx(0.01)
    assert cosine_lr(0.1, 0, 100, final=0.01) == pytest.approx(0.1)
    values = [cosine_lr(0.1, s, 100) for s in range(101)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert cosine_lr(0.1, 0, 0) == pytest.approx(0.1)  # no division by zero


def test_trainer_follows_the_cosine_schedule_from_the_budget_lr(tmp_path):
    job = make_job(tmp_path, epochs=2, lr=0.2)
    model = _linear(job)
    trainer = SupernetTrainer(job, model, final_lr=0.01)
    lrs = []

    def step(x, y, i):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        loss = F.cross_entropy(model(x.flatten(1)), y)
        loss.backward()
        return loss

    trainer.run(step)
    total = trainer.total_steps
    assert total == 16 and len(lrs) == total
    assert lrs[0] == pytest.approx(0.2)  # the first step uses the base rate
    assert lrs == pytest.approx([0.01 + 0.5 * 0.19 * (1 + math.cos(math.pi * s / total)) for s in range(total)])
    assert lrs[-1] > 0.01 and np.all(np.diff(lrs) < 0)  # the final rate is the limit, not a step


# --- loops other than supernet training (Pi-NAS's linear evaluation) ----------------------------
class _CountingHooks:
    def __init__(self):
        self.calls = 0

    def on_train_start(self, model, job):
        self.calls += 1

    def on_step(self, model, step, total):
        self.calls += 1

    def on_train_end(self, model, job):
        self.calls += 1


def test_trainer_backward_matches_a_step_that_runs_its_own(tmp_path):
    """``backward=True`` (the loop calls ``loss.backward()``) gives the same weights bit for bit as a
    step that calls it itself."""
    out = []
    for own in (True, False):
        job = make_job(tmp_path / str(own), epochs=1)
        model = _linear(job)
        trainer = SupernetTrainer(job, model, backward=not own)

        def step(x, y, i, model=model, own=own):
            loss = F.cross_entropy(model(x.flatten(1)), y)
            if own:
                loss.backward()
            return loss

        trainer.run(step)
        out.append({k: v.clone() for k, v in model.state_dict().items()})
    assert all(torch.equal(out[0][k], out[1][k]) for k in out[0])


def test_trainer_options_for_a_head_on_frozen_features(tmp_path):
    """``steps``, ``lr_schedule``, no clipping, ``hooks`` replaced, ``counts_toward_budget=False``
    (path passes still count) and ``checkpoints=False`` (no file written, none resumed)."""
    job = make_job(tmp_path, checkpoint_every=2)
    job.hooks = hooks = _CountingHooks()
    model = _linear(job)
    lrs = []
    trainer = SupernetTrainer(job, model, steps=5, grad_clip=None, backward=True, name="head",
                              lr_schedule=lambda s, n: 0.1 * (s + 1) / n, hooks=TrainingHooks(),
                              checkpoints=False, counts_toward_budget=False)

    def step(x, y, i):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        job.counters.add_path(len(x), forward=1, backward=0)
        return F.cross_entropy(model(x.flatten(1)), y)

    trainer.run(step)
    assert lrs == pytest.approx([0.1 * (s + 1) / 5 for s in range(5)])
    assert hooks.calls == 0 and job.counters.steps == job.counters.images_seen == 0
    assert job.counters.path_forward == 5 and not list(job.job_dir.glob("*ckpt*"))
    # with checkpoints: its own file; a rerun resumes it without touching `resumed_from_step`
    SupernetTrainer(job, model, steps=5, name="head", counts_toward_budget=False, backward=True).run(step)
    assert (job.job_dir / f"head-{CKPT}").is_file()
    job2 = make_job(tmp_path, checkpoint_every=2)
    model2 = _linear(job2)
    SupernetTrainer(job2, model2, steps=5, name="head", counts_toward_budget=False, backward=True).run(
        lambda x, y, i: F.cross_entropy(model2(x.flatten(1)), y))
    assert job2.state["resumed"] == {"head": 4} and "resumed_from_step" not in job2.state
