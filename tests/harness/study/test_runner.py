"""End-to-end tiny runs on the real data: run-folder schema, determinism, resume."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from harness.study.runner import run
from harness.study.spec import RunConfig

TINY = (("epochs", 0.04), ("score_size", 128), ("eval_batch_size", 128), ("threads", 1), ("checkpoint_every", 4))


def tiny_config(shared_dir, out, **kw):
    base = dict(suite="nb201", methods=("spos", "params", "random"), seeds=(0, 1), budget="smoke",
                archs="sample:30", out=str(out), data_dir=str(shared_dir), progress=False, report=False,
                budget_overrides=TINY)
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture(scope="module")
def tiny_run(shared_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r1"
    run(tiny_config(shared_dir, out))
    return out


@pytest.mark.slow
def test_run_folder_schema(tiny_run):
    for name in ("manifest.json", "estimates.csv", "metrics.csv", "summary.csv"):
        assert (tiny_run / name).is_file()
    man = json.loads((tiny_run / "manifest.json").read_text())
    assert man["status"] == "done" and man["seeds"] == [0, 1]
    assert man["scaled_down"]["channels"] == {"budget": 8, "paper": 16}
    assert set(man["jobs"]) == {f"{m}-s{s}" for m in ("spos", "params", "random") for s in (0, 1)}
    spos = man["jobs"]["spos-s0"]
    assert spos["status"] == "done" and spos["counters"]["images_seen"] > 0
    assert spos["counters"]["forward_passes_per_image"] == pytest.approx(1.0)
    # the budget's gradient clip is in the manifest; each job's extra has its firing rate and warnings
    assert man["budget"]["grad_clip"] == 5.0
    clip = spos["extra"]["grad_clip"]["train"]
    assert clip["threshold"] == 5.0 and clip["steps"] == spos["counters"]["steps"]
    assert 0 <= clip["clipped_steps"] <= clip["steps"] and clip["grad_norm_mean"] > 0
    assert all(man["jobs"][j]["extra"]["warnings"] == [] for j in man["jobs"])
    # CPU seconds beside wall seconds (training is CPU-bound: more than nothing, at most every core busy)
    assert 0 < spos["cpu_s"] <= spos["wall_s"] * (os.cpu_count() or 1) + 1.0
    est = pd.read_csv(tiny_run / "estimates.csv")
    assert list(est.columns) == ["method", "seed", "subset", "arch_index", "arch", "score"]
    assert len(est) == 3 * 2 * 30
    # the same architectures for every method and seed
    sets = est.groupby(["method", "seed"])["arch_index"].apply(lambda s: tuple(sorted(s)))
    assert sets.nunique() == 1
    met = pd.read_csv(tiny_run / "metrics.csv")
    assert {"kendall_tau", "spearman_rho", "high_low_tau", "precision_at_k", "picked_gt", "regret"} <= set(met.metric)
    summ = pd.read_csv(tiny_run / "summary.csv")
    row = summ[(summ.method == "params") & (summ.metric == "kendall_tau")]
    assert row["n_seeds"].iloc[0] == 2 and row["std"].iloc[0] == pytest.approx(0.0)
    assert (tiny_run / "jobs" / "spos-s0" / "log.txt").read_text().count("step") > 0


@pytest.mark.slow
def test_same_config_same_numbers(tiny_run, shared_dir, tmp_path):
    out = tmp_path / "again"
    run(tiny_config(shared_dir, out, methods=("spos",), seeds=(1,)))
    a = pd.read_csv(tiny_run / "estimates.csv").query("method == 'spos' and seed == 1").reset_index(drop=True)
    b = pd.read_csv(out / "estimates.csv").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.slow
def test_rerun_resumes_finished_jobs(tiny_run, shared_dir):
    job = tiny_run / "jobs" / "spos-s0"
    before = json.loads((job / "result.json").read_text())
    (tiny_run / "jobs" / "random-s1" / "result.json").unlink()
    run(tiny_config(shared_dir, tiny_run))
    after = json.loads((job / "result.json").read_text())
    assert after["started"] == before["started"]  # not redone
    assert (tiny_run / "jobs" / "random-s1" / "result.json").is_file()
    # the manifest keeps every invocation with its commit; jobs carry their own
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    assert len(manifest["sessions"]) == 2 and manifest["sessions"][-1]["started"] == manifest["started"]
    assert all(s["git_commit"] for s in manifest["sessions"])
    assert manifest["jobs"]["random-s1"]["git_commit"] == manifest["git_commit"]


@pytest.mark.slow
def test_rerun_with_other_config_is_refused(tiny_run, shared_dir):
    from harness.core.errors import ConfigError

    with pytest.raises(ConfigError, match="different config"):
        run(tiny_config(shared_dir, tiny_run, archs="sample:31"))


@pytest.mark.slow
def test_curve_last_point_equals_final_metrics(tiny_run):
    """The 100 % point of every supernet job is the job's own final metrics on the curve subset."""
    curves = pd.read_csv(tiny_run / "curves.csv")
    met = pd.read_csv(tiny_run / "metrics.csv")
    assert set(curves["method"]) == {"spos"}  # reference rows train nothing: no curve
    n_points = curves["point"].nunique()
    assert n_points >= 2
    for seed in (0, 1):
        job = curves[(curves.seed == seed)]
        last = job[job.point == job.point.max()]
        assert (last["fraction"] == 1.0).all() and (last["source"] == "final").all()
        # 30 scored archs, smoke's curve subset is 100: the curve scores all of them
        ref = met[(met.method == "spos") & (met.seed == seed) & (met.subset == "scored")]
        merged = last.merge(ref, on=["gt", "metric", "k"], suffixes=("_curve", "_final"))
        assert len(merged) == len(ref) > 5
        assert (merged["value_curve"].fillna(-9) == merged["value_final"].fillna(-9)).all()
        # earlier points come from training, in order of images seen
        assert job.groupby("point")["images_seen"].first().is_monotonic_increasing
    per_job = pd.read_csv(tiny_run / "jobs" / "spos-s0" / "curves.csv")
    assert len(per_job) == len(curves[curves.seed == 0])


def test_interrupted_run_has_partial_results_and_report(shared_dir, tmp_path, monkeypatch):
    """A run stopped after its first jobs: metrics, summary and the report exist, with the rest
    `pending`; the same command then resumes and finishes (seed-major order: params-s0, flops-s0 first)."""
    import harness.study.jobs as R
    from harness.report import write_report

    real = R.run_job
    calls = []

    def stop_after_two(run_dir, plan, method, seed, hooks_factory=None):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append((method, seed))
        return real(run_dir, plan, method, seed, hooks_factory)

    monkeypatch.setattr(R, "run_job", stop_after_two)
    cfg = tiny_config(shared_dir, tmp_path / "partial", methods=("params", "flops"), seeds=(0, 1))
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    assert calls == [("params", 0), ("flops", 0)]
    man = json.loads((tmp_path / "partial" / "manifest.json").read_text())
    assert man["status"] == "running"
    assert {k: v["status"] for k, v in man["jobs"].items()} == {
        "params-s0": "done", "params-s1": "pending", "flops-s0": "done", "flops-s1": "pending"}
    met = pd.read_csv(tmp_path / "partial" / "metrics.csv")
    assert set(met[met.status == "pending"].seed) == {1}
    html = write_report(tmp_path / "partial").read_text()
    assert "pending" in html
    monkeypatch.setattr(R, "run_job", real)
    run(cfg)
    man = json.loads((tmp_path / "partial" / "manifest.json").read_text())
    assert man["status"] == "done" and all(v["status"] == "done" for v in man["jobs"].values())
