"""Tests for harness.data: CIFAR-10 sources and cache, protocol splits, tensors and batches.

Everything except the ``slow`` test runs on tiny synthetic data built in tmp_path.
"""
from __future__ import annotations

import io
import logging
import os
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.data import (
    CIFAR10_CLASSES,
    BatchStream,
    RawImages,
    Splits,
    augment,
    find_cifar10,
    load_cifar10,
    make_splits,
    to_float,
)
from harness.data import cifar as cifar_mod
from harness.core.errors import DataError
from harness.core.seeding import torch_generator

N_TRAIN, N_TEST = 3, 2
REAL_DATA_DIR = Path(os.environ.get("HARNESS_DATA_DIR", "/work/shared"))


# ------------------------------------------------------------------------------------------------
# synthetic data builders


def _jpeg_bytes(rng: np.random.Generator, size: int = 32) -> bytes:
    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _imagefolder_files(classes=CIFAR10_CLASSES, n_train=N_TRAIN, n_test=N_TEST, seed=0) -> dict[str, bytes]:
    """Relative path -> JPEG bytes for a tiny ImageFolder (one 16x16 image to exercise resizing)."""
    rng = np.random.default_rng(seed)
    files = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for c in classes:
            for i in range(n):
                size = 16 if (split, c, i) == ("train", "cat", 0) else 32
                files[f"{split}/{c}/{i:04d}.jpg"] = _jpeg_bytes(rng, size)
    return files


def _write_dir(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def _write_tar(path: Path, files: dict[str, bytes], shuffle: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(files)
    if shuffle:  # archive order must not matter
        names = [names[i] for i in np.random.default_rng(1).permutation(len(names))]
    with tarfile.open(path, "w:gz") as tf:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            tf.addfile(info, io.BytesIO(files[name]))
    return path


@pytest.fixture
def tar_data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    _write_tar(d / "datasets" / "cifar10-jpeg.tar.gz", _imagefolder_files())
    return d


@pytest.fixture
def dir_data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    _write_dir(d / "datasets" / "cifar10-jpeg", _imagefolder_files())
    return d


def _check_tiny(raw: RawImages) -> None:
    assert raw.classes == CIFAR10_CLASSES
    assert raw.x_train.shape == (10 * N_TRAIN, 3, 32, 32) and raw.x_train.dtype == torch.uint8
    assert raw.x_test.shape == (10 * N_TEST, 3, 32, 32) and raw.x_test.dtype == torch.uint8
    assert raw.y_train.dtype == torch.int64 and raw.y_test.dtype == torch.int64
    # sorted by class then filename: labels are non-decreasing blocks
    assert raw.y_train.tolist() == [c for c in range(10) for _ in range(N_TRAIN)]
    assert raw.y_test.tolist() == [c for c in range(10) for _ in range(N_TEST)]


# ------------------------------------------------------------------------------------------------
# loading


def test_classes_are_standard_order():
    assert CIFAR10_CLASSES == sorted(CIFAR10_CLASSES)
    assert CIFAR10_CLASSES[0] == "airplane" and CIFAR10_CLASSES[-1] == "truck"


def test_load_tar_and_dir_agree(tar_data_dir, dir_data_dir, tmp_path):
    # tar_data_dir and dir_data_dir share tmp_path/data: the tar wins (first in the search order)
    assert find_cifar10(tar_data_dir).name == "cifar10-jpeg.tar.gz"
    raw_tar = load_cifar10(tar_data_dir, tmp_path / "cache", progress=False)
    _check_tiny(raw_tar)
    assert raw_tar.source.startswith("jpeg-tar:")

    (tar_data_dir / "datasets" / "cifar10-jpeg.tar.gz").unlink()
    assert find_cifar10(dir_data_dir).name == "cifar10-jpeg"
    raw_dir = load_cifar10(dir_data_dir, tmp_path / "cache", progress=False)
    _check_tiny(raw_dir)
    assert raw_dir.source.startswith("jpeg-dir:")
    assert torch.equal(raw_tar.x_train, raw_dir.x_train) and torch.equal(raw_tar.x_test, raw_dir.x_test)
    assert torch.equal(raw_tar.y_train, raw_dir.y_train)


def test_pixels_match_pil_decode(tmp_path):
    files = _imagefolder_files()
    data_dir = tmp_path / "data"
    _write_tar(data_dir / "datasets" / "cifar10-jpeg.tar.gz", files)
    raw = load_cifar10(data_dir, tmp_path / "cache", progress=False)
    expected = np.asarray(Image.open(io.BytesIO(files["train/dog/0001.jpg"])).convert("RGB"))
    idx = CIFAR10_CLASSES.index("dog") * N_TRAIN + 1
    assert np.array_equal(raw.x_train[idx].permute(1, 2, 0).numpy(), expected)


def test_tar_with_top_level_folder(tmp_path):
    files = {f"cifar10/{k}": v for k, v in _imagefolder_files().items()}
    files["cifar10/README.txt"] = b"not an image"
    data_dir = tmp_path / "data"
    _write_tar(data_dir / "datasets" / "cifar10-jpeg.tar.gz", files)
    _check_tiny(load_cifar10(data_dir, tmp_path / "cache", progress=False))


def test_cifar_batches_source(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)  # fake files have no real md5
    folder = tmp_path / "data" / "datasets" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    for name in names:
        labels = list(range(10)) * 2
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR10_CLASSES}, f)
    raw = load_cifar10(tmp_path / "data", tmp_path / "cache", progress=False)
    assert raw.source.startswith("cifar-batches:")
    assert raw.x_train.shape == (100, 3, 32, 32) and raw.x_test.shape == (20, 3, 32, 32)
    with open(folder / "data_batch_1", "rb") as f:
        first = pickle.load(f)["data"][0]
    assert np.array_equal(raw.x_train[0].reshape(-1).numpy(), first)  # CHW row-major, like the batches


