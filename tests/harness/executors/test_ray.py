"""``--executor ray`` on a local Ray instance bound to loopback: same metrics as ``local``, jobs in
Ray worker processes, and a crashed job retried from its checkpoint with its attempts recorded."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.engine.job import TrainingHooks
from harness.study.runner import run
from harness.study.spec import RunConfig

# Before importing ray: take the loopback address as this node's IP (Ray then binds every socket to
# 127.0.0.1 instead of the machine's address) and send no usage statistics.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'supernet-harness[ray]')")

TINY = (("epochs", 0.04), ("score_size", 128), ("eval_batch_size", 128), ("threads", 1), ("checkpoint_every", 4))


def tiny_config(shared_dir, out, **kw) -> RunConfig:
    base = dict(suite="nb201", methods=("spos", "params"), seeds=(0, 1), budget="smoke", archs="sample:20",
                out=str(out), data_dir=str(shared_dir), progress=False, report=False, budget_overrides=TINY)
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():  # pragma: no cover - another test left one running
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", object_store_memory=100 << 20,
             log_to_driver=False)
    # the crash hook below is defined in this test module, which workers may not import: ship it by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_run(shared_dir, tmp_path_factory) -> Path:
    return run(tiny_config(shared_dir, tmp_path_factory.mktemp("local") / "run"), out_stream=open(os.devnull, "w"))


@pytest.mark.slow
def test_ray_gives_the_local_metrics_from_worker_processes(local_ray, local_run, shared_dir, tmp_path):
    ray_dir = run(tiny_config(shared_dir, tmp_path / "ray", executor="ray"), out_stream=open(os.devnull, "w"))
    for name in ("metrics.csv", "estimates.csv", "summary.csv"):
        assert (ray_dir / name).read_bytes() == (local_run / name).read_bytes(), name
    man = json.loads((ray_dir / "manifest.json").read_text())
    assert set(man["jobs"]) == {f"{m}-s{s}" for m in ("spos", "params") for s in (0, 1)}
    for job in man["jobs"].values():
        assert job["status"] == "done" and job["executor"] == "ray"
        assert job["pid"] != os.getpid()  # ran in a Ray worker, not in the driver
        assert [a["outcome"] for a in job["attempts"]] == ["ok"]
        assert job["attempts"][0]["pid"] == job["pid"]
    local_man = json.loads((local_run / "manifest.json").read_text())
    assert {j["pid"] for j in local_man["jobs"].values()} == {os.getpid()}


class CrashOnce(TrainingHooks):
    """Kills the worker process (like a preemption) at ``at_step`` the first time only."""

    def __init__(self, marker: Path, at_step: int):
        self.marker, self.at_step = marker, at_step

    def on_step(self, model, step: int, total: int) -> None:
        if step == self.at_step and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(17)


class CrashOnceFactory:
    def __init__(self, marker: Path, at_step: int):
        self.marker, self.at_step = marker, at_step

    def __call__(self, job, run_dir):
        return CrashOnce(self.marker, self.at_step)


@pytest.mark.slow
def test_crashed_job_is_retried_from_its_checkpoint(local_ray, local_run, shared_dir, tmp_path):
    marker = tmp_path / "crashed-once"
    cfg = tiny_config(shared_dir, tmp_path / "ray", executor="ray", methods=("spos",), seeds=(1,), max_retries=1)
    ray_dir = run(cfg, out_stream=open(os.devnull, "w"), hooks_factory=CrashOnceFactory(marker, at_step=6))
    job = json.loads((ray_dir / "manifest.json").read_text())["jobs"]["spos-s1"]
    assert marker.exists() and job["status"] == "done"
    assert [a["outcome"] for a in job["attempts"]] == ["failed", "ok"]
    assert job["attempts"][0]["pid"] == int(marker.read_text())  # the attempt that died
    assert job["state"]["resumed_from_step"] == 4  # the second attempt resumed from the step-4 checkpoint
    # resuming is exact: the same scores as the uninterrupted local job
    a = pd.read_csv(ray_dir / "jobs" / "spos-s1" / "scores.csv")
    b = pd.read_csv(local_run / "jobs" / "spos-s1" / "scores.csv")
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.slow
def test_job_failing_every_attempt_is_recorded_not_fatal(local_ray, local_run, shared_dir, tmp_path):
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    cfg = tiny_config(shared_dir, tmp_path / "ray", executor="ray", methods=("spos",), seeds=(0,), max_retries=0)
    ray_dir = run(cfg, out_stream=open(os.devnull, "w"), hooks_factory=CrashOnceFactory(marker_dir / "m", at_step=2))
    job = json.loads((ray_dir / "manifest.json").read_text())["jobs"]["spos-s0"]
    assert job["status"] == "crashed" and len(job["attempts"]) == 1
    assert job["attempts"][0]["outcome"] == "failed" and "attempt" in job["reason"]
    met = pd.read_csv(ray_dir / "metrics.csv")
    assert (met["status"] == "crashed").all() and met["value"].isna().all()


def test_ray_job_resources_follow_budget_and_device():
    from harness.executors.ray import job_resources

    assert job_resources(RunConfig(budget="smoke")) == {"num_cpus": 2, "num_gpus": 0}
    assert job_resources(RunConfig(budget="paper", device="cuda")) == {"num_cpus": 8, "num_gpus": 1}
    assert job_resources(RunConfig(budget="smoke", budget_overrides=(("threads", 1),)))["num_cpus"] == 1
