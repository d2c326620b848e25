"""Standalone ground truth: training, caching by key, locks, GT tables/noise, composite GT, probe lists."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from harness.archsets import resolve_archs
from harness.budgets import get_budget
from harness.groundtruth.base import GroundTruth
from harness.study.spec import RunConfig
from harness.spaces.mobilenet_probe import MobileNetProbeSpace
from harness.spaces.nb201 import Nb201Space
from harness.spaces.resnet_probe import ResNetProbeSpace
from harness.groundtruth.standalone import (CompositeGroundTruth, GtData, StandaloneCache, StandaloneGroundTruth,
                                            cache_path, make_key)
from harness.groundtruth.table import STANDALONE, TableGroundTruth, gt_noise, gt_table
from harness.groundtruth.providers import standalone_gt_at_budget, suite_archs
from harness.suites.probe import load_probe_archs, probe_list_path
from harness.suites import get_suite
from tests.conftest import tiny_data




def _budget(**kw):
    base = dict(channels=4, cells=1, resolution=8, standalone_epochs=1, batch_size=32, eval_batch_size=128,
                threads=1, checkpoint_every=0)
    base.update(kw)
    return get_budget("smoke").replace(**base)


def _cache(tmp_path, space=None, **kw) -> StandaloneCache:
    space = space or Nb201Space()
    cache = StandaloneCache(space, _budget(**kw), tmp_path / "cache", None, say=lambda m: None)
    d = tiny_data(resolution=8)
    cache._data = GtData(d, d.score_x, d.score_y)  # no CIFAR: tiny synthetic data
    return cache


def test_standalone_result_is_cached_and_keyed(tmp_path):
    cache = _cache(tmp_path)
    arch = (3, 3, 2, 3, 1, 3)
    first = cache.get(arch, 0)
    assert cache.trained == 1 and 0 <= first["accuracy"] <= 100 and first["images"] == 256 // 32 * 32
    path = cache_path(cache.cache_dir, cache.key(arch, 0))
    assert path.is_file() and json.loads(path.read_text())["key"]["arch"] == cache.space.format(arch)
    again = cache.get(arch, 0)
    assert cache.trained == 1 and again["accuracy"] == first["accuracy"]
    assert not list((cache.cache_dir / "standalone").glob("**/*.lock"))
    # the key separates seeds, budgets' shapes/epochs and model code versions
    b = cache.budget
    keys = {make_key(cache.space, arch, b, 0).digest(), make_key(cache.space, arch, b, 1).digest(),
            make_key(cache.space, arch, b.replace(standalone_epochs=2), 0).digest(),
            make_key(cache.space, arch, b.replace(channels=8), 0).digest()}
    assert len(keys) == 4
    bumped = Nb201Space()
    bumped.model_version = 2
    assert make_key(bumped, arch, b, 0).digest() != make_key(cache.space, arch, b, 0).digest()
    assert cache.missing([arch], [0, 1]) == [(arch, 1)]


def test_same_seed_retrains_identically(tmp_path):
    a, b = _cache(tmp_path / "a"), _cache(tmp_path / "b")
    arch = (2, 3, 1, 0, 3, 2)
    assert a.get(arch, 0)["accuracy"] == b.get(arch, 0)["accuracy"]


def test_entry_locked_by_a_live_process_is_left_to_it(tmp_path):
    import os

    cache = _cache(tmp_path)
    arch = (1, 1, 1, 1, 1, 1)
    key = cache.key(arch, 0)
    lock = cache_path(cache.cache_dir, key).with_suffix(".lock")
    lock.parent.mkdir(parents=True)
    lock.write_text(str(os.getppid()))  # a live process that is not us
    assert cache.get(arch, 0, wait=False) is None and cache.trained == 0
    lock.write_text("999999999")  # dead: taken over
    assert cache.get(arch, 0, wait=False) is not None and cache.trained == 1


def test_gt_table_noise_and_table_ground_truth():
    space = Nb201Space()
    archs = [space.from_index(i) for i in range(5)]
    rows = [{"arch": space.format(a), "seed": s, "accuracy": 50 + i + (0.3 if s else 0), "params": 10}
            for s in (0, 1) for i, a in enumerate(archs)]
    table = gt_table(pd.DataFrame(rows))
    assert list(table.columns) == ["arch", STANDALONE, f"{STANDALONE}_std", "standalone_s0", "standalone_s1", "params"]
    assert np.allclose(table[STANDALONE], 50.15 + np.arange(5))
    noise = gt_noise(table)
    assert noise["seed_pair_tau"] == {"standalone_s0~standalone_s1": pytest.approx(1.0)}
    assert noise["per_arch_std_mean"] == pytest.approx(np.std([0, 0.3], ddof=1))
    gt = TableGroundTruth(table, space, "test")
    assert gt.columns == (STANDALONE, "standalone_s0", "standalone_s1")
    vals = gt.values([archs[2], space.from_index(100)], STANDALONE)
    assert vals[0] == pytest.approx(52.15) and np.isnan(vals[1])  # outside the table: NaN (dropped by metrics)
    assert gt.best(STANDALONE) == pytest.approx(54.15)


class _FakeBenchmark(GroundTruth):
    columns = ("bench",)
    source = "fake"

    def values(self, archs, column):
        return np.array([float(sum(a)) for a in archs])


def test_composite_gt_dispatches_columns_and_reports_fidelity(tmp_path):
    cache = _cache(tmp_path, standalone_epochs=0.5)
    sa = StandaloneGroundTruth(cache, seeds=(0,))
    gt = CompositeGroundTruth([_FakeBenchmark(), sa])
    assert gt.columns == ("bench", STANDALONE, "standalone_s0")
    archs = [(3, 3, 3, 3, 3, 3), (0, 1, 0, 1, 0, 1), (2, 2, 2, 2, 2, 2)]
    gt.prepare(archs)
    assert cache.trained == 3
    assert np.allclose(gt.values(archs, "bench"), [18, 3, 12])
    assert np.allclose(gt.values(archs, STANDALONE), gt.values(archs, "standalone_s0"))
    q = gt.quality(archs)
    assert set(q["standalone_fidelity"]["vs"]) == {"bench"} and q["standalone_fidelity"]["n_archs"] == 3
    assert cache.trained == 3  # everything came from the cache


def test_probe_lists_committed_and_consistent():
    for suite, space in (("resnet-probe13", ResNetProbeSpace()), ("mobilenet-probe13", MobileNetProbeSpace())):
        archs = load_probe_archs(suite, space)
        assert len(archs) == len(set(archs)) == 13 and all(space.is_allowed(a) for a in archs)
        txt = resolve_archs(space, f"file:{probe_list_path(suite, 'txt')}")
        assert txt == archs == suite_archs(get_suite(suite), space)  # the suite scores (and trains) this list
        table = pd.read_csv(probe_list_path(suite), comment="#")
        assert table["chosen_by"].str.startswith("uniform").sum() == (4 if suite.startswith("resnet") else 7)


def test_probe_suites_registered_with_budget_shapes():
    for name, space_name in (("resnet-probe13", "resnet-probe"), ("mobilenet-probe13", "mobilenet-probe")):
        suite = get_suite(name)
        assert suite.make_space().name == space_name and suite.default_gt == (STANDALONE,)
        b = RunConfig(suite=name, budget="smoke").resolved_budget()
        shape = suite.shapes["smoke"]
        assert (b.channels, b.resolution, b.standalone_epochs) == (shape["channels"], shape["resolution"],
                                                                   shape["standalone_epochs"])
        assert b.archs.startswith("file:") and b.archs.endswith(f"{name}.txt")
        # --set still wins over the suite's table
        assert RunConfig(suite=name, budget="smoke", budget_overrides=(("channels", 2),)).resolved_budget().channels == 2
    assert RunConfig(suite="nb201", budget="smoke").resolved_budget() == get_budget("smoke")


@pytest.mark.parametrize("suite,space", [("resnet-probe13", ResNetProbeSpace()),
                                         ("mobilenet-probe13", MobileNetProbeSpace())])
def test_committed_probe_gt_is_current_and_used_by_default(suite, space, tmp_path):
    """The committed `small` GT covers exactly the probe list, both GT seeds, and was built by this
    model code at the suite's current `small` shapes; a run loads it without training anything."""
    path = get_suite(suite).gt_table
    gt = TableGroundTruth.from_csv(path, space)
    archs = load_probe_archs(suite, space)
    assert sorted(gt.table["arch"]) == sorted(space.format(a) for a in archs)
    s0, s1, mean = (gt.values(archs, c) for c in ("standalone_s0", "standalone_s1", STANDALONE))
    assert np.all((s0 > 10) & (s0 < 100) & (s1 > 10) & (s1 < 100))  # trained above chance, as %
    np.testing.assert_allclose(mean, (s0 + s1) / 2, atol=1e-9)
    meta = gt.meta
    assert meta["model_version"] == space.model_version and meta["seeds"] == [0, 1]
    assert meta["budget"]["name"] == "small"
    for field_name, value in get_suite(suite).shapes["small"].items():  # shapes changed => rebuild the GT
        assert meta["budget"][field_name] == value, field_name
    assert meta["noise"]["tau_between_seeds_mean"] == pytest.approx(gt.noise["tau_between_seeds_mean"])
    said = []
    loaded = standalone_gt_at_budget(get_suite(suite), space, get_suite(suite).budget("smoke"), None, None,
                                     tmp_path / "cache", say=said.append)
    assert "committed table" in loaded.source and "budget small" in loaded.source
    assert not (tmp_path / "cache").exists()  # nothing trained, nothing cached
    assert any("GT noise" in m for m in said)
