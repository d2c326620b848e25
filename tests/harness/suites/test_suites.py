"""The suite registry and `Suite.budget`: the probe suites' per-budget shapes go on before `--set`
overrides, overrides are validated, unknown suites get a did-you-mean."""
from __future__ import annotations

import dataclasses

import pytest

from harness.budgets import BUDGETS, get_budget
from harness.core.errors import ConfigError
from harness.spaces.mobilenet_probe import BUDGET_SHAPES as MOBILENET_SHAPES
from harness.spaces.mobilenet_probe import MobileNetProbeSpace
from harness.spaces.nb201 import Nb201Space
from harness.spaces.resnet_probe import BUDGET_SHAPES as RESNET_SHAPES
from harness.spaces.resnet_probe import ResNetProbeSpace
from harness.suites import SUITES, Suite, get_suite
from harness.suites.probe import probe_list_path

BUILTIN = {"nb201": Nb201Space, "resnet-probe13": ResNetProbeSpace, "mobilenet-probe13": MobileNetProbeSpace}
PROBE_SHAPES = {"resnet-probe13": RESNET_SHAPES, "mobilenet-probe13": MOBILENET_SHAPES}
SHAPED_FIELDS = ("channels", "resolution", "epochs", "standalone_epochs")


def test_the_builtin_suites_are_registered():
    assert set(BUILTIN) <= set(SUITES.names())
    for name, space_cls in BUILTIN.items():
        suite = get_suite(name)
        assert isinstance(suite, Suite) and suite.name == name and SUITES.origins[name] == "builtin"
        assert type(suite.make_space()) is space_cls
        assert suite.standalone_gt is (name != "nb201")


def test_every_named_budget_has_shapes_for_each_probe_suite():
    """`study` included: a probe suite that lacked a budget's shapes would silently run the NB201 widths."""
    for table in PROBE_SHAPES.values():
        assert set(BUDGETS) <= set(table)


@pytest.mark.parametrize("suite", sorted(PROBE_SHAPES))
@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_probe_suite_budget_applies_its_shapes(suite, budget):
    b = get_suite(suite).budget(budget)
    base, shape = get_budget(budget), PROBE_SHAPES[suite][budget]
    for field in dataclasses.fields(base):
        name = field.name
        if name in shape:
            assert getattr(b, name) == shape[name], name
        elif name == "archs":  # the suite's committed probe list is the scored set
            assert b.archs == f"file:{probe_list_path(suite, 'txt')}"
        elif name in ("purpose", "note"):
            continue
        else:
            assert getattr(b, name) == getattr(base, name), name
    assert b.name == budget and suite in b.purpose
    assert b.note == b.describe()  # the note describes the shaped budget, not the NB201 one
    assert probe_list_path(suite, "txt").is_file()


@pytest.mark.parametrize("suite", sorted(PROBE_SHAPES))
def test_overrides_go_on_after_the_shapes(suite):
    shape = PROBE_SHAPES[suite]["study"]
    b = get_suite(suite).budget("study", (("channels", 3), ("lr", 0.3)))
    assert b.channels == 3 and b.lr == 0.3  # --set wins over the suite's shape
    assert b.resolution == shape["resolution"] and b.epochs == shape["epochs"]  # the rest stays shaped
    assert "C=3" in b.note
    # an override of a shaped field to its NB201 value is honoured too (not re-shaped afterwards)
    nb = get_budget("study").channels
    assert get_suite(suite).budget("study", (("channels", nb),)).channels == nb


@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_nb201_budget_is_the_named_budget(budget):
    suite = get_suite("nb201")
    assert suite.budget(budget) == get_budget(budget)
    overrides = (("epochs", 0.5), ("batch_size", 16))
    assert suite.budget(budget, overrides) == get_budget(budget).replace(**dict(overrides))


@pytest.mark.parametrize("suite", sorted(BUILTIN))
def test_overrides_are_validated(suite):
    s = get_suite(suite)
    with pytest.raises(ConfigError, match=r"unknown budget field 'chanels' \(did you mean 'channels'\?\)"):
        s.budget("smoke", (("chanels", 4),))
    with pytest.raises(ConfigError, match=r"budget field epochs=-1: must be a number > 0"):
        s.budget("smoke", (("epochs", -1),))
    with pytest.raises(ConfigError, match=r"budget field bn_mode='nope'"):
        s.budget("study", (("bn_mode", "nope"),))
    with pytest.raises(ConfigError, match=r"unknown budget 'stuyd' \(did you mean 'study'\?\)"):
        s.budget("stuyd")


def test_unknown_suite_says_did_you_mean():
    with pytest.raises(ConfigError, match=r"unknown suite 'nb210' \(did you mean 'nb201'\?\)") as info:
        get_suite("nb210")
    for name in BUILTIN:
        assert name in str(info.value)
    with pytest.raises(ConfigError, match=r"did you mean 'resnet-probe13'"):
        get_suite("resnet-probe")
