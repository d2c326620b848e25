"""Committed baselines reproduce exactly with today's code (nb201-smoke is compared by CI itself:
`harness check --exact` in .ci/run).

Every baseline that keeps its job folders (the study, reports/baselines/nb201-study, and the probe
suites' smoke baselines once regenerated with them): for every method whose seed-0 job is committed,
a reference row is re-scored in full and its scores.csv must be identical; a supernet method is
retrained with the baseline's own config up to its 5 % curve point (NB201 study: 1.0, 1.9 and 3.7 %
of the image budget; smoke's 4 points: 1 and 4.6 %; methods with more path passes per image stop
earlier, see `max_fraction`) and those points' scores must equal the committed curve_scores.csv value
for value. So a check costs about what 5 % of a SPOS job costs, whatever the method. A baseline was
made on one machine (its manifest's platform), so the test applies where this machine matches it
(CPU model and torch build where both record a CPU model, else the platform string and torch build;
each job's own platform record, or its run manifest's for jobs from before jobs kept one, since the
shards of one study may run on different machines) and says so where it does not. Cost on the study's 2-core machine: about 1-2 minutes
per supernet method of the study, seconds at smoke.
"""
from __future__ import annotations

import dataclasses
import platform
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import harness.study.jobs as jobs
from harness.study.jobs import job_platform
from harness.budgets import budget_record
from harness.core.io import read_json
from harness.core.provenance import cpu_model
from harness.engine.curves import FidelityCurveHook, curve_fractions, read_curve_scores
from harness.engine.method import create_method
from harness.study.merge import run_config
from harness.study.plan import resolve
from harness.study.spec import RunConfig

REPO = Path(__file__).resolve().parents[3]
BASELINES = REPO / "reports" / "baselines"
# the baselines checked job by job; a probe baseline without job folders (made before they were
# committed) is skipped, saying so
JOB_BASELINES = ("nb201-study", "resnet-probe13-smoke", "mobilenet-probe13-smoke")
MAX_FRACTION = 0.05


def committed_jobs(name: str) -> list[str]:
    """Methods whose seed-0 job is committed in baseline ``name``."""
    folder = BASELINES / name
    if not (folder / "manifest.json").is_file():
        return []
    return sorted(p.name[:-3] for p in (folder / "jobs").glob("*-s0") if (p / "scores.csv").is_file())


def checked_jobs() -> list[tuple[str, str]]:
    """(baseline, method) for every committed seed-0 job; a placeholder row per baseline without
    job folders, so that it shows as skipped with its reason rather than silently unchecked."""
    return [(name, method) for name in JOB_BASELINES for method in committed_jobs(name) or ["(no job folders)"]]


def platform_mismatch(theirs: dict) -> str:
    """'' when this machine is the platform a job ran on (its result's record, or its run's), else why not."""
    if theirs.get("torch") != torch.__version__:
        return f"torch {torch.__version__} here, {theirs.get('torch')} there"
    if "cpu_model" in theirs:
        return "" if theirs["cpu_model"] == cpu_model() else f"CPU {cpu_model()!r} here, {theirs['cpu_model']!r} there"
    here = platform.platform()
    return "" if theirs.get("machine") == here else f"platform {here!r} here, {theirs.get('machine')!r} there"


def seed0_config(manifest: dict, data_dir: Path, out: str | None = None) -> RunConfig:
    """The manifest's run config, for seed 0 only, reading data from this machine's data dir."""
    return dataclasses.replace(run_config(manifest, out, str(data_dir)), seeds=(0,))


def max_fraction(job_dir: Path) -> float:
    """How far to retrain: the 5 % point divided by the method's forward path passes per image, so
    each check costs about what SPOS's 5 % costs and CI's time stays bounded (SPOS 1 pass: 5 %;
    STC-NAS 2: 2.5 %; FairNAS 5: 1 %). The first point (1 %) is always checked."""
    passes = read_json(job_dir / "result.json").get("counters", {}).get("forward_passes_per_image") or 1.0
    return max(0.01, MAX_FRACTION / max(1.0, float(passes)))


