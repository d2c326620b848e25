"""Committed baselines reproduce exactly with today's code (nb201-smoke is compared by CI itself:
`harness check --exact` in .ci/run).

The study (reports/baselines/nb201-study):
for every method whose seed-0 job is committed, a reference row is re-scored in full and its
scores.csv must be identical; a supernet method is retrained at the study budget up to its 5 %
curve point (1.0, 1.9 and 3.7 % of the image budget; methods with more path passes per image stop
earlier, see `max_fraction`) and those points' scores must equal the committed curve_scores.csv
value for value. The study was made on one machine
(its manifest's platform), so the test applies where this machine matches it (CPU model and torch
build where both manifests record a CPU model, else the platform string and torch build) and says
so where it does not. Cost on the study's 2-core machine: about 1-2 minutes per supernet method.
"""
from __future__ import annotations

import dataclasses
import os
import platform
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import harness.study.jobs as jobs
from harness.budgets import budget_record
from harness.core.io import read_json
from harness.core.provenance import cpu_model
from harness.engine.curves import FidelityCurveHook, curve_fractions, read_curve_scores
from harness.engine.method import create_method
from harness.study.plan import resolve
from harness.study.runner import run
from harness.study.spec import RunConfig

REPO = Path(__file__).resolve().parents[3]
STUDY = REPO / "reports" / "baselines" / "nb201-study"
MAX_FRACTION = 0.05


def committed_jobs() -> list[str]:
    """Methods whose seed-0 job is committed."""
    if not (STUDY / "manifest.json").is_file():
        return []
    return sorted(p.name[:-3] for p in (STUDY / "jobs").glob("*-s0") if (p / "scores.csv").is_file())


def platform_mismatch(manifest: dict) -> str:
    """'' when this machine is the study's platform, else why not."""
    theirs = manifest.get("platform", {})
    if theirs.get("torch") != torch.__version__:
        return f"torch {torch.__version__} here, {theirs.get('torch')} in the study's manifest"
    if "cpu_model" in theirs:
        return "" if theirs["cpu_model"] == cpu_model() else f"CPU {cpu_model()!r} here, {theirs['cpu_model']!r} there"
    here = platform.platform()
    return "" if theirs.get("machine") == here else f"platform {here!r} here, {theirs.get('machine')!r} there"


def seed0_config(manifest: dict, data_dir: Path, out: str | None = None) -> RunConfig:
    """The manifest's run config, for seed 0 only, reading data from this machine's data dir."""
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    cfg = {k: v for k, v in manifest["config"].items() if k in fields}
    cfg.update(methods=tuple(cfg["methods"]), seeds=(0,), gt=tuple(cfg["gt"]) if cfg.get("gt") else None,
               budget_overrides=tuple(cfg.get("budget_overrides", {}).items()), compare=tuple(cfg.get("compare", ())),
               out=out, data_dir=str(data_dir), cache_dir=None, progress=False, report=False)
    return RunConfig(**cfg)


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
def study_plan(shared_dir):
    manifest = read_json(STUDY / "manifest.json")
    why = platform_mismatch(manifest)
    if why:
        pytest.skip(f"the committed study was made on another platform ({why}); exact reproduction is "
                    f"checked only there (the study's numbers themselves are in its folder)")
    plan = resolve(seed0_config(manifest, shared_dir), say=lambda m: None)
    assert dataclasses.asdict(plan.budget) == budget_record(manifest["budget"]), \
        "the study budget changed since the study ran"
    return plan


def changed_config(method: str, committed: Path) -> list[str]:
    """The config fields in which the method's default today differs from the committed job's
    (fields added since, absent there, do not count: their defaults must reproduce it)."""
    theirs = read_json(committed / "result.json").get("describe", {}).get("config", {})
    mine = create_method(method).describe()["config"]
    return sorted(k for k, v in theirs.items() if k in mine and _jsonish(mine[k]) != v or k not in mine)


def _jsonish(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.slow
@pytest.mark.parametrize("method", committed_jobs() or ["(no committed study)"])
def test_committed_study_seed0_reproduces(method, study_plan, tmp_path, monkeypatch):
    job = f"{method}-s0"
    committed = STUDY / "jobs" / job
    changed = changed_config(method, committed)
    if changed:  # a default changed on purpose (e.g. STC-NAS's optimiser, issue 19): rows to regenerate
        pytest.skip(f"{method}'s defaults changed since its committed row ({', '.join(changed)}); its "
                    f"nb201-study rows are the 'before' and are regenerated by rerunning the method")
    if create_method(method).trains_supernet:
        fractions = curve_fractions(study_plan.budget.curve_points)
        last = max(i for i, f in enumerate(fractions) if f <= max_fraction(committed))
        monkeypatch.setattr(jobs, "FidelityCurveHook", stopping_curve_hook(last))
        result = jobs.run_job(tmp_path, study_plan.job_plan(), method, 0)
        assert "StopAfterPoint" in str(result.get("reason")), result.get("reason")
        mine = read_curve_scores(tmp_path / "jobs" / job)
        theirs = read_curve_scores(committed)
        theirs = theirs[theirs["point"] <= last].reset_index(drop=True)
        assert sorted(mine["point"].unique()) == list(range(last + 1))
        pd.testing.assert_frame_equal(mine.reset_index(drop=True), theirs, check_exact=True)
    else:
        result = jobs.run_job(tmp_path, study_plan.job_plan(), method, 0)
        assert result["status"] == "done", result.get("reason")
        mine = pd.read_csv(tmp_path / "jobs" / job / "scores.csv")
        theirs = pd.read_csv(committed / "scores.csv")
        pd.testing.assert_frame_equal(mine, theirs, check_exact=True)
        assert np.isfinite(mine["score"]).all()


# --- the probe suites' smoke baselines: seed 0 of every method, metrics value for value ------
PROBE_BASELINES = ("resnet-probe13-smoke", "mobilenet-probe13-smoke")


@pytest.mark.slow
@pytest.mark.parametrize("name", PROBE_BASELINES)
def test_probe_baseline_seed0_reproduces(name, shared_dir, tmp_path):
    """Re-runs seed 0 of the committed probe baseline with its own command (about 15-35 CPU-minutes
    where it applies) and compares its metrics.csv rows exactly."""
    folder = REPO / "reports" / "baselines" / name
    manifest = read_json(folder / "manifest.json")
    why = platform_mismatch(manifest)
    if why:
        pytest.skip(f"{name} was made on another platform ({why}); exact reproduction is checked only there")
    run(seed0_config(manifest, shared_dir, out=str(tmp_path / "run")), out_stream=open(os.devnull, "w"))
    keys = ["method", "seed", "gt", "subset", "metric", "k"]
    mine = pd.read_csv(tmp_path / "run" / "metrics.csv").set_index(keys)["value"].sort_index()
    theirs = pd.read_csv(folder / "metrics.csv")
    theirs = theirs[theirs["seed"] == 0].set_index(keys)["value"].sort_index()
    pd.testing.assert_series_equal(mine, theirs, check_exact=True)
