"""The suite registry and `Suite.budget`: the probe suites' per-budget shapes go on before `--set`
overrides, overrides are validated, unknown suites get a did-you-mean. Suites are data: a new
suite is one TOML file, every malformed file is one line naming the file, the key and the fix, and
the built-in TOMLs give exactly the shapes the suites had when they were Python."""
from __future__ import annotations

import dataclasses
import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from harness.budgets import BUDGETS, get_budget
from harness.core.errors import ConfigError
from harness.core.paths import REPO_ROOT as REPO
from harness.core.paths import SUITES_DATA
from harness.groundtruth.base import DEFAULT_GT_COLUMN
from harness.groundtruth.table import STANDALONE
from harness.spaces.mobilenet_probe import CHOICES, IDENTITY, MobileNetProbeSpace
from harness.spaces.nb201 import Nb201Space
from harness.spaces.resnet_probe import BLOCK_NAMES, ResNetProbeSpace
from harness.suites import SUITES, Suite, get_suite, load_suite_toml
from harness.suites.base import SuiteRegistry
from harness.suites.probe import choose_probe_archs, probe_list_path

BUILTIN = {"nb201": Nb201Space, "resnet-probe13": ResNetProbeSpace, "mobilenet-probe13": MobileNetProbeSpace}
# the suites' per-budget shapes, from their TOMLs ([budgets.<name>]); pinned below by PREVIOUS
PROBE_SHAPES = {name: get_suite(name).shapes for name in ("resnet-probe13", "mobilenet-probe13")}
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


# --- suites are data: one TOML per suite ----------------------------------------------------
# The shaped budgets the probe suites gave when their shapes were Python (BUDGET_SHAPES in the space
# modules), recorded from that code's `get_suite(suite).budget(name)` before the shapes moved to the
# TOMLs; values and types (epochs 1.0 vs 10) are the standalone-GT cache keys and the committed GT's.
PREVIOUS = {
    ("resnet-probe13", "smoke"): dict(channels=4, cells=1, resolution=16, epochs=1.0, standalone_epochs=0.5,
        note='resnet-probe13 at smoke: C=4, N=1, 16px, 1 epochs, batch 128, standalone GT 0.5 epochs'),
    ("resnet-probe13", "small"): dict(channels=8, cells=1, resolution=16, epochs=10, standalone_epochs=3.0,
        note='resnet-probe13 at small: C=8, N=1, 16px, 10 epochs, batch 128, standalone GT 3 epochs'),
    ("resnet-probe13", "study"): dict(channels=8, cells=1, resolution=16, epochs=10.0, standalone_epochs=3.0,
        note='resnet-probe13 at study: C=8, N=1, 16px, 10 epochs, batch 128, standalone GT 3 epochs'),
    ("resnet-probe13", "paper"): dict(channels=64, cells=5, resolution=32, epochs=50, standalone_epochs=30.0,
        note='resnet-probe13 at paper: C=64, N=5, 32px, 50 epochs, batch 64, standalone GT 30 epochs'),
    ("mobilenet-probe13", "smoke"): dict(channels=4, cells=1, resolution=16, epochs=1.0, standalone_epochs=0.5,
        note='mobilenet-probe13 at smoke: C=4, N=1, 16px, 1 epochs, batch 128, standalone GT 0.5 epochs'),
    ("mobilenet-probe13", "small"): dict(channels=8, cells=1, resolution=16, epochs=10, standalone_epochs=2.0,
        note='mobilenet-probe13 at small: C=8, N=1, 16px, 10 epochs, batch 128, standalone GT 2 epochs'),
    ("mobilenet-probe13", "study"): dict(channels=8, cells=1, resolution=16, epochs=10.0, standalone_epochs=2.0,
        note='mobilenet-probe13 at study: C=8, N=1, 16px, 10 epochs, batch 128, standalone GT 2 epochs'),
    ("mobilenet-probe13", "paper"): dict(channels=40, cells=5, resolution=32, epochs=50, standalone_epochs=30.0,
        note='mobilenet-probe13 at paper: C=40, N=5, 32px, 50 epochs, batch 64, standalone GT 30 epochs'),
}


def test_previous_shapes_cover_every_probe_suite_and_budget():
    assert set(PREVIOUS) == {(s, b) for s in PROBE_SHAPES for b in BUDGETS}