def test_cache_created_and_reused(tar_data_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    raw = load_cifar10(tar_data_dir, cache, progress=False)
    files = list(cache.glob("cifar10-*.pt"))
    assert len(files) == 1 and not list(cache.glob("*.tmp"))

    def boom(*a, **k):
        raise AssertionError("decoded although a cache exists")

    monkeypatch.setattr(cifar_mod, "_decode_image", boom)
    again = load_cifar10(tar_data_dir, cache, progress=False)
    assert torch.equal(raw.x_train, again.x_train) and again.classes == raw.classes
    assert again.source == raw.source


def test_changed_source_gets_new_cache(tar_data_dir, tmp_path):
    cache = tmp_path / "cache"
    load_cifar10(tar_data_dir, cache, progress=False)
    tar = tar_data_dir / "datasets" / "cifar10-jpeg.tar.gz"
    _write_tar(tar, _imagefolder_files(seed=5))
    st = tar.stat()
    os.utime(tar, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    load_cifar10(tar_data_dir, cache, progress=False)
    assert len(list(cache.glob("cifar10-*.pt"))) == 2


@pytest.mark.parametrize("damage", ["garbage", "wrong_shape", "wrong_dtype"])
def test_corrupt_cache_is_rebuilt(tar_data_dir, tmp_path, caplog, damage):
    cache = tmp_path / "cache"
    raw = load_cifar10(tar_data_dir, cache, progress=False)
    (path,) = cache.glob("cifar10-*.pt")
    if damage == "garbage":
        path.write_bytes(b"not a torch file")
    else:
        d = torch.load(path, weights_only=True)
        if damage == "wrong_shape":
            d["x_train"] = d["x_train"][:, :, :16]
        else:
            d["y_test"] = d["y_test"].to(torch.int32)
        torch.save(d, path)
    with caplog.at_level(logging.WARNING, logger="harness.data.cifar"):
        again = load_cifar10(tar_data_dir, cache, progress=False)
    assert "corrupt" in caplog.text
    assert torch.equal(raw.x_train, again.x_train) and again.y_test.dtype == torch.int64
    # the rebuilt cache is good again
    assert cifar_mod._load_cache(path) is not None


def test_unwritable_cache_dir_still_loads(tar_data_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _check_tiny(load_cifar10(tar_data_dir, blocker / "cache", progress=False))


def test_missing_data_dir_names_paths(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as e:
        load_cifar10(missing, tmp_path / "cache", progress=False)
    msg = str(e.value)
    assert "\n" not in msg
    for name in ("cifar10-jpeg.tar.gz", "cifar10-jpeg", "cifar-10-batches-py"):
        assert str(missing / "datasets" / name) in msg
    assert "HARNESS_DATA_DIR" in msg and "--data-dir" in msg


def test_data_dir_pointing_at_datasets_gives_hint(tar_data_dir):
    with pytest.raises(DataError, match="parent"):
        find_cifar10(tar_data_dir / "datasets")


def test_no_data_dir_and_no_download(tmp_path):
    with pytest.raises(DataError, match="HARNESS_DATA_DIR"):
        load_cifar10(None, tmp_path / "cache", progress=False)


def test_missing_class_is_reported(tmp_path):
    files = {k: v for k, v in _imagefolder_files().items() if not k.startswith("test/frog/")}
    data_dir = tmp_path / "data"
    _write_tar(data_dir / "datasets" / "cifar10-jpeg.tar.gz", files)
    with pytest.raises(DataError, match="test/frog"):
        load_cifar10(data_dir, tmp_path / "cache", progress=False)


def test_missing_split_is_reported(tmp_path):
    files = {k: v for k, v in _imagefolder_files().items() if k.startswith("train/")}
    data_dir = tmp_path / "data"
    _write_dir(data_dir / "datasets" / "cifar10-jpeg", files)
    with pytest.raises(DataError, match="no test images"):
        load_cifar10(data_dir, tmp_path / "cache", progress=False)


def test_unreadable_image_is_named(tmp_path):
    files = _imagefolder_files()
    files["train/ship/0002.jpg"] = b"\xff\xd8 truncated jpeg"
    data_dir = tmp_path / "data"
    _write_tar(data_dir / "datasets" / "cifar10-jpeg.tar.gz", files)
    with pytest.raises(DataError, match="train/ship/0002.jpg"):
        load_cifar10(data_dir, tmp_path / "cache", progress=False)
    assert not list((tmp_path / "cache").glob("cifar10-*.pt"))


def test_truncated_archive_is_reported(tmp_path):
    data_dir = tmp_path / "data"
    tar = _write_tar(data_dir / "datasets" / "cifar10-jpeg.tar.gz", _imagefolder_files())
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    with pytest.raises(DataError, match="cifar10-jpeg.tar.gz"):
        load_cifar10(data_dir, tmp_path / "cache", progress=False)


# ------------------------------------------------------------------------------------------------
# splits


def _labels(per_class: int = 100) -> np.ndarray:
    return np.random.default_rng(3).permutation(np.repeat(np.arange(10), per_class))


def test_splits_partition_and_balance():
    y = _labels()
    s = make_splits(y, score_size=105)
    assert isinstance(s, Splits)
    for a in (s.train, s.valid, s.search, s.score):
        assert a.dtype == np.int64 and np.all(np.diff(a) > 0)  # sorted, no duplicates
    assert len(np.intersect1d(s.train, s.valid)) == 0
    assert np.array_equal(np.union1d(s.train, s.valid), np.arange(len(y)))
    assert np.all(np.bincount(y[s.train], minlength=10) == 50)
    assert np.all(np.bincount(y[s.valid], minlength=10) == 50)
    assert len(s.score) == 105 and np.isin(s.score, s.valid).all()
    counts = np.bincount(y[s.score], minlength=10)
    assert counts.tolist() == [11] * 5 + [10] * 5
    assert np.array_equal(s.search, np.setdiff1d(s.valid, s.score))
    assert len(np.intersect1d(s.search, s.score)) == 0
    assert s.sizes() == {"train": 500, "valid": 500, "search": 395, "score": 105}


def test_splits_deterministic_and_seeded():
    y = _labels()
    a, b = make_splits(y, 50), make_splits(y, 50)
    for k in ("train", "valid", "search", "score"):
        assert np.array_equal(getattr(a, k), getattr(b, k))
    c = make_splits(y, 50, seed=1)
    assert not np.array_equal(a.train, c.train)


def test_score_sets_are_nested():
    y = _labels()
    small, big = make_splits(y, 30), make_splits(y, 200)
    assert np.isin(small.score, big.score).all()
    assert np.array_equal(small.valid, big.valid)


def test_splits_reject_oversized_score():
    with pytest.raises(ValueError, match="score_size"):
        make_splits(_labels(), score_size=501)
    assert len(make_splits(_labels(), score_size=500).search) == 0
    assert len(make_splits(_labels(), score_size=0).score) == 0


# ------------------------------------------------------------------------------------------------
# tensors


def test_to_float_normalises_and_resizes():
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    f32 = to_float(x, 32)
    assert f32.shape == (5, 3, 32, 32) and f32.dtype == torch.float32
    f16 = to_float(x, 16)
    assert f16.shape == (5, 3, 16, 16) and f16.dtype == torch.float32
    gray = torch.full((1, 3, 32, 32), 128, dtype=torch.uint8)
    assert torch.allclose(to_float(gray, 16), to_float(gray, 32)[:, :, :16, :16], atol=1e-5)


def test_augment_shape_determinism_and_effect():
    x = torch.randn(32, 3, 32, 32)
    a = augment(x, torch_generator("t", 0))
    b = augment(x, torch_generator("t", 0))
    c = augment(x, torch_generator("t", 1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, x)
    x16 = torch.randn(8, 3, 16, 16)
    assert augment(x16, torch_generator(2)).shape == x16.shape


def test_augment_matches_per_image_crop_and_flip():
    x = torch.randn(16, 3, 16, 16)
    out = augment(x, torch_generator("ref"))
    g = torch_generator("ref")
    pad = 2
    off = torch.randint(0, 2 * pad + 1, (2, 16), generator=g)
    flip = torch.randint(0, 2, (16,), generator=g).bool()
    xp = torch.nn.functional.pad(x, (pad,) * 4)
    for i in range(16):
        crop = xp[i, :, off[0, i] : off[0, i] + 16, off[1, i] : off[1, i] + 16]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop)


def _stream(augment_on: bool = True, seed: int = 0, n: int = 50) -> BatchStream:
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 8, 8).contiguous()
    y = torch.arange(n)
    return BatchStream(x, y, batch_size=8, seed=seed, augment=augment_on)


def test_batchstream_determinism_and_resume():
    s = _stream()
    assert s.len_epoch == 6 and len(s) == 6
    e0 = list(s.batches(0))
    again = list(_stream().batches(0))
    assert len(e0) == 6
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(e0, again))
    e1 = list(s.batches(1))
    assert not torch.equal(torch.cat([b[1] for b in e0]), torch.cat([b[1] for b in e1]))
    resumed = list(s.batches(0, start=4))
    assert len(resumed) == 2
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(e0[4:], resumed))
    other_seed = list(_stream(seed=1).batches(0))
    assert not torch.equal(e0[0][1], other_seed[0][1])


def test_batchstream_order_independent_of_augment():
    plain, aug = list(_stream(False).batches(3)), list(_stream(True).batches(3))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(plain, aug))
    # without augmentation the image is the labelled item itself
    assert all(torch.equal(xb[:, 0, 0, 0], yb.float()) for xb, yb in plain)


