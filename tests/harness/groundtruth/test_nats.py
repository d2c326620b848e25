"""The NATS-Bench provider on the upstream test data, through the real ``nats_bench`` package.

``../shared/nats_bench_fixture/NATS-tss-v1_0-3ffb9-simple/`` holds real files of the upstream
NATS-Bench repository's test data (its ``fake_torch_dir``): the meta file and three architectures
(indices 0, 11, 284), so it is a partial benchmark. The single-archive form is built here from
those files in the layout ``nats_bench.create(path, "tss", fast_mode=False)`` reads.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import metrics as M
from harness.cli import main
from harness.core.errors import ArchError, DataError
from harness.groundtruth.base import (NATS_ARCHIVE, NATS_COLUMNS, NATS_ONLY_COLUMNS, NATS_SIMPLE_DIR, NB201_COLUMNS,
                                      CsvGroundTruth, NatsBenchGroundTruth, load_ground_truth)
from harness.groundtruth.providers import GT_PROVIDERS
from harness.spaces.nb201 import Nb201Space
from harness.study.aggregate import job_metrics
from tests.conftest import SHARED, tiny_data

nats_bench = pytest.importorskip("nats_bench", reason="pip install nats_bench (the test extra installs it)")
from nats_bench.api_utils import pickle_load, pickle_save  # noqa: E402

SPACE = Nb201Space()
FIXTURE = SHARED / "nats_bench_fixture" / NATS_SIMPLE_DIR
INDICES = (0, 11, 284)
ARCHS = [SPACE.from_index(i) for i in INDICES]
EXT = ".pickle.pbz2"


@pytest.fixture(scope="module")
def folder() -> Path:
    if not (FIXTURE / f"meta{EXT}").is_file():
        pytest.skip(f"NATS-Bench upstream test data not found at {FIXTURE}")
    return FIXTURE


@pytest.fixture(scope="module")
def gt(folder) -> NatsBenchGroundTruth:
    return load_ground_truth(SPACE, None, folder)


@pytest.fixture(scope="module")
def archive(folder, tmp_path_factory) -> Path:
    """The single-archive form, from the fixture's own files: the dict the API's fast_mode=False
    constructor reads (meta_archs, arch2infos: index -> {hp: ArchResults state}, evaluated_indexes)."""
    meta = pickle_load(str(folder / f"meta{EXT}"))
    infos = {i: pickle_load(str(folder / f"{i:06d}{EXT}")) for i in INDICES}
    path = tmp_path_factory.mktemp("archive") / NATS_ARCHIVE
    pickle_save({"meta_archs": meta["meta_archs"], "total_archs": meta["total_archs"], "arch2infos": infos,
                 "evaluated_indexes": set(INDICES)}, str(path)[: -len(".pbz2")])  # pickle_save adds .pbz2
    return path


def copy_folder(folder: Path, dest: Path, mutate: dict | None = None) -> Path:
    """A writable copy of the fixture folder; ``mutate[index](results)`` edits one architecture's file."""
    out = dest / NATS_SIMPLE_DIR
    out.mkdir(parents=True)
    for f in folder.iterdir():
        shutil.copyfile(f, out / f.name)
    for index, fn in (mutate or {}).items():
        path = out / f"{index:06d}{EXT}"
        data = pickle_load(str(path))
        data = fn(data) or data
        path.unlink()
        pickle_save(data, str(path)[: -len(".pbz2")])
    return out


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# --- both forms, the values --------------------------------------------------------------
def test_simple_folder_equals_our_csv(shared_dir, gt):
    assert gt.fast_mode is True and gt.present == frozenset(INDICES) and not gt.complete
    csv = CsvGroundTruth(shared_dir / "nb201" / "nats_tss_accuracy.csv", SPACE)
    gt.prepare(ARCHS)
    for column in NB201_COLUMNS:  # every column the CSV carries, not only the four the issue names
        np.testing.assert_allclose(gt.values(ARCHS, column), csv.values(ARCHS, column), atol=1e-4, err_msg=column)


def test_single_archive_equals_folder(gt, archive):
    whole = load_ground_truth(SPACE, None, archive)
    assert whole.fast_mode is False and whole.present == frozenset(INDICES)
    assert "single archive, fast_mode=False" in whole.source and "3 of 15,625" in whole.source
    for column in NATS_COLUMNS:
        np.testing.assert_array_equal(whole.values(ARCHS, column), gt.values(ARCHS, column), err_msg=column)
    with pytest.raises(ArchError, match=r"NATS-Bench index 1\)"):
        whole.values([SPACE.from_index(1)], "cifar10_test_200ep")