@pytest.mark.parametrize("suite,budget", sorted(PREVIOUS))
def test_builtin_tomls_reproduce_the_previous_shapes(suite, budget):
    b = get_suite(suite).budget(budget)
    for key, value in PREVIOUS[suite, budget].items():
        got = getattr(b, key)
        assert got == value and type(got) is type(value), (key, got, value)
    assert b.archs == f"file:{SUITES_DATA / f'{suite}.txt'}" and b.purpose == f"{suite} at {budget}"
    # the fields a suite does not shape are the named budget's
    base = get_budget(budget)
    for f in dataclasses.fields(base):
        if f.name not in (*PREVIOUS[suite, budget], "archs", "purpose", "note"):
            assert getattr(b, f.name) == getattr(base, f.name), f.name


def test_builtin_suites_are_the_tomls_of_the_package():
    tomls = sorted(p.stem for p in SUITES_DATA.glob("*.toml"))
    assert tomls == sorted(BUILTIN)
    for name in BUILTIN:
        suite = get_suite(name)
        assert Path(suite.source) == SUITES_DATA / f"{name}.toml" and suite.dataset == "cifar10"
    nb = get_suite("nb201")
    assert (nb.space, nb.gt_provider, nb.default_gt, nb.archs, nb.shapes, nb.gt_table) == \
        ("nb201", "benchmark", (DEFAULT_GT_COLUMN,), None, {}, None)
    for name in PROBE_SHAPES:
        s = get_suite(name)
        assert s.gt_provider == "standalone-probe" and s.default_gt == (STANDALONE,)
        assert s.gt_table == SUITES_DATA / f"{name}-gt.csv" and s.gt_table.is_file()
    # the package ships them (pyproject package-data)
    assert '"suites_data/*"' in (REPO / "pyproject.toml").read_text()


# a minimal suite of our own: two ResNet probe architectures, a committed GT table beside it
ARCH_A = "-".join(["1s1x64d"] * 16)
ARCH_B = "-".join(["2s2x40d"] * 16)
MINI = '''\
name = "mini-probe"
description = "two resnet-probe architectures (test)"
space = "resnet-probe"
dataset = "cifar10"
gt_provider = "standalone-probe"
default_gt = ["standalone"]
archs = "file:mini.txt"
gt_table = "mini-gt.csv"
standalone_gt = true

[budgets.smoke]
channels = 2
resolution = 8
standalone_epochs = 0.25
'''


def write_mini(folder: Path, text: str = MINI, name: str = "mini-probe.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mini.txt").write_text(f"# two archs\n{ARCH_A}\n{ARCH_B}\n")
    pd.DataFrame({"arch": [ARCH_A, ARCH_B], "standalone": [61.0, 64.0], "standalone_std": [1.0, 1.0],
                  "standalone_s0": [60.0, 63.0], "standalone_s1": [62.0, 65.0]}).to_csv(folder / "mini-gt.csv",
                                                                                      index=False)
    path = folder / name
    path.write_text(text)
    return path


def test_a_new_suite_is_one_file(tmp_path):
    path = write_mini(tmp_path / "suites")
    suite = load_suite_toml(path)
    assert (suite.name, suite.space, suite.gt_provider, suite.standalone_gt) == \
        ("mini-probe", "resnet-probe", "standalone-probe", True)
    b = suite.budget("smoke")
    assert (b.channels, b.resolution, b.standalone_epochs) == (2, 8, 0.25) and b.epochs == get_budget("smoke").epochs
    assert b.archs == f"file:{tmp_path / 'suites' / 'mini.txt'}" and b.purpose == "mini-probe at smoke"
    assert suite.budget("smoke", (("channels", 3),)).channels == 3
    small = suite.budget("small")  # no [budgets.small]: the named budget, with the suite's list
    assert small.channels == get_budget("small").channels and small.archs == b.archs
    space = suite.make_space()
    assert isinstance(space, ResNetProbeSpace)
    said = []
    gt = suite.load_gt(space, budget=b, cache_dir=tmp_path / "cache", say=said.append)
    archs = [space.parse(ARCH_A), space.parse(ARCH_B)]
    assert list(gt.values(archs, STANDALONE)) == [61.0, 64.0] and "committed table" in gt.source
    assert said and not (tmp_path / "cache").exists()  # read, not trained
    assert list(suite.load_gt(space).values(archs, "standalone_s1")) == [62.0, 65.0]  # no budget: never trains
    run_gt = suite.run_ground_truth(space, b, None, None, tmp_path / "cache", [STANDALONE], say=said.append)
    assert list(run_gt.values(archs, STANDALONE)) == [61.0, 64.0]


def test_a_registry_finds_every_toml_of_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "suites"
    write_mini(folder)
    reg = SuiteRegistry(folder)
    assert reg.names() == ["mini-probe"] and reg.origins["mini-probe"] == "builtin"
    assert reg.get("mini-probe").budget("smoke").channels == 2
    with pytest.raises(ConfigError, match=r"did you mean 'mini-probe'"):
        reg.get("mini-prob")
    # and in the global registry (for the duration of the test), `harness list` names it
    monkeypatch.setitem(SUITES, "mini-probe", load_suite_toml(folder / "mini-probe.toml"))
    assert get_suite("mini-probe").gt_table == folder / "mini-gt.csv"
    assert "mini-probe" in SUITES.names()


