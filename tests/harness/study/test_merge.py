"""`harness merge`: shards of one study joined into its run folder give the numbers of one run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from harness.cli import main
from harness.core.errors import ConfigError, DataError, HarnessError
from harness.study.merge import merge_runs
from harness.study.runner import run
from harness.study.spec import RunConfig

METHODS = ("params", "random")


def config(shared_dir, out, seeds, **overrides) -> RunConfig:
    budget = {"score_size": 128, "eval_batch_size": 128, "threads": 1, **overrides}
    return RunConfig(suite="nb201", methods=METHODS, seeds=seeds, budget="smoke", archs="sample:30", out=str(out),
                     data_dir=str(shared_dir), progress=False, report=False, budget_overrides=tuple(budget.items()))


@pytest.fixture(scope="module")
def runs(shared_dir, tmp_path_factory):
    """A whole run (seeds 0, 1) and a shard of it that also ran a seed the whole run lacks (1, 2)."""
    root = tmp_path_factory.mktemp("merge")
    run(config(shared_dir, root / "whole", (0, 1)), out_stream=open(os.devnull, "w"))
    run(config(shared_dir, root / "shard", (1, 2)), out_stream=open(os.devnull, "w"))
    return root


def without_seed1(runs, dest):
    """The whole run as it stood before its seed-1 jobs: those job folders gone."""
    shutil.copytree(runs / "whole", dest)
    for m in METHODS:
        shutil.rmtree(dest / "jobs" / f"{m}-s1")
    return dest


def test_merged_shard_gives_the_numbers_of_one_run(runs, shared_dir, tmp_path):
    target = without_seed1(runs, tmp_path / "target")
    said = []
    merge = merge_runs(target, [runs / "shard"], data_dir=str(shared_dir), say=said.append)
    assert sorted(name for _, name in merge.copy) == ["params-s1", "random-s1"]
    assert sorted(name for _, name in merge.outside) == ["params-s2", "random-s2"]  # not jobs of this run
    assert not (target / "jobs" / "random-s2").exists()
    for name in ("metrics.csv", "summary.csv", "estimates.csv", "paired.csv"):
        mine = pd.read_csv(target / name, dtype={"per_seed": str})
        theirs = pd.read_csv(runs / "whole" / name, dtype={"per_seed": str})
        pd.testing.assert_frame_equal(mine, theirs, check_exact=True)
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert manifest["merges"][-1]["jobs"] == ["params-s1", "random-s1"]
    assert sorted(manifest["jobs"]) == sorted(f"{m}-s{s}" for m in METHODS for s in (0, 1))
    assert any("left out random-s2" in line for line in said)


def test_finished_job_with_same_scores_is_kept_and_different_scores_refused(runs, shared_dir, tmp_path):
    target = tmp_path / "target"
    shutil.copytree(runs / "whole", target)
    merge = merge_runs(target, [runs / "shard"], data_dir=str(shared_dir), say=lambda m: None)
    assert merge.copy == () and sorted(n for _, n in merge.same) == ["params-s1", "random-s1"]
    bad = tmp_path / "bad"
    shutil.copytree(runs / "shard", bad)
    scores = bad / "jobs" / "random-s1" / "scores.csv"
    df = pd.read_csv(scores)
    df.loc[0, "score"] += 1.0
    df.to_csv(scores, index=False)
    with pytest.raises(DataError, match="random-s1 is finished in .* different scores"):
        merge_runs(target, [bad], data_dir=str(shared_dir), say=lambda m: None)


def test_shard_of_another_study_is_refused_before_anything_moves(runs, shared_dir, tmp_path):
    other = tmp_path / "other"
    run(config(shared_dir, other, (1,), score_size=64), out_stream=open(os.devnull, "w"))
    target = without_seed1(runs, tmp_path / "target")
    before = sorted(p.name for p in (target / "jobs").iterdir())
    # the valid shard first: validation of every source comes before any copy
    with pytest.raises(ConfigError, match="budget_overrides"):
        merge_runs(target, [runs / "shard", other], data_dir=str(shared_dir), say=lambda m: None)
    assert sorted(p.name for p in (target / "jobs").iterdir()) == before


def test_run_folder_of_a_live_run_is_refused(runs, shared_dir, tmp_path):
    target = without_seed1(runs, tmp_path / "target")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (target / ".lock").write_text(str(sleeper.pid))
        with pytest.raises(HarnessError, match="locked by PID"):
            merge_runs(target, [runs / "shard"], data_dir=str(shared_dir), say=lambda m: None)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not (target / "jobs" / "params-s1").exists()


def test_cli_one_line_and_exit_2_on_a_folder_that_is_no_run(runs, tmp_path, capsys):
    assert main(["merge", str(tmp_path), str(runs / "shard")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a run folder" in err[0]


def test_cli_merges(runs, shared_dir, tmp_path, capsys):
    target = without_seed1(runs, tmp_path / "target")
    assert main(["merge", str(target), str(runs / "shard"), "--data-dir", str(shared_dir)]) == 0
    assert "4 of 4 jobs done" in capsys.readouterr().out
    assert (target / "jobs" / "random-s1" / "result.json").is_file()


def test_resume_after_a_merge_keeps_the_merge_record(runs, shared_dir, tmp_path):
    target = without_seed1(runs, tmp_path / "target")
    merge_runs(target, [runs / "shard"], data_dir=str(shared_dir), say=lambda m: None)
    run(config(shared_dir, target, (0, 1)), out_stream=open(os.devnull, "w"))  # nothing left to run
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["merges"][-1]["jobs"] == ["params-s1", "random-s1"]
    pd.testing.assert_frame_equal(pd.read_csv(target / "metrics.csv"), pd.read_csv(runs / "whole" / "metrics.csv"),
                                  check_exact=True)


def test_jobs_keep_the_platform_they_ran_on(runs, shared_dir, tmp_path):
    """Every job records its platform; a shard's job from before jobs recorded one gets its shard's
    run platform when merged (not the target's), and the merge record names the shard's platform."""
    shard = tmp_path / "shard"
    shutil.copytree(runs / "shard", shard)
    job = json.loads((shard / "jobs" / "params-s1" / "result.json").read_text())
    assert job["platform"]["cpu_model"] and job["platform"]["torch"]
    legacy = {k: v for k, v in job.items() if k != "platform"}
    (shard / "jobs" / "params-s1" / "result.json").write_text(json.dumps(legacy))
    other_cpu = {**json.loads((shard / "manifest.json").read_text())["platform"], "cpu_model": "another CPU"}
    manifest = json.loads((shard / "manifest.json").read_text())
    (shard / "manifest.json").write_text(json.dumps({**manifest, "platform": other_cpu}))
    target = without_seed1(runs, tmp_path / "target")
    merge_runs(target, [shard], data_dir=str(shared_dir), say=lambda m: None)
    merged = json.loads((target / "jobs" / "params-s1" / "result.json").read_text())
    assert merged["platform"] == other_cpu  # the legacy job: its shard's run platform
    kept = json.loads((target / "jobs" / "random-s1" / "result.json").read_text())
    assert kept["platform"] == job["platform"]  # a job's own record stays as it is
    assert json.loads((target / "manifest.json").read_text())["merges"][-1]["platform"] == other_cpu
