"""The ground-truth provider registry: every provider is found by name, has the one signature
``load(suite, space, *, data_dir, gt_file, budget, cache_dir, device, say)``, and a suite's
``load_gt`` calls the provider its TOML names with every argument. ``benchmark`` is the NB201
table; ``standalone-probe`` is ``--gt-file``, the committed table, else the standalone cache (built
at a run's budget, never trained without one)."""
from __future__ import annotations

import dataclasses
import inspect
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.budgets import get_budget
from harness.core.errors import ConfigError, DataError
from harness.groundtruth import providers as P
from harness.groundtruth.base import DEFAULT_GT_COLUMN, CsvGroundTruth, GroundTruth, load_ground_truth
from harness.groundtruth.providers import GT_PROVIDERS, PROVIDER_PARAMS, check_provider
from harness.groundtruth.table import STANDALONE, TableGroundTruth
from harness.spaces.nb201 import Nb201Space
from harness.spaces.registry import SPACES, make_space
from harness.spaces.resnet_probe import ResNetProbeSpace
from harness.suites import Suite, get_suite, load_suite_toml

BUILTIN = ("benchmark", "standalone-probe")
ARCHS = ["-".join(["1s1x64d"] * 16), "-".join(["2s1x64d"] * 16)]


def probe_suite(tmp_path: Path, *, committed: bool) -> Suite:
    (tmp_path / "two.txt").write_text("\n".join(ARCHS) + "\n")
    if committed:
        pd.DataFrame({"arch": ARCHS, "standalone": [50.0, 52.0], "standalone_s0": [49.0, 53.0],
                      "standalone_s1": [51.0, 51.0]}).to_csv(tmp_path / "two-gt.csv", index=False)
    path = tmp_path / "two.toml"
    path.write_text('name = "two"\nspace = "resnet-probe"\ndataset = "cifar10"\ngt_provider = "standalone-probe"\n'
                    'default_gt = ["standalone"]\narchs = "file:two.txt"\ngt_table = "two-gt.csv"\n'
                    'standalone_gt = true\n[budgets.smoke]\nchannels = 2\nresolution = 8\n')
    return load_suite_toml(path)


# --- the registry -------------------------------------------------------------------------
def test_the_builtin_providers_are_registered_with_the_one_signature():
    assert set(BUILTIN) <= set(GT_PROVIDERS.names())
    for name in BUILTIN:
        fn = GT_PROVIDERS.get(name)
        params = inspect.signature(fn).parameters
        assert list(params)[:2] == ["suite", "space"]
        assert [p for p in params if params[p].kind is inspect.Parameter.KEYWORD_ONLY] == list(PROVIDER_PARAMS)
        assert GT_PROVIDERS.origins[name] == "builtin"
    assert GT_PROVIDERS.entry_point_group == "supernet_harness.gt_providers"


def test_unknown_provider_says_did_you_mean():
    with pytest.raises(ConfigError, match=r"unknown ground-truth provider 'benchmrk' \(did you mean 'benchmark'\?\); "
                                          r"choose one of: benchmark, standalone-probe"):
        GT_PROVIDERS.get("benchmrk")


def test_a_provider_must_accept_the_one_signature():
    def wrong(suite, space, *, data_dir, gt_file):  # no budget, cache_dir, device, say
        raise AssertionError

    with pytest.raises(TypeError, match=r"'wrong' .* does not accept load\(suite, space, \*, data_dir, gt_file, "
                                        r"budget, cache_dir, device, say\)"):
        check_provider("wrong", wrong)
    with pytest.raises(TypeError, match=r"not a callable"):
        check_provider("table", {"a": 1})
    lenient = check_provider("lenient", lambda suite, space, **kw: None)  # **kw accepts them all
    assert callable(lenient)