def test_two_files_with_one_name_are_refused(tmp_path):
    folder = tmp_path / "suites"
    write_mini(folder)
    write_mini(folder, name="again.toml")
    with pytest.raises(ConfigError, match=r"suite name 'mini-probe' is registered twice"):
        SuiteRegistry(folder).names()


def _edit(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new)

    return edit


MALFORMED = [  # (edit of MINI, the one-line error it gives)
    (_edit('name = "mini-probe"', 'name = '), r"not valid TOML \(.*line 1.*\); fix the syntax"),
    (_edit('space = "resnet-probe"', 'spcae = "resnet-probe"'),
     r"unknown key 'spcae' \(did you mean 'space'\?\); keys are: name, description, space"),
    (_edit('gt_provider = "standalone-probe"\n', ''),
     r"missing key 'gt_provider'; add it \(e\.g\. gt_provider = \"benchmark\"\)"),
    (_edit('dataset = "cifar10"\n', ''), r"missing key 'dataset'; add it \(e\.g\. dataset = \"cifar10\"\)"),
    (_edit('space = "resnet-probe"', 'space = "resnet-prob"'),
     r"space = 'resnet-prob': unknown search space 'resnet-prob' \(did you mean 'resnet-probe'\?\); "
     r"choose one of: mobilenet-probe, nb201, resnet-probe"),
    (_edit('gt_provider = "standalone-probe"', 'gt_provider = "standalone"'),
     r"gt_provider = 'standalone': unknown ground-truth provider 'standalone' \(did you mean 'standalone-probe'\?\)"),
    (_edit('[budgets.smoke]', '[budgets.smok]'),
     r"\[budgets\.smok\]: unknown budget 'smok' \(did you mean 'smoke'\?\); name one of: smoke, study, small, paper"),
    (_edit('channels = 2', 'chanels = 2'),
     r"\[budgets\.smoke\]: unknown budget field 'chanels' \(did you mean 'channels'\?\)"),
    (_edit('channels = 2', 'channels = 0'), r"\[budgets\.smoke\]: budget field channels=0: must be a whole number >= 1"),
    (_edit('channels = 2', 'channels = 2.5'), r"\[budgets\.smoke\]: budget field channels=2\.5: must be a whole number"),
    (_edit('channels = 2', 'archs = "all"'),
     r"\[budgets\.smoke\] archs: a suite does not shape the budget's archs \(set the top-level archs key\); remove it"),
    (_edit('[budgets.smoke]\nchannels = 2\nresolution = 8\nstandalone_epochs = 0.25\n', 'budgets = 3\n'),
     r"budgets = 3: must be tables \[budgets\.<name>\]"),
    (_edit('[budgets.smoke]\nchannels = 2\nresolution = 8\nstandalone_epochs = 0.25\n', 'budgets.smoke = 3\n'),
     r"budgets\.smoke = 3: must be a table of budget fields"),
    (_edit('standalone_gt = true', 'standalone_gt = "yes"'), r"standalone_gt = 'yes': must be true or false"),
    (_edit('default_gt = ["standalone"]', 'default_gt = "standalone"'),
     r"default_gt = 'standalone': must be a non-empty list of strings \(e\.g\. default_gt = \[\"standalone\"\]\)"),
    (_edit('default_gt = ["standalone"]', 'default_gt = []'), r"default_gt = \[\]: must be a non-empty list"),
    (_edit('space = "resnet-probe"', 'space = 3'), r"space = 3: must be a string \(e\.g\. space = \"nb201\"\)"),
    (_edit('name = "mini-probe"', 'name = "mini probe"'),
     r"name = 'mini probe': use letters, digits, '\.', '_' and '-'"),
    (_edit('archs = "file:mini.txt"', 'archs = "file:nope.txt"'),
     r"archs = 'file:nope\.txt': .*nope\.txt does not exist; give a file of architectures"),
    (_edit('archs = "file:mini.txt"\n', ''),
     r"standalone_gt = true needs the fixed list the harness trains; add archs = \"file:mini-probe\.txt\""),
]


