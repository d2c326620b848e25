"""Crash and resume, corrupt checkpoints, numeric failures, run-folder locking."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.core.errors import HarnessError
from harness.core.io import RunLock
from harness.engine.trainer import SupernetTrainer
from harness.engine.method import JobFailed, Method, register_method
from tests.conftest import make_job

REPO = Path(__file__).resolve().parents[3]


def _cli(shared_dir, out, *extra):
    return [sys.executable, "-m", "harness.cli", "run", "--suite", "nb201", "--methods", "spos", "--seeds", "0",
            "--archs", "sample:20", "--out", str(out), "--data-dir", str(shared_dir), "--no-progress", "--no-report",
            "--set", "epochs=0.6", "--set", "checkpoint_every=10", "--set", "score_size=128",
            "--set", "eval_batch_size=128", "--set", "threads=1", *extra]


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_estimates(shared_dir, tmp_path):
    env = {**os.environ, "HARNESS_CACHE_DIR": os.environ.get("HARNESS_CACHE_DIR", str(tmp_path / "cache"))}
    # uninterrupted reference
    ref = tmp_path / "ref"
    subprocess.run(_cli(shared_dir, ref), check=True, env=env, cwd=REPO, capture_output=True)
    # start, wait for a checkpoint past step 0, SIGKILL mid-training
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(shared_dir, out), env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = out / "jobs" / "spos-s0" / "train-ckpt.pt.sha256"
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; lengthen it"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "jobs" / "spos-s0" / "result.json").exists()
    subprocess.run(_cli(shared_dir, out), check=True, env=env, cwd=REPO, capture_output=True)
    man = json.loads((out / "manifest.json").read_text())
    assert man["jobs"]["spos-s0"]["resumed_from_step"] > 0
    a = pd.read_csv(ref / "estimates.csv")
    b = pd.read_csv(out / "estimates.csv")
    pd.testing.assert_frame_equal(a, b)
    # fidelity-curve points survive the kill: the same points, scores and metrics as uninterrupted
    ca = pd.read_csv(ref / "jobs" / "spos-s0" / "curve_scores.csv")
    cb = pd.read_csv(out / "jobs" / "spos-s0" / "curve_scores.csv")
    assert ca["point"].nunique() == 4  # smoke: 4 points
    pd.testing.assert_frame_equal(ca, cb)
    pd.testing.assert_frame_equal(pd.read_csv(ref / "curves.csv"), pd.read_csv(out / "curves.csv"))


def _train(job, steps_done_cb=None):
    torch.manual_seed(0)
    model = job.build_supernet()
    rng = job.rng("path")

    def step(x, y, i):
        loss = torch.nn.functional.cross_entropy(model(x, job.space.sample(rng)), y)
        loss.backward()
        return loss

    tr = SupernetTrainer(job, model)
    tr.run(step, get_state=lambda: {"rng": rng.bit_generator.state},
           set_state=lambda s: setattr(rng.bit_generator, "state", s["rng"]))
    return model, tr


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path):
    job = make_job(tmp_path, checkpoint_every=4)
    ref_model, tr = _train(job)
    ckpt = tr.ckpt_path
    prev = ckpt.with_name("train-ckpt.prev.pt")
    assert ckpt.exists() and prev.exists()
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip a byte: checksum mismatch
    ckpt.write_bytes(bytes(data))
    job2 = make_job(tmp_path, checkpoint_every=4)  # same job dir
    model2, tr2 = _train(job2)
    assert job2.state["resumed_from_step"] == 8  # prev (step 8), not the corrupt one (step 12)
    for (k, a), b in zip(ref_model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k


def test_truncated_checkpoint_is_detected(tmp_path):
    job = make_job(tmp_path, checkpoint_every=4)
    _, tr = _train(job)
    for p in tr.ckpt_path.parent.glob("train-ckpt*.pt"):
        p.write_bytes(p.read_bytes()[:100])
    job2 = make_job(tmp_path, checkpoint_every=4)
    _train(job2)
    assert "resumed_from_step" not in job2.state  # both corrupt: trained from scratch, no crash


@register_method("test-nan-loss")
class _NanMethod(Method):
    def fit(self, job):
        model = job.build_supernet()

        def step(x, y, i):
            loss = model(x, job.space.sample(job.rng("p"))).sum() * float("nan")
            loss.backward()
            return loss

        SupernetTrainer(job, model).run(step)
        raise AssertionError("unreachable: NaN loss must stop training")


def test_nan_loss_marks_job_failed_with_step(tmp_path):
    job = make_job(tmp_path)
    with pytest.raises(JobFailed, match="non-finite training loss") as info:
        _NanMethod("test-nan-loss", _NanMethod.Config()).fit(job)
    assert info.value.step and info.value.step > 0


@pytest.mark.slow
def test_failed_job_does_not_stop_others(shared_dir, tmp_path):
    from harness.study.runner import run
    from harness.study.spec import RunConfig

    out = tmp_path / "run"
    run(RunConfig(methods=("test-nan-loss", "params"), seeds=(0,), archs="sample:10", out=str(out),
                  data_dir=str(shared_dir), progress=False, report=False,
                  budget_overrides=(("epochs", 0.05), ("score_size", 128), ("threads", 1))))
    man = json.loads((out / "manifest.json").read_text())
    assert man["jobs"]["test-nan-loss-s0"]["status"] == "failed"
    assert "non-finite" in man["jobs"]["test-nan-loss-s0"]["reason"]
    assert man["jobs"]["params-s0"]["status"] == "done"
    met = pd.read_csv(out / "metrics.csv")
    bad = met[met.method == "test-nan-loss"]
    assert (bad.status == "failed").all() and bad.value.isna().all()


@pytest.mark.slow
def test_cli_exit_code_1_when_a_job_failed(shared_dir, tmp_path, capsys):
    from harness.cli import main

    common = ["--seeds", "0", "--archs", "sample:10", "--no-progress", "--no-report", "--data-dir", str(shared_dir),
              "--set", "epochs=0.05", "--set", "score_size=128", "--set", "threads=1"]
    assert main(["run", "--methods", "test-nan-loss,params", "--out", str(tmp_path / "bad"), *common]) == 1
    assert "1 of 2 job(s) did not finish: test-nan-loss-s0" in capsys.readouterr().err
    assert (tmp_path / "bad" / "metrics.csv").is_file()  # the run folder is complete
    assert main(["run", "--methods", "params", "--out", str(tmp_path / "good"), *common]) == 0


def test_lock_refuses_second_writer_and_takes_over_stale(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / ".lock").write_text(str(child.pid))
        with pytest.raises(HarnessError, match=f"locked by PID {child.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        child.kill()
        child.wait()
    lock = RunLock(tmp_path).acquire()  # the owner is dead now: stale lock taken over
    assert lock.taken_over_from == child.pid
    assert (tmp_path / ".lock").read_text() == str(os.getpid())
    lock.release()
    assert not (tmp_path / ".lock").exists()