def test_a_suite_calls_the_provider_its_file_names_with_every_argument(tmp_path, monkeypatch):
    calls = []

    class Fixed(GroundTruth):
        columns = ("acc",)
        source = "fixed"

        def values(self, archs, column):
            return np.zeros(len(archs))

    def fixed(suite, space, *, data_dir, gt_file, budget, cache_dir, device, say):
        calls.append(dict(suite=suite.name, space=space.name, data_dir=data_dir, gt_file=gt_file,
                          budget=budget and budget.name, cache_dir=cache_dir, device=device, say=say))
        return Fixed()

    monkeypatch.setitem(GT_PROVIDERS, "fixed-test", check_provider("fixed-test", fixed))
    path = tmp_path / "fx.toml"
    path.write_text('name = "fx"\nspace = "nb201"\ndataset = "cifar10"\ngt_provider = "fixed-test"\n'
                    'default_gt = ["acc"]\n')
    suite = load_suite_toml(path)
    space = suite.make_space()
    gt = suite.load_gt(space, data_dir=tmp_path, budget=suite.budget("smoke"), cache_dir=tmp_path / "c",
                       device="cuda:0", say=print)
    assert isinstance(gt, Fixed)
    assert calls == [dict(suite="fx", space="nb201", data_dir=tmp_path, gt_file=None, budget="smoke",
                          cache_dir=tmp_path / "c", device="cuda:0", say=print)]
    suite.load_gt(space)  # a report: no budget
    assert calls[-1]["budget"] is None and calls[-1]["device"] == "cpu"
    # run_ground_truth goes through the provider too (no standalone column asked for: as is)
    assert suite.run_ground_truth(space, suite.budget("smoke"), None, None, tmp_path, ["acc"]).source == "fixed"


# --- the search-space registry a suite names its space through ------------------------------
def test_spaces_are_found_by_name():
    assert {"nb201", "resnet-probe", "mobilenet-probe"} <= set(SPACES.names())
    for name in ("nb201", "resnet-probe", "mobilenet-probe"):
        assert make_space(name).name == name
    assert isinstance(make_space("nb201"), Nb201Space)
    with pytest.raises(ConfigError, match=r"unknown search space 'resnet' \(did you mean 'resnet-probe'\?\)"):
        SPACES.get("resnet")
    assert SPACES.entry_point_group == "supernet_harness.spaces"


# --- benchmark ----------------------------------------------------------------------------
def test_benchmark_is_the_nb201_table(shared_dir):
    suite, space = get_suite("nb201"), Nb201Space()
    gt = suite.load_gt(space, data_dir=shared_dir)
    ref = load_ground_truth(space, shared_dir, None)
    assert isinstance(gt, CsvGroundTruth) and gt.source == ref.source and gt.columns == ref.columns
    archs = list(itertools.islice(space.enumerate(), 0, 15625, 1500))
    np.testing.assert_array_equal(gt.values(archs, DEFAULT_GT_COLUMN), ref.values(archs, DEFAULT_GT_COLUMN))
    # budget, cache and device do not change it
    other = suite.load_gt(space, data_dir=shared_dir, budget=suite.budget("paper"), cache_dir=Path("/nonexistent"),
                          device="cuda:3")
    np.testing.assert_array_equal(other.values(archs, DEFAULT_GT_COLUMN), gt.values(archs, DEFAULT_GT_COLUMN))


def test_benchmark_without_data_says_how_to_fix():
    with pytest.raises(DataError, match=r"no data dir: pass --data-dir DIR or set HARNESS_DATA_DIR"):
        get_suite("nb201").load_gt(Nb201Space())


# --- standalone-probe ---------------------------------------------------------------------
def test_standalone_probe_reads_the_committed_table_and_never_trains_for_it(tmp_path):
    suite = probe_suite(tmp_path, committed=True)
    space = suite.make_space()
    archs = [space.parse(a) for a in ARCHS]
    said = []
    for budget in (None, suite.budget("smoke")):
        gt = suite.load_gt(space, budget=budget, cache_dir=tmp_path / "cache", say=said.append)
        assert isinstance(gt, TableGroundTruth) and "committed table" in gt.source
        assert list(gt.values(archs, STANDALONE)) == [50.0, 52.0]
    assert len(said) == 1 and "GT noise" in said[0]  # said with a budget (a run), silent without (a report)
    assert not (tmp_path / "cache").exists()