def test_columns_only_the_file_has(gt):
    """cifar10-valid at 200 epochs (trained on half of CIFAR-10 train): its test accuracy (the GT of
    several published zero-cost tables) and its validation accuracy, and the other 200-epoch valid sets."""
    assert set(NATS_ONLY_COLUMNS) >= {"cifar10-valid_test_200ep", "cifar10_valid_200ep"}
    assert gt.check_column("cifar10-valid_test_200ep") is None
    for column in NATS_ONLY_COLUMNS:
        dataset, hp, key = NATS_COLUMNS[column]
        direct = [gt.api.get_more_info(SPACE.format(a), dataset, hp=hp, is_random=False)[key] for a in ARCHS]
        np.testing.assert_allclose(gt.values(ARCHS, column), direct, err_msg=column)
    # arch 0: cifar10-valid 200 ep test 81.52 (CIFAR-10 test set), its valid 81.98; cifar10 (train+valid) 85.86
    assert gt.values(ARCHS[:1], "cifar10-valid_test_200ep")[0] == pytest.approx(81.52, abs=1e-6)
    assert gt.values(ARCHS[:1], "cifar10_valid_200ep")[0] == pytest.approx(81.98266, abs=1e-4)


def test_asks_the_api_by_architecture_string(folder, monkeypatch):
    fresh = load_ground_truth(SPACE, None, folder)
    calls = []
    real = fresh.api.get_more_info

    def spy(arch, dataset, iepoch=None, hp="12", is_random=True):
        calls.append((arch, dataset, hp, is_random))
        return real(arch, dataset, iepoch=iepoch, hp=hp, is_random=is_random)

    monkeypatch.setattr(fresh.api, "get_more_info", spy)
    fresh.values(ARCHS, "cifar10_test_200ep")
    texts = [SPACE.format(a) for a in ARCHS]
    assert {c[0] for c in calls} == set(texts)  # strings, not indices
    assert {c[2] for c in calls} == {"12", "200"} and {c[3] for c in calls} == {False}  # seed mean
    assert [fresh.api.query_index_by_arch(t) for t in texts] == list(INDICES)


def test_results_for_another_architecture_are_refused(folder, tmp_path):
    """The results' own arch_str must be the architecture asked for."""
    swapped = copy_folder(folder, tmp_path)
    shutil.copyfile(folder / f"{0:06d}{EXT}", swapped / f"{11:06d}{EXT}")
    bad = load_ground_truth(SPACE, None, swapped)
    with pytest.raises(DataError, match="it returned the results of") as exc:
        bad.values([ARCHS[1]], "cifar10_test_200ep")
    assert SPACE.format(ARCHS[1]) in one_line(exc) and SPACE.format(ARCHS[0]) in str(exc.value)


# --- a missing value is an error, never a substitute -----------------------------------
def _drop_eval(data, hp: str, dataset: str, setname: str):
    results = data[hp]["all_results"]
    for (name, _seed), r in results.items():
        if name != dataset:
            continue
        r["eval_names"] = [n for n in r["eval_names"] if n != setname]
        for field in ("eval_acc1es", "eval_times", "eval_losses"):
            r[field] = {k: v for k, v in r[field].items() if not k.startswith(setname + "@")}


def test_missing_key_names_architecture_dataset_and_key(folder, tmp_path):
    mutated = copy_folder(folder, tmp_path, {
        11: lambda d: _drop_eval(d, "200", "cifar100", "x-test"),
        284: lambda d: d.pop("12") and None,
    })
    bad = load_ground_truth(SPACE, None, mutated)
    arch11 = SPACE.format(ARCHS[1])
    # what the old code fell back to is still there: valtest-accuracy (valid+test), not the test set
    info = bad.api.get_more_info(arch11, "cifar100", hp="200", is_random=False)
    assert "test-accuracy" not in info and "valtest-accuracy" in info
    with pytest.raises(DataError) as exc:
        bad.values([ARCHS[1]], "cifar100_test_200ep")
    text = one_line(exc)
    assert arch11 in text and "dataset cifar100" in text and "hp=200" in text and "'test-accuracy'" in text
    assert "no other key is substituted" in text
    # the rest of that architecture is answered
    assert bad.values([ARCHS[1]], "cifar100_valid_200ep")[0] == pytest.approx(67.45333, abs=1e-4)
    with pytest.raises(DataError, match=r"hp=12: no results at hp=12 \(it has hp 200\)") as exc:
        bad.values([ARCHS[2]], "cifar10_test_12ep")
    assert SPACE.format(ARCHS[2]) in one_line(exc)
    assert bad.values([ARCHS[2]], "cifar10_test_200ep")[0] == pytest.approx(88.79, abs=1e-4)


