"""Budgets: every named budget is known wherever budgets are looked up by name; notes describe the
budget as run; bad field values are refused with the field, the value and what is allowed."""
from __future__ import annotations

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
])
def test_bad_field_values_are_refused(field, value, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        get_budget("smoke").replace(**{field: value})


def test_good_values_pass():
    b = get_budget("smoke").replace(epochs=0.5, lr=0.1, curve_points=0, bn_mode="recal", nesterov=False)
    assert (b.epochs, b.curve_points, b.bn_mode) == (0.5, 0, "recal")