def test_standalone_probe_gt_file_wins(tmp_path):
    suite = probe_suite(tmp_path, committed=True)
    other = tmp_path / "other.csv"
    pd.DataFrame({"arch": ARCHS, "standalone": [1.0, 2.0]}).to_csv(other, index=False)
    space = suite.make_space()
    for budget in (None, suite.budget("smoke")):
        gt = suite.load_gt(space, gt_file=other, budget=budget)
        assert gt.source == str(other) and list(gt.values([space.parse(a) for a in ARCHS], STANDALONE)) == [1.0, 2.0]


def test_standalone_probe_without_a_budget_never_trains(tmp_path):
    suite = probe_suite(tmp_path, committed=False)
    with pytest.raises(DataError, match=r"no committed or cached standalone GT for two in .*standalone; "
                                        r"build it with `harness gt --suite two --budget smoke`"):
        suite.load_gt(suite.make_space(), cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "standalone").exists()


class FakeCache:
    """StandaloneCache's interface, recording the budget and returning made-up accuracies."""

    made: list = []

    def __init__(self, space, budget, cache_dir, data_dir, device="cpu", say=print):
        self.space, self.budget = space, budget
        FakeCache.made.append(self)

    def missing(self, archs, seeds):
        return [(a, s) for a in archs for s in seeds] if self.budget.name == "smoke" else []

    def build(self, archs, seeds):
        return pd.DataFrame([{"arch": self.space.format(a), "seed": s, "accuracy": 40.0 + i + s}
                             for i, a in enumerate(archs) for s in seeds])


def test_standalone_probe_builds_the_cache_at_the_runs_budget(tmp_path, monkeypatch):
    """No committed table: the run's (shaped) budget keys the cache, missing results are announced;
    without a budget the first fully cached named budget is used."""
    monkeypatch.setattr(P, "StandaloneCache", FakeCache)
    FakeCache.made = []
    suite = probe_suite(tmp_path, committed=False)
    space = suite.make_space()
    said = []
    gt = suite.load_gt(space, budget=suite.budget("smoke"), cache_dir=tmp_path, say=said.append)
    assert FakeCache.made[-1].budget == suite.budget("smoke") and FakeCache.made[-1].budget.channels == 2
    assert "building the standalone GT at budget smoke" in said[0] and "harness gt --suite two" in said[0]
    assert list(gt.values([space.parse(a) for a in ARCHS], "standalone_s1")) == [41.0, 42.0]
    assert gt.meta["budget"] == dataclasses.asdict(suite.budget("smoke"))
    # no budget: smoke is "missing" in the fake cache, so the next named budget (shaped) is read
    gt = suite.load_gt(space, cache_dir=tmp_path)
    assert gt.source.startswith("standalone cache (study") and FakeCache.made[-1].budget == suite.budget("study")


def test_standalone_probe_needs_the_suites_list(tmp_path):
    suite = dataclasses.replace(probe_suite(tmp_path, committed=False), archs=None)
    with pytest.raises(DataError, match=r"suite two fixes no architecture list; .*add archs = \"file:two\.txt\""):
        suite.load_gt(suite.make_space(), cache_dir=tmp_path)


def test_the_probe_suites_use_it_with_their_committed_tables():
    for name in ("resnet-probe13", "mobilenet-probe13"):
        suite = get_suite(name)
        gt = suite.load_gt(suite.make_space())
        assert suite.gt_provider == "standalone-probe" and f"harness/suites_data/{name}-gt.csv" in gt.source
        assert len(gt.table) == 13
    assert isinstance(get_suite("resnet-probe13").make_space(), ResNetProbeSpace)
    assert get_budget("smoke").channels != get_suite("resnet-probe13").budget("smoke").channels