# --- which path is which form ----------------------------------------------------------
@pytest.mark.parametrize("make,why", [
    (lambda t, f: t / "nope", "does not exist"),
    (lambda t, f: f.parent, "is a folder without meta.pickle.pbz2"),
    (lambda t, f: f / f"meta{EXT}", "is a file inside a -simple folder"),
    (lambda t, f: f / f"{284:06d}{EXT}", "is a file inside a -simple folder"),
    (lambda t, f: (t / "gt.json").write_text("{}") and t / "gt.json", "is neither our .csv table"),
])
def test_path_that_is_neither_form_names_both(tmp_path, folder, make, why):
    with pytest.raises(DataError) as exc:
        load_ground_truth(SPACE, None, make(tmp_path, folder))
    text = one_line(exc)
    assert why in text
    assert f"{NATS_SIMPLE_DIR}/" in text and "fast_mode=True" in text
    assert NATS_ARCHIVE in text and "fast_mode=False" in text


def test_unreadable_archive_is_one_line(tmp_path):
    path = tmp_path / NATS_ARCHIVE
    path.write_bytes(b"not bz2")
    with pytest.raises(DataError, match="cannot read NATS-Bench file .* \\(fast_mode=False\\)") as exc:
        load_ground_truth(SPACE, None, path)
    one_line(exc)


# --- a partial benchmark -----------------------------------------------------------------
def test_partial_benchmark_lacks_the_space_optimum(gt):
    assert math.isnan(gt.best("cifar10_test_200ep"))
    why = gt.optimum_unavailable("cifar10_test_200ep")
    assert "3 of 15,625" in why and "regret is NaN" in why
    assert "a partial benchmark" in gt.source


def test_architecture_it_lacks_is_named(gt):
    asked = [SPACE.from_index(i) for i in (0, 7, 11, 9)]
    with pytest.raises(ArchError) as exc:
        gt.prepare(asked)
    text = one_line(exc)
    assert SPACE.format(asked[1]) in text and "NATS-Bench index 7" in text
    assert "holds 3 of 15,625" in text and "2 of the 4 architectures asked for are missing" in text


def test_regret_is_nan_without_the_space_optimum(shared_dir, gt):
    """job_metrics: with a partial benchmark both regrets (within the scored set, and the pick's
    against the space optimum) are NaN; every other metric equals the one against our CSV."""
    csv = CsvGroundTruth(shared_dir / "nb201" / "nats_tss_accuracy.csv", SPACE)
    scores = pd.DataFrame({"subset": "scored", "arch": [SPACE.format(a) for a in ARCHS], "score": [1.0, 3.0, 2.0]})
    picked = SPACE.format(ARCHS[1])
    rows = {(r["subset"], r["metric"], r["k"]): r["value"]
            for r in job_metrics(scores, gt, SPACE, ["cifar10_test_200ep"], picked)}
    ref = {(r["subset"], r["metric"], r["k"]): r["value"]
           for r in job_metrics(scores, csv, SPACE, ["cifar10_test_200ep"], picked)}
    assert rows.keys() == ref.keys()
    assert math.isnan(rows["scored", "regret", None]) and math.isnan(rows["derived", "regret", None])
    assert ref["scored", "regret", None] == 0.0  # the pick is the best of the three rows
    assert ref["derived", "regret", None] == pytest.approx(94.3733 - 91.5833, abs=1e-3)  # the space's optimum
    for key, value in ref.items():
        if key[1] != "regret":
            assert rows[key] == pytest.approx(value, abs=1e-4, nan_ok=True), key
    assert rows["derived", "picked_gt", None] == pytest.approx(91.58333, abs=1e-4)


class _OnlyThese:
    """The NB201 space whose enumeration is the fixture's three architectures (a stand-in for a
    complete file: no complete NATS-Bench file is available to the tests)."""

    def __init__(self, space, archs):
        self._space, self._archs = space, list(archs)

    def enumerate(self):
        return iter(self._archs)

    def __getattr__(self, name):
        return getattr(self._space, name)


