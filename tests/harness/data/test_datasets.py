"""CIFAR-100 and ImageNet16-120 (`--dataset`): readers of the official formats on tiny files written
here in exactly those formats, the benchmark's splits, the decode-once cache, the one-line error
for a missing data set, and a short `harness run` end to end on each."""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from harness.cli import main
from harness.core.errors import ConfigError, DataError
from harness.data import datasets as D
from harness.data.tensors import CIFAR10_MEAN, CIFAR10_STD, to_float
from harness.engine.taskdata import prepare_data
from harness.groundtruth.standalone import StandaloneCache, make_key
from harness.spaces.nb201 import Nb201Space
from harness.study.plan import validate_config
from harness.study.spec import STUDY_FILE, RunConfig, config_differences, read_study, study_toml
from harness.suites import load_suite_toml

TRAIN_PER_CLASS, TEST_PER_CLASS = 4, 2  # CIFAR-100: 400 train, 200 test images
EXTRA_TRAIN, EXTRA_VAL = 40, 30  # ImageNet16: images of classes 121..1000 (dropped)


# --- tiny files in the official formats ----------------------------------------------------
def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar100(data_dir: Path, seed: int = 0) -> Path:
    """``data_dir/datasets/cifar-100-python/{train,test,meta}`` as the CIFAR-100 authors ship them."""
    rng = np.random.default_rng(seed)
    folder = data_dir / "datasets" / "cifar-100-python"
    for name, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        labels = rng.permutation(np.repeat(np.arange(100), per_class))
        _dump(folder / name, {"filenames": [f"img_{i}.png" for i in range(len(labels))],
                              "batch_label": f"{name}ing batch 1 of 1", "fine_labels": labels.tolist(),
                              "coarse_labels": (labels // 5).tolist(),
                              "data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)})
    _dump(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                            "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    return folder


def _imagenet16_labels(rng, per_class: int, extra: int) -> np.ndarray:
    """1-based labels: every class of 1..120 ``per_class`` times, plus ``extra`` of 121..1000."""
    return rng.permutation(np.concatenate([np.repeat(np.arange(1, 121), per_class),
                                           rng.integers(121, 1001, extra)]))


def write_imagenet16(data_dir: Path, seed: int = 0) -> Path:
    """``data_dir/datasets/ImageNet16/{train_data_batch_1..10, val_data}``: the official 16x16
    downsampled ImageNet pickles (``data`` N x 768 uint8, ``labels`` 1-based, train batches with ``mean``)."""
    rng = np.random.default_rng(seed)
    folder = data_dir / "datasets" / "ImageNet16"
    labels = _imagenet16_labels(rng, 2, EXTRA_TRAIN)
    for k, part in enumerate(np.array_split(labels, 10), start=1):
        data = rng.integers(0, 256, (len(part), 768), dtype=np.uint8)
        _dump(folder / f"train_data_batch_{k}", {"data": data, "labels": part.tolist(), "mean": data.mean(0)})
    val = _imagenet16_labels(rng, 2, EXTRA_VAL)
    _dump(folder / "val_data", {"data": rng.integers(0, 256, (len(val), 768), dtype=np.uint8),
                                "labels": val.tolist()})
    return folder


@pytest.fixture
def cifar100_dir(tmp_path) -> Path:
    write_cifar100(tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture
def imagenet16_dir(tmp_path) -> Path:
    write_imagenet16(tmp_path / "data")
    return tmp_path / "data"


# --- readers ---------------------------------------------------------------------------------
def test_cifar100_reader(cifar100_dir, tmp_path):
    raw = D.load_dataset("cifar100", cifar100_dir, tmp_path / "cache", progress=False)
    with open(cifar100_dir / "datasets" / "cifar-100-python" / "train", "rb") as f:
        train = pickle.load(f)
    assert raw.x_train.shape == (400, 3, 32, 32) and raw.x_train.dtype == torch.uint8
    assert raw.x_test.shape == (200, 3, 32, 32) and raw.num_classes == 100
    assert raw.classes[:2] == ["fine0", "fine1"]
    assert raw.y_train.tolist() == train["fine_labels"]  # fine labels, file order
    # 1,024 red values, then green, then blue, each row-major
    assert torch.equal(raw.x_train[5], torch.from_numpy(train["data"][5].reshape(3, 32, 32)))
    assert D.check_images(raw, D.get_dataset("cifar100")) is None


def test_imagenet16_reader_keeps_nb201s_120_classes(imagenet16_dir, tmp_path):
    raw = D.load_dataset("imagenet16-120", imagenet16_dir, tmp_path / "cache", progress=False)
    folder = imagenet16_dir / "datasets" / "ImageNet16"
    xs, ys = [], []
    for name in [f"train_data_batch_{k}" for k in range(1, 11)]:
        with open(folder / name, "rb") as f:
            e = pickle.load(f)
        keep = np.asarray(e["labels"]) <= 120
        xs.append(e["data"][keep])
        ys.append(np.asarray(e["labels"])[keep] - 1)
    assert raw.x_train.shape == (240, 3, 16, 16) and raw.x_test.shape == (240, 3, 16, 16)
    assert raw.num_classes == 120 and raw.classes[0] == "1" and raw.classes[-1] == "120"
    # labels > 120 dropped, label - 1 as the class, batches 1..10 in order
    assert raw.y_train.tolist() == np.concatenate(ys).tolist()
    assert torch.equal(raw.x_train, torch.from_numpy(np.concatenate(xs).reshape(-1, 3, 16, 16)))
    assert int(raw.y_train.min()) == 0 and int(raw.y_train.max()) == 119
    assert torch.bincount(raw.y_test, minlength=120).tolist() == [2] * 120


def test_imagenet16_zero_label_and_missing_file_are_one_line(imagenet16_dir, tmp_path):
    folder = imagenet16_dir / "datasets" / "ImageNet16"
    (folder / "train_data_batch_7").unlink()
    with pytest.raises(DataError) as e:
        D.load_dataset("imagenet16-120", imagenet16_dir, tmp_path / "cache", progress=False)
    assert "train_data_batch_7" in str(e.value) and "image-net.org" in str(e.value) and "\n" not in str(e.value)
    _dump(folder / "train_data_batch_7", {"data": np.zeros((2, 768), np.uint8), "labels": [0, 5]})
    with pytest.raises(DataError, match="1-based"):
        D.load_dataset("imagenet16-120", imagenet16_dir, tmp_path / "cache", progress=False)
    _dump(folder / "train_data_batch_7", {"data": np.zeros((2, 3072), np.uint8), "labels": [1, 5]})
    with pytest.raises(DataError, match="expected uint8 N x 768"):
        D.load_dataset("imagenet16-120", imagenet16_dir, tmp_path / "cache", progress=False)


@pytest.mark.parametrize("name,folder,origin", [("cifar100", "cifar-100-python", "cs.toronto.edu"),
                                                 ("imagenet16-120", "ImageNet16", "image-net.org")])
def test_missing_dataset_is_one_line_naming_folders_and_origin(name, folder, origin, tmp_path):
    (tmp_path / "data" / "datasets").mkdir(parents=True)
    with pytest.raises(DataError) as e:
        D.load_dataset(name, tmp_path / "data", tmp_path / "cache", progress=False)
    msg = str(e.value)
    assert str(tmp_path / "data" / "datasets" / folder) in msg and origin in msg and "data/README.md" in msg
    assert "\n" not in msg
    with pytest.raises(DataError, match="cannot be downloaded automatically" if name != "cifar100" else "no data dir"):
        D.load_dataset(name, None, tmp_path / "cache", download=name != "cifar100", progress=False)


def test_missing_dataset_through_the_cli_writes_nothing(tmp_path, shared_dir, capsys):
    out = tmp_path / "run"
    (tmp_path / "data" / "datasets").mkdir(parents=True)
    code = main(["run", "--suite", "nb201", "--dataset", "imagenet16-120", "--methods", "params", "--seeds", "0",
                 "--data-dir", str(tmp_path / "data"), "--gt-file", str(shared_dir / "nb201" / "nats_tss_accuracy.csv"),
                 "--out", str(out), "--no-progress", "--no-report"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "ImageNet16-120 not found" in err
    assert not out.exists()


# --- splits ----------------------------------------------------------------------------------
@pytest.mark.parametrize("classes,per_class,half", [(100, 100, 5_000), (120, 50, 3_000)],
                         ids=["cifar100-test", "imagenet16-120-val"])
def test_eval_set_is_halved_class_balanced(classes, per_class, half):
    y = np.random.default_rng(0).permutation(np.repeat(np.arange(classes), per_class))
    valid, test = D.eval_halves(y)
    assert len(valid) == len(test) == half
    assert not set(valid) & set(test) and len(set(valid) | set(test)) == len(y)
    assert np.bincount(y[valid]).tolist() == np.bincount(y[test]).tolist() == [per_class // 2] * classes
    again = D.eval_halves(y)
    assert np.array_equal(again[0], valid) and np.array_equal(again[1], test)
    assert not np.array_equal(D.eval_halves(y, seed=1)[0], valid)


def test_prepare_data_splits_and_normalisation(cifar100_dir, imagenet16_dir, tmp_path):
    task, info = prepare_data(str(cifar100_dir), str(tmp_path / "cache"), 16, 64, "cpu", False, dataset="cifar100")
    assert task.num_classes == 100 and task.train_x.shape == (200, 3, 16, 16)
    assert info["splits"] == {"train": 200, "valid": 200, "search": 136, "score": 64}
    assert info["benchmark_splits"] == {"train": 400, "valid": 100, "test": 100}
    assert info["images_per_epoch"] == 200 and info["dataset"] == "cifar100"
    assert task.mean == D.get_dataset("cifar100").mean != CIFAR10_MEAN
    task, info = prepare_data(str(imagenet16_dir), str(tmp_path / "cache"), 16, 64, "cpu", False,
                              dataset="imagenet16-120")
    assert task.num_classes == 120 and info["splits"]["train"] == 120 and info["images_per_epoch"] == 120
    assert info["benchmark_splits"] == {"train": 240, "valid": 120, "test": 120}
    # the train half of each class: one of its two images
    assert torch.bincount(task.train_y, minlength=120).tolist() == [1] * 120


def test_cifar10_normalisation_is_the_default():
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(to_float(x, 16), to_float(x, 16, CIFAR10_MEAN, CIFAR10_STD))
    assert D.get_dataset("cifar10").mean == CIFAR10_MEAN and D.get_dataset("cifar10").std == CIFAR10_STD


# --- the cache -----------------------------------------------------------------------------
@pytest.mark.parametrize("name,writer", [("cifar100", write_cifar100), ("imagenet16-120", write_imagenet16)])
def test_decoded_once_then_from_the_cache(name, writer, tmp_path, monkeypatch):
    data, cache = tmp_path / "data", tmp_path / "cache"
    folder = writer(data)
    first = D.load_dataset(name, data, cache, progress=False)
    assert len(list(cache.glob(f"{name}-*.pt"))) == 1 and not list(cache.glob("cifar10-*.pt"))

    def boom(*_a, **_k):
        raise AssertionError("decoded again")

    with monkeypatch.context() as mp:
        mp.setitem(D.DATASETS, name, dataclasses.replace(D.DATASETS[name], reader=boom))
        again = D.load_dataset(name, data, cache, progress=False)
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.y_test, again.y_test)
    assert again.classes == first.classes and again.source == first.source
    # a changed source (here: a newer modification time) is decoded again, into a new cache file
    target = folder / ("train" if name == "cifar100" else "val_data")
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    D.load_dataset(name, data, cache, progress=False)
    assert len(list(cache.glob(f"{name}-*.pt"))) == 2


def test_corrupt_cache_is_rebuilt(cifar100_dir, tmp_path):
    cache = tmp_path / "cache"
    first = D.load_dataset("cifar100", cifar100_dir, cache, progress=False)
    (path,) = cache.glob("cifar100-*.pt")
    path.write_bytes(b"not a torch file")
    again = D.load_dataset("cifar100", cifar100_dir, cache, progress=False)
    assert torch.equal(first.x_train, again.x_train) and path.is_file()


# --- config, suite, study file -------------------------------------------------------------
def test_dataset_is_validated_and_follows_the_suite():
    with pytest.raises(ConfigError, match=r"--dataset cifar1000: unknown dataset 'cifar1000' \(did you mean"):
        validate_config(RunConfig(dataset="cifar1000", methods=("params",)))
    with pytest.raises(ConfigError, match="suite resnet-probe13 runs on cifar10 only"):
        validate_config(RunConfig(suite="resnet-probe13", dataset="cifar100", methods=("params",)))
    validate_config(RunConfig(dataset="imagenet16-120", methods=("params",)))


def test_nb201_default_gt_follows_the_dataset():
    from harness.suites import get_suite
    suite = get_suite("nb201")
    assert suite.datasets == ("cifar10", "cifar100", "imagenet16-120")
    assert suite.default_gt_for("cifar10") == ("cifar10_test_200ep",) == suite.default_gt
    assert suite.default_gt_for("cifar100") == ("cifar100_test_200ep",)
    assert suite.default_gt_for("imagenet16-120") == ("imagenet16_test_200ep",)
    assert get_suite("resnet-probe13").datasets == ("cifar10",)


SUITE = ('name = "s"\nspace = "nb201"\ndataset = "cifar10"\ngt_provider = "benchmark"\n'
         'default_gt = ["cifar10_test_200ep"]\n')


@pytest.mark.parametrize("table,needle", [
    ('[default_gt_by_dataset]\ncifar1000 = ["x"]\n', "unknown data set 'cifar1000'"),
    ('[default_gt_by_dataset]\ncifar100 = []\n', "cifar100 = []: must be a non-empty list of GT columns"),
    ('default_gt_by_dataset = 3\n', "default_gt_by_dataset = 3: must be a table"),
])
def test_suite_default_gt_by_dataset_is_validated(table, needle, tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SUITE + table)
    with pytest.raises(ConfigError) as e:
        load_suite_toml(path)
    assert needle in str(e.value) and str(path) in str(e.value)


def test_suite_dataset_must_be_known(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SUITE.replace('dataset = "cifar10"', 'dataset = "svhn"'))
    with pytest.raises(ConfigError, match="dataset = 'svhn': unknown data set 'svhn'"):
        load_suite_toml(path)
    path.write_text(SUITE + '[default_gt_by_dataset]\ncifar100 = ["cifar100_test_200ep"]\n')
    suite = load_suite_toml(path)
    assert suite.datasets == ("cifar10", "cifar100") and suite.default_gt_for("cifar100") == ("cifar100_test_200ep",)


def test_study_file_carries_the_dataset(tmp_path):
    cfg = RunConfig(dataset="imagenet16-120", methods=("params",), seeds=(0,))
    (tmp_path / STUDY_FILE).write_text(study_toml(cfg))
    assert tomllib.loads((tmp_path / STUDY_FILE).read_text())["dataset"] == "imagenet16-120"
    assert read_study(tmp_path / STUDY_FILE)["dataset"] == "imagenet16-120"
    # a manifest from before --dataset (no key) is a CIFAR-10 run: it resumes as one, and only as one
    old = {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(RunConfig()))).items() if k != "dataset"}
    old.update(methods=list(RunConfig().methods), seeds=list(RunConfig().seeds), budget_overrides={})
    assert config_differences(old, RunConfig()) == []
    assert config_differences(old, RunConfig(dataset="cifar100")) == ["dataset"]


def test_standalone_gt_follows_the_dataset(tmp_path):
    space, b = Nb201Space(), RunConfig().resolved_budget()
    arch = next(iter(space.enumerate()))
    assert make_key(space, arch, b, 0, 10, "cifar10") == make_key(space, arch, b, 0)  # CIFAR-10 keys unchanged
    assert make_key(space, arch, b, 0).eval_set == "cifar10-test"
    cache = StandaloneCache(space, b, tmp_path, None, say=lambda m: None, dataset="cifar100")
    key = cache.key(arch, 0)
    assert key.eval_set == "cifar100-test-half" and "num_classes=100" in key.net_config
    assert StandaloneCache(space, b, tmp_path, None).num_classes == 10


def test_standalone_gt_trains_on_the_dataset_and_measures_its_test_half(cifar100_dir, tmp_path):
    space = Nb201Space()
    b = RunConfig().resolved_budget().replace(channels=4, resolution=8, standalone_epochs=0.05, batch_size=32,
                                              score_size=64, eval_batch_size=64, threads=1, checkpoint_every=0)
    cache = StandaloneCache(space, b, tmp_path / "cache", str(cifar100_dir), say=lambda m: None, dataset="cifar100")
    data = cache.data()
    assert data.task.num_classes == 100 and data.test_x.shape == (100, 3, 8, 8)
    raw = D.load_dataset("cifar100", cifar100_dir, tmp_path / "cache", progress=False)
    _, test = D.eval_halves(raw.y_test.numpy())
    assert torch.equal(data.test_y, raw.y_test[torch.as_tensor(test)])
    arch = next(iter(space.enumerate()))
    entry = cache.get(arch, 0)
    assert 0 <= entry["accuracy"] <= 100 and entry["key"]["eval_set"] == "cifar100-test-half"
    assert cache.cached(arch, 0) is not None


# --- end to end ------------------------------------------------------------------------------
TINY = ["epochs=0.02", "score_size=64", "batch_size=32", "eval_batch_size=64", "threads=1", "checkpoint_every=0",
        "curve_points=0"]


@pytest.mark.parametrize("name,writer,gt,splits", [
    ("cifar100", write_cifar100, "cifar100_test_200ep", {"train": 400, "valid": 100, "test": 100}),
    ("imagenet16-120", write_imagenet16, "imagenet16_test_200ep", {"train": 240, "valid": 120, "test": 120}),
])
def test_short_study_end_to_end(name, writer, gt, splits, shared_dir, tmp_path, monkeypatch, capsys):
    data, out = tmp_path / "data", tmp_path / "run"
    writer(data)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    argv = ["run", "--suite", "nb201", "--dataset", name, "--methods", "params,random,spos", "--seeds", "0",
            "--budget", "smoke", "--archs", "sample:20", "--data-dir", str(data),
            "--gt-file", str(shared_dir / "nb201" / "nats_tss_accuracy.csv"), "--device", "cpu", "--out", str(out),
            "--no-progress", "--no-report"] + [a for s in TINY for a in ("--set", s)]
    assert main(argv) == 0, capsys.readouterr().err
    man = json.loads((out / "manifest.json").read_text())
    assert man["config"]["dataset"] == name and man["gt_columns"] == [gt]
    assert man["data"]["dataset"] == name and man["data"]["num_classes"] == D.get_dataset(name).num_classes
    assert man["data"]["benchmark_splits"] == splits
    assert man["data"]["images_per_epoch"] == man["data"]["splits"]["train"] == splits["train"] // 2
    spos = man["jobs"]["spos-s0"]
    assert spos["status"] == "done" and spos["counters"]["images_seen"] == 32 * spos["counters"]["steps"] > 0
    assert {r["status"] for r in man["jobs"].values()} == {"done"}
    met = pd.read_csv(out / "metrics.csv")
    assert set(met["gt"]) == {gt} and set(met["method"]) == {"params", "random", "spos"}
    assert read_study(out / STUDY_FILE)["dataset"] == name
    assert list((tmp_path / "cache").glob(f"{name}-*.pt"))
    # the same command resumes its folder; another data set is refused
    assert main(argv) == 0
    other = "cifar10" if name != "cifar10" else "cifar100"
    assert main([a if a != name else other for a in argv]) == 2
    assert "different config (dataset)" in capsys.readouterr().err
