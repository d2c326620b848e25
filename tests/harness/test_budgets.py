"""Budgets: every named budget is known wherever budgets are looked up by name; notes describe the
budget as run; bad field values are refused with the field, the value and what is allowed."""
from __future__ import annotations

import dataclasses

import pytest

from harness.budgets import BUDGETS, get_budget
from harness.core.errors import ConfigError
from harness.suites import get_suite
from methods.pinas import EMA_BY_BUDGET


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_every_budget_has_its_per_budget_entries(name):
    assert name in EMA_BY_BUDGET
    for suite in ("resnet-probe13", "mobilenet-probe13"):  # the suites' TOMLs shape every named budget
        assert name in get_suite(suite).shapes


@pytest.mark.parametrize("suite", ["resnet-probe13", "mobilenet-probe13"])
def test_study_on_a_probe_suite_keeps_the_committed_gt_shapes(suite):
    """`--budget study` must not silently train a standalone GT at study settings: its GT-deciding
    shapes are those of `small` (whose GT is committed)."""
    shape = get_suite(suite).shape_budget
    study, small = shape(get_budget("study")), shape(get_budget("small"))
    for field in ("channels", "resolution", "standalone_epochs", "cells"):
        assert getattr(study, field) == getattr(small, field), field


def test_note_describes_the_budget_as_run():
    b = get_budget("small").replace(epochs=100)
    assert "100 epochs" in b.note and "10 epochs" not in b.note
    assert get_budget("study").note.startswith("CPU study")
    assert "C=16, N=5, 32px" in get_budget("paper").note


@pytest.mark.parametrize("field,value,needle", [
    ("epochs", -3, "epochs=-3: must be a number > 0"),
    ("epochs", 0, "epochs=0: must be a number > 0"),
    ("lr", "abc", "lr='abc': must be a number > 0"),
    ("batch_size", 1.5, "batch_size=1.5: must be a whole number >= 1"),
    ("threads", True, "threads=True: must be a whole number"),
    ("momentum", 1.0, "momentum=1.0: must be in [0, 1)"),
    ("bn_mode", "mean", "bn_mode='mean': use one of batch, recal"),
    ("curve_points", -1, "curve_points=-1: must be a whole number >= 0"),
    ("grad_clip", -1.0, "grad_clip=-1.0: must be a number > 0"),
    ("grad_clip", "off", "grad_clip='off': must be a number > 0 (the clip threshold on the gradient norm) or 0"),
    ("grad_clip", float("nan"), "grad_clip=nan: must be a number > 0"),
    ("grad_clip", True, "grad_clip=True: must be a number > 0"),
])
def test_bad_field_values_are_refused(field, value, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        get_budget("smoke").replace(**{field: value})


def test_good_values_pass():
    b = get_budget("smoke").replace(epochs=0.5, lr=0.1, curve_points=0, bn_mode="recal", nesterov=False)
    assert (b.epochs, b.curve_points, b.bn_mode) == (0.5, 0, "recal")


def test_grad_clip_is_a_budget_field_off_at_zero_or_none():
    from harness.budgets import budget_record, same_budget

    b = get_budget("smoke")
    assert b.grad_clip == 5.0 and b.clip_threshold() == 5.0 and b.clip_threshold(5) == 25.0
    assert b.replace(grad_clip=0).clip_threshold() is None and b.replace(grad_clip=None).clip_threshold() is None
    assert b.replace(grad_clip=2).clip_threshold() == 2.0
    # a manifest written before the field existed counts as its default, which reproduces it
    old = {k: v for k, v in dataclasses.asdict(b).items() if k != "grad_clip"}
    assert budget_record(old) == dataclasses.asdict(b) and same_budget(old, dataclasses.asdict(b))
    assert not same_budget(old, dataclasses.asdict(b.replace(grad_clip=1.0)))
    assert budget_record(dataclasses.asdict(b.replace(grad_clip=0)))["grad_clip"] == 0  # given: kept


def test_committed_baseline_manifests_match_todays_budgets():
    """The baselines whose budget is compared whole (nb201-smoke by CI's `check --exact`, nb201-study
    by test_baselines) predate `grad_clip`; with the helper they equal today's budget. (The probe
    baselines predate other fields too; they are compared by their metrics only.)"""
    from harness.budgets import same_budget
    from harness.core.io import read_json
    from harness.study.spec import RunConfig
    from tests.conftest import REPO

    for folder in (REPO / "reports" / "baselines" / "nb201-smoke", REPO / "reports" / "baselines" / "nb201-study"):
        man = read_json(folder / "manifest.json")
        cfg = man["config"]
        budget = RunConfig(suite=cfg["suite"], budget=cfg["budget"],
                           budget_overrides=tuple((cfg.get("budget_overrides") or {}).items())).resolved_budget()
        assert "grad_clip" not in man["budget"] or man["budget"]["grad_clip"] == 5.0
        assert same_budget(man["budget"], dataclasses.asdict(budget)), folder.name