def test_complete_benchmark_optimum_is_read_once_and_cached(folder, tmp_path, monkeypatch):
    said = []
    cache = tmp_path / "cache"
    first = load_ground_truth(SPACE, None, folder, cache_dir=cache, say=said.append)
    first.complete, first.space = True, _OnlyThese(SPACE, ARCHS)
    assert first.optimum_unavailable("cifar10_test_200ep") is None
    assert first.best("cifar10_test_200ep") == pytest.approx(91.58333, abs=1e-4)
    assert first.best("cifar10-valid_test_200ep") == pytest.approx(87.65, abs=1e-4)
    assert len(said) == 1 and "once for the space optimum" in said[0]
    assert len(list((cache / "natsbench").glob("optimum-*.json"))) == 1
    second = load_ground_truth(SPACE, None, folder, cache_dir=cache, say=said.append)
    second.complete = True
    monkeypatch.setattr(second, "_arch_values", lambda arch: pytest.fail("the cached optimum was not used"))
    assert second.best("cifar10_test_200ep") == pytest.approx(91.58333, abs=1e-4)
    assert len(said) == 1


# --- end to end through the CLI -----------------------------------------------------------
def _fake_prepare_data(*args, **kwargs):
    resolution = args[2] if len(args) > 2 else kwargs["resolution"]
    return tiny_data(resolution=resolution), {"source": "synthetic (test)", "splits": {}, "resolution": resolution}


TINY = ["--set", "channels=4", "--set", "cells=1", "--set", "resolution=8", "--set", "epochs=1",
        "--set", "batch_size=32", "--set", "score_size=128", "--set", "eval_batch_size=128", "--set", "threads=1",
        "--set", "checkpoint_every=0"]


def test_benchmark_provider_says_what_it_read(folder):
    said = []
    gt = GT_PROVIDERS.get("benchmark")(None, SPACE, data_dir=None, gt_file=folder, budget=None, cache_dir=None,
                                       device="cpu", say=said.append)
    assert said == [f"ground truth: {gt.source}"] and "3 of 15,625 architectures" in said[0]


def test_cli_run_on_the_partial_benchmark(folder, shared_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("harness.study.runner.prepare_data", _fake_prepare_data)
    monkeypatch.setattr("harness.study.jobs.prepare_data", _fake_prepare_data)
    archs = tmp_path / "three.txt"
    archs.write_text("".join(SPACE.format(a) + "\n" for a in ARCHS))
    out = tmp_path / "run"
    columns = ["cifar10_test_200ep", "cifar10-valid_test_200ep"]
    rc = main(["run", "--suite", "nb201", "--methods", "params,flops,random", "--seeds", "0", "--archs", f"file:{archs}",
               "--gt-file", str(folder), "--gt", ",".join(columns), "--out", str(out), "--no-report",
               "--no-progress", *TINY])
    assert rc == 0
    manifest = pd.read_json(out / "manifest.json", typ="series")
    assert "regret is NaN" in manifest["gt_source"] and manifest["gt_columns"] == columns
    metrics = pd.read_csv(out / "metrics.csv")
    assert set(metrics["gt"]) == set(columns) and (metrics["status"] == "done").all()
    assert metrics[metrics["metric"] == "regret"]["value"].isna().all()
    est = pd.read_csv(out / "estimates.csv")
    csv = CsvGroundTruth(shared_dir / "nb201" / "nats_tss_accuracy.csv", SPACE)
    for method, df in est.groupby("method"):
        truth = csv.values([SPACE.parse(a) for a in df["arch"]], "cifar10_test_200ep")
        row = metrics[(metrics["method"] == method) & (metrics["gt"] == "cifar10_test_200ep")
                      & (metrics["metric"] == "kendall_tau")]
        assert row["value"].iloc[0] == pytest.approx(M.kendall_tau(df["score"].to_numpy(), truth), nan_ok=True)


def test_cli_architecture_the_benchmark_lacks_is_one_line(folder, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", "--suite", "nb201", "--methods", "params", "--seeds", "0", "--archs", "sample:5",
               "--gt-file", str(folder), "--out", str(out), "--no-report", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "is not in the NATS-Bench file" in err and "holds 3 of 15,625 architectures" in err
    assert not out.exists()


def test_cli_wrong_gt_file_names_both_forms(tmp_path, capsys):
    rc = main(["run", "--suite", "nb201", "--methods", "params", "--seeds", "0", "--archs", "sample:5",
               "--gt-file", str(tmp_path / "NATS-tss-v1_0-3ffb9"), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert NATS_SIMPLE_DIR in err and NATS_ARCHIVE in err


def test_list_names_the_file_only_columns(capsys):
    assert main(["list"]) == 0
    assert "cifar10-valid_test_200ep" in capsys.readouterr().out