class StopAfterPoint(Exception):
    """Ends a job once its last curve point at or below MAX_FRACTION is written."""


def stopping_curve_hook(last_point: int):
    class StoppingCurveHook(FidelityCurveHook):
        def on_step(self, model, step, total):
            super().on_step(model, step, total)
            if last_point in self.done:
                raise StopAfterPoint

    return StoppingCurveHook


@pytest.fixture(scope="module")
def plan_cache() -> dict:
    return {}


def baseline_plan(name: str, shared_dir: Path, cache: dict):
    """The baseline's seed-0 plan (resolved once per baseline), or a skip saying why it does not apply."""
    folder = BASELINES / name
    if not (folder / "manifest.json").is_file():
        pytest.skip(f"reports/baselines/{name} is not committed")
    manifest = read_json(folder / "manifest.json")
    if not committed_jobs(name):
        pytest.skip(f"{name} has no committed job folders (made before they were kept): regenerate it "
                    f"and export it with tools/export_run.py to check it here")
    if name not in cache:
        plan = resolve(seed0_config(manifest, shared_dir), say=lambda m: None)
        assert dataclasses.asdict(plan.budget) == budget_record(manifest["budget"]), \
            f"the {manifest['config']['budget']} budget changed since {name} ran"
        cache[name] = plan
    return cache[name]


def changed_config(method: str, committed: Path) -> list[str]:
    """The config fields in which the method's default today differs from the committed job's
    (fields added since, absent there, do not count: their defaults must reproduce it)."""
    theirs = read_json(committed / "result.json").get("describe", {}).get("config", {})
    mine = create_method(method).describe()["config"]
    return sorted(k for k, v in theirs.items() if k in mine and _jsonish(mine[k]) != v or k not in mine)


def _jsonish(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.slow
@pytest.mark.parametrize(("baseline", "method"), checked_jobs())
def test_committed_seed0_reproduces(baseline, method, shared_dir, plan_cache, tmp_path, monkeypatch):
    job = f"{method}-s0"
    committed = BASELINES / baseline / "jobs" / job
    if (committed / "result.json").is_file():  # rows of one baseline may come from several machines
        why = platform_mismatch(job_platform(read_json(committed / "result.json"),
                                             read_json(BASELINES / baseline / "manifest.json")))
        if why:
            pytest.skip(f"{baseline}'s {job} was made on another platform ({why}); exact reproduction is "
                        f"checked only there (its numbers themselves are in its folder)")
    plan = baseline_plan(baseline, shared_dir, plan_cache)
    changed = changed_config(method, committed)
    if changed:  # a default changed on purpose (e.g. STC-NAS's optimiser, issue 19): rows to regenerate
        pytest.skip(f"{method}'s defaults changed since its committed row ({', '.join(changed)}); its "
                    f"{baseline} rows are the 'before' and are regenerated by rerunning the method")
    if create_method(method).trains_supernet:
        fractions = curve_fractions(plan.budget.curve_points)
        last = max(i for i, f in enumerate(fractions) if f <= max_fraction(committed))
        monkeypatch.setattr(jobs, "FidelityCurveHook", stopping_curve_hook(last))
        result = jobs.run_job(tmp_path, plan.job_plan(), method, 0)
        assert "StopAfterPoint" in str(result.get("reason")), result.get("reason")
        mine = read_curve_scores(tmp_path / "jobs" / job)
        theirs = read_curve_scores(committed)
        theirs = theirs[theirs["point"] <= last].reset_index(drop=True)
        assert sorted(mine["point"].unique()) == list(range(last + 1))
        pd.testing.assert_frame_equal(mine.reset_index(drop=True), theirs, check_exact=True)
    else:
        result = jobs.run_job(tmp_path, plan.job_plan(), method, 0)
        assert result["status"] == "done", result.get("reason")
        mine = pd.read_csv(tmp_path / "jobs" / job / "scores.csv")
        theirs = pd.read_csv(committed / "scores.csv")
        pd.testing.assert_frame_equal(mine, theirs, check_exact=True)
        assert np.isfinite(mine["score"]).all()