def test_batchstream_drop_last():
    x, y = torch.zeros(50, 3, 8, 8), torch.arange(50)
    s = BatchStream(x, y, 8, seed=0, augment=False, drop_last=False)
    batches = list(s.batches(0))
    assert s.len_epoch == 7 and len(batches[-1][1]) == 2
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == list(range(50))
    with pytest.raises(ValueError):
        BatchStream(x, y, 64, seed=0, augment=False)


# ------------------------------------------------------------------------------------------------
# real data


@pytest.mark.slow
def test_real_cifar10_tar(tmp_path):
    tar = REAL_DATA_DIR / "datasets" / "cifar10-jpeg.tar.gz"
    if not tar.exists():
        pytest.skip(f"{tar} not present")
    t = time.time()
    raw = load_cifar10(REAL_DATA_DIR, tmp_path / "cache", progress=False)
    decode_s = time.time() - t
    assert raw.x_train.shape == (50_000, 3, 32, 32) and raw.x_test.shape == (10_000, 3, 32, 32)
    assert torch.bincount(raw.y_train, minlength=10).tolist() == [5_000] * 10
    assert torch.bincount(raw.y_test, minlength=10).tolist() == [1_000] * 10
    mean = raw.x_train.float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor([0.4914, 0.4822, 0.4465]), atol=0.005)
    t = time.time()
    cached = load_cifar10(REAL_DATA_DIR, tmp_path / "cache", progress=False)
    assert time.time() - t < decode_s and torch.equal(cached.y_train, raw.y_train)
    s = make_splits(raw.y_train.numpy(), score_size=1000)
    assert s.sizes() == {"train": 25_000, "valid": 25_000, "search": 24_000, "score": 1_000}