@pytest.mark.parametrize("edit,match", MALFORMED, ids=[m[1][:40] for m in MALFORMED])
def test_each_malformed_file_is_one_line_naming_file_key_and_fix(tmp_path, edit, match):
    path = write_mini(tmp_path / "suites", edit(MINI))
    with pytest.raises(ConfigError) as info:
        load_suite_toml(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"suite file {path}: "), msg
    assert re.search(match, msg), msg
    # a registry over that folder fails the same way, on first use
    with pytest.raises(ConfigError, match=re.escape(msg)):
        SuiteRegistry(path.parent).names()


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"suite file .*nope\.toml: cannot read it"):
        load_suite_toml(tmp_path / "nope.toml")


# --- third-party suites: entry points naming a TOML file, a TOML path or a Suite -------------
SUITE_PKG = "harness_suite_demo"


@pytest.fixture
def suite_plugin(tmp_path, monkeypatch):
    """A distribution on sys.path whose ``supernet_harness.suites`` entry points name a TOML inside
    the package, a path attribute and a Suite object."""
    root = tmp_path / "site"
    pkg = root / SUITE_PKG
    write_mini(pkg / "data", MINI.replace('"mini-probe"', '"plug-file"'), "plug-file.toml")
    (pkg / "data" / "plug-path.toml").write_text(MINI.replace('"mini-probe"', '"plug-path"'))
    (pkg / "__init__.py").write_text(textwrap.dedent('''\
        from pathlib import Path
        from harness.suites import Suite
        PATH = Path(__file__).parent / "data" / "plug-path.toml"
        SUITE = Suite(name="plug-obj", space="nb201", gt_provider="benchmark", default_gt=("cifar10_test_200ep",))
        WRONG = Suite(name="not-its-name", space="nb201", gt_provider="benchmark", default_gt=("x",))
    '''))
    dist = root / "harness_suite_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-suite-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(f'''\
        [supernet_harness.suites]
        plug-file = {SUITE_PKG}:data/plug-file.toml
        plug-path = {SUITE_PKG}:PATH
        plug-obj = {SUITE_PKG}:SUITE
    '''))
    monkeypatch.syspath_prepend(str(root))
    yield dist
    for name in [m for m in sys.modules if m == SUITE_PKG or m.startswith(SUITE_PKG + ".")]:
        del sys.modules[name]


def test_entry_points_name_a_toml_file_a_path_or_a_suite(tmp_path, suite_plugin):
    reg = SuiteRegistry(tmp_path / "no-builtins")
    assert reg.names() == ["plug-file", "plug-obj", "plug-path"]
    pkg = suite_plugin.parent / SUITE_PKG
    assert Path(reg.get("plug-file").source) == pkg / "data" / "plug-file.toml"
    assert reg.get("plug-file").budget("smoke").archs == f"file:{pkg / 'data' / 'mini.txt'}"
    assert reg.get("plug-path").gt_table == pkg / "data" / "mini-gt.csv"
    assert reg.get("plug-obj").make_space().name == "nb201"
    assert reg.origins["plug-file"] == f"entry point harness-suite-demo ({SUITE_PKG}:data/plug-file.toml)"
    assert SuiteRegistry(tmp_path / "no-builtins").get("plug-obj").gt_provider == "benchmark"


def test_an_entry_point_must_carry_its_suites_name(tmp_path, suite_plugin):
    (suite_plugin / "entry_points.txt").write_text(f"[supernet_harness.suites]\nplug-wrong = {SUITE_PKG}:WRONG\n")
    with pytest.raises(ConfigError, match=r"suite entry point 'plug-wrong' names suite 'not-its-name'; "
                                          r"give the entry point the suite's name"):
        SuiteRegistry(tmp_path / "no-builtins").names()


@pytest.mark.slow
def test_the_list_tool_reads_the_suites_shapes_and_reproduces_the_committed_lists():
    """`python -m harness.suites.probe --write-lists` counts parameters at the `paper` and `smoke`
    widths of the suites' TOMLs; with them it chooses exactly the committed 13 (compared, not written)."""
    rs, ms = ResNetProbeSpace(), MobileNetProbeSpace()
    n = len(ms.decisions)
    uniform = {
        "resnet-probe13": (rs, [(f"uniform: all {b}", (i,) * len(rs.decisions)) for i, b in enumerate(BLOCK_NAMES)]),
        "mobilenet-probe13": (ms, [(f"uniform: all {c.name}", (i,) * n) for i, c in enumerate(CHOICES) if i != IDENTITY]
                              + [("uniform: identity wherever allowed (k3e3 in each stage's first layer)",
                                  tuple(IDENTITY if IDENTITY in ms.allowed_choices(d) else 0 for d in range(n)))]),
    }
    for suite, (space, u) in uniform.items():
        chosen = choose_probe_archs(space, u, shapes=get_suite(suite).shapes)
        committed = pd.read_csv(probe_list_path(suite), comment="#")
        pd.testing.assert_frame_equal(chosen.reset_index(drop=True), committed)
