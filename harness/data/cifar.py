"""CIFAR-10 loading: find the source in the data dir, decode once, cache as uint8 tensors.

Sources, looked for in this order under the data dir:

1. ``datasets/cifar10-jpeg.tar.gz``  ImageFolder as a tar.gz (read as a stream, never extracted)
2. ``datasets/cifar10-jpeg/``        the same ImageFolder layout, unpacked (``train/<class>/*.jpg``)
3. ``datasets/cifar-10-batches-py/`` torchvision's pickled batches

The decoded arrays are cached in the cache dir as ``cifar10-<key>.pt``, where the key hashes the
source's resolved path, size and mtime plus a format version, so a changed source is re-decoded.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.core.errors import DataError

log = logging.getLogger(__name__)

CIFAR10_CLASSES: list[str] = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CACHE_FORMAT_VERSION = 1
HOW_TO_PROVIDE = "pass --data-dir DIR or set HARNESS_DATA_DIR; see data/README.md"

TAR_NAME = "cifar10-jpeg.tar.gz"
DIR_NAME = "cifar10-jpeg"
BATCHES_NAME = "cifar-10-batches-py"


@dataclass
class RawImages:
    """A data set as uint8 tensors. ``x_*``: N x 3 x H x W uint8; ``y_*``: N int64 in [0, classes).

    CIFAR-10: 32 x 32, 10 classes, ``x_test`` the official test set; other data sets
    (``harness.data.datasets``): ``x_test`` is their whole evaluation set, halved there."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# --------------------------------------------------------------------------------------------
# finding the source


def cifar10_candidates(data_dir: Path) -> list[Path]:
    """The three places looked at, in priority order."""
    d = Path(data_dir) / "datasets"
    return [d / TAR_NAME, d / DIR_NAME, d / BATCHES_NAME]


def first_source(data_dir: Path, looked: list[Path], slips: tuple[str, ...], label: str, origin: str = "") -> Path:
    """The first of ``looked`` that exists; else one DataError line naming what was looked for,
    with a hint when ``data_dir`` is missing or one of ``slips`` sits directly in it (the common
    slip of pointing --data-dir at the datasets/ folder itself)."""
    for path in looked:
        if path.exists():
            return path
    hint = ""
    if not data_dir.exists():
        hint = f" (data dir {data_dir} does not exist)"
    else:
        for name in slips:
            if (data_dir / name).exists():
                hint = f" (found {data_dir / name}: the data dir is its parent's parent, {data_dir.parent})"
                break
    where = f"{origin}; " if origin else ""
    raise DataError(f"{label} not found{hint}: looked for {', '.join(str(p) for p in looked)}; {where}{HOW_TO_PROVIDE}")


def find_cifar10(data_dir: Path) -> Path:
    """The first CIFAR-10 source that exists under ``data_dir`` (see the module docstring)."""
    data_dir = Path(data_dir).expanduser()
    return first_source(data_dir, cifar10_candidates(data_dir), (TAR_NAME, DIR_NAME, BATCHES_NAME), "CIFAR-10")


def _source_kind(path: Path) -> str:
    if path.name.endswith(".tar.gz") or path.name.endswith(".tgz") or path.name.endswith(".tar"):
        return "jpeg-tar"
    if path.name == BATCHES_NAME:
        return "cifar-batches"
    return "jpeg-dir"


# --------------------------------------------------------------------------------------------
# cache


def _stat_parts(path: Path) -> list[str]:
    """Size and mtime of a source; for a directory also of its entries and their subfolders
    (train/, test/, class folders; batch files), so adding or removing images changes the key."""
    parts = []
    paths = [path]
    if path.is_dir():
        for sub in sorted(path.iterdir()):
            paths.append(sub)
            if sub.is_dir():
                paths.extend(s for s in sorted(sub.iterdir()) if s.is_dir())
    for p in paths:
        st = p.stat()
        parts.append(f"{p.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}")
    return parts


def cache_key(source: Path) -> str:
    """Hash of the source's resolved path, size and mtime, and the cache format version."""
    source = Path(source).resolve()
    text = "|".join([f"v{CACHE_FORMAT_VERSION}", str(source), *_stat_parts(source)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_path(source: Path, cache_dir: Path) -> Path:
    return Path(cache_dir).expanduser() / f"cifar10-{cache_key(source)}.pt"


def _save_cache(raw: RawImages, path: Path, what: str = "CIFAR-10") -> None:
    payload = {
        "version": CACHE_FORMAT_VERSION,
        "x_train": raw.x_train.contiguous(),
        "y_train": raw.y_train.contiguous(),
        "x_test": raw.x_test.contiguous(),
        "y_test": raw.y_test.contiguous(),
        "classes": list(raw.classes),
        "source": raw.source,
    }
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # a unique name.<random>.tmp so that concurrent jobs never write into the same temp file
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache may be shared by several users' jobs
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        log.warning("could not write %s cache %s (%s); continuing without it", what, path, e)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _load_cache(path: Path, check=None, what: str = "CIFAR-10") -> RawImages | None:
    """The cached images, or None (after deleting the file) when the cache is unusable.
    ``check(raw)`` describes what is wrong (default: the CIFAR-10 check)."""
    try:
        d = torch.load(path, weights_only=True)
        if not isinstance(d, dict) or d.get("version") != CACHE_FORMAT_VERSION:
            raise ValueError("wrong format version")
        raw = RawImages(
            x_train=d["x_train"], y_train=d["y_train"], x_test=d["x_test"], y_test=d["y_test"],
            classes=list(d["classes"]), source=str(d["source"]),
        )
        problem = (check or _check)(raw)
        if problem:
            raise ValueError(problem)
        return raw
    except Exception as e:  # noqa: BLE001 -- any failure means "rebuild"
        log.warning("%s cache %s is corrupt (%s: %s); deleting and rebuilding it", what, path, type(e).__name__, e)
        try:
            path.unlink()
        except OSError:
            pass
        return None


# --------------------------------------------------------------------------------------------
# validation


def _check(raw: RawImages) -> str | None:
    """A description of what is wrong with ``raw``, or None when it is well-formed."""
    if raw.classes != CIFAR10_CLASSES:
        return f"classes are {raw.classes}, expected {CIFAR10_CLASSES}"
    for split in SPLITS:
        x, y = getattr(raw, f"x_{split}"), getattr(raw, f"y_{split}")
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            return f"{split} arrays are not tensors"
        if x.dtype != torch.uint8 or x.dim() != 4 or tuple(x.shape[1:]) != (3, 32, 32):
            return f"x_{split} has dtype {x.dtype} and shape {tuple(x.shape)}, expected uint8 N x 3 x 32 x 32"
        if y.dtype != torch.int64 or y.dim() != 1 or y.shape[0] != x.shape[0]:
            return f"y_{split} has dtype {y.dtype} and shape {tuple(y.shape)}, expected int64 of length {x.shape[0]}"
        if y.numel() == 0:
            return f"the {split} split is empty"
        if int(y.min()) < 0 or int(y.max()) >= len(raw.classes):
            return f"y_{split} has labels outside [0, {len(raw.classes)})"
        counts = torch.bincount(y, minlength=len(raw.classes))
        missing = [c for c, n in zip(raw.classes, counts.tolist()) if n == 0]
        if missing:
            return f"the {split} split has no images of class {', '.join(missing)}"
    return None


def _check_classes(found: dict[str, set[str]], where: str) -> None:
    for split in SPLITS:
        if not found.get(split):
            raise DataError(
                f"no {split} images in {where}: expected ImageFolder files {split}/<class>/<name>.jpg; {HOW_TO_PROVIDE}"
            )
    for split in SPLITS:
        have = found[split]
        missing = [c for c in CIFAR10_CLASSES if c not in have]
        extra = sorted(have - set(CIFAR10_CLASSES))
        if missing or extra:
            what = []
            if missing:
                what.append(f"missing class folder(s) {', '.join(f'{split}/{c}' for c in missing)}")
            if extra:
                what.append(f"unexpected class folder(s) {', '.join(f'{split}/{c}' for c in extra)}")
            raise DataError(
                f"{where} is not CIFAR-10: {'; '.join(what)} (expected the 10 classes {', '.join(CIFAR10_CLASSES)})"
            )


# --------------------------------------------------------------------------------------------
# decoding


def _decode_image(data: bytes, name: str) -> np.ndarray:
    """One encoded image -> 32 x 32 x 3 uint8 RGB. Raises DataError naming ``name`` if unreadable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            if im.size != (32, 32):
                im = im.resize((32, 32), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as e:  # noqa: BLE001 -- PIL raises many types for bad data
        raise DataError(f"cannot decode image {name}: {type(e).__name__}: {e}; replace the file or re-export the data set") from e
    return arr


def _parse_member(name: str) -> tuple[str, str, str] | None:
    """``[prefix/]split/class/file.jpg`` -> (split, class, file); None for anything else."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if len(parts) not in (3, 4):
        return None
    split, cls, fname = parts[-3:]
    if split not in SPLITS or fname.startswith(".") or not fname.lower().endswith(IMAGE_SUFFIXES):
        return None
    return split, cls, fname


def _decode_sorted(
    items: dict[tuple[str, str, str], bytes], where: str, progress: bool
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Decode ImageFolder items keyed (split, class, file), in class-then-filename order."""
    from tqdm.auto import tqdm

    found: dict[str, set[str]] = {s: set() for s in SPLITS}
    for split, cls, _ in items:
        found[split].add(cls)
    _check_classes(found, where)
    class_index = {c: i for i, c in enumerate(CIFAR10_CLASSES)}  # == sorted class names
    out = {}
    with tqdm(total=len(items), desc="decoding CIFAR-10", unit="img", disable=not progress) as bar:
        for split in SPLITS:
            keys = sorted((k for k in items if k[0] == split), key=lambda k: (class_index[k[1]], k[2]))
            x = np.empty((len(keys), 32, 32, 3), dtype=np.uint8)
            y = np.empty(len(keys), dtype=np.int64)
            for i, key in enumerate(keys):
                x[i] = _decode_image(items[key], f"{where}:{'/'.join(key)}")
                y[i] = class_index[key[1]]
                bar.update(1)
            out[split] = (torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y))
    return out


def _read_tar(path: Path) -> dict[tuple[str, str, str], bytes]:
    items: dict[tuple[str, str, str], bytes] = {}
    try:
        with tarfile.open(path, mode="r|*") as tf:  # stream: one sequential pass, nothing extracted
            for member in tf:
                if not member.isfile():
                    continue
                key = _parse_member(member.name)
                if key is None:
                    continue
                f = tf.extractfile(member)
                if f is None:
                    continue
                items[key] = f.read()
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        raise DataError(f"cannot read archive {path}: {type(e).__name__}: {e}; replace it with a complete copy") from e
    return items


def _read_dir(path: Path) -> dict[tuple[str, str, str], bytes]:
    items: dict[tuple[str, str, str], bytes] = {}
    for split in SPLITS:
        split_dir = path / split
        if not split_dir.is_dir():
            continue
        for cls_dir in sorted(split_dir.iterdir()):
            if not cls_dir.is_dir() or cls_dir.name.startswith("."):
                continue
            for f in sorted(cls_dir.iterdir()):
                key = _parse_member(f"{split}/{cls_dir.name}/{f.name}")
                if key is None or not f.is_file():
                    continue
                try:
                    items[key] = f.read_bytes()
                except OSError as e:
                    raise DataError(f"cannot read image file {f}: {e}") from e
    return items


def _load_batches(path: Path, progress: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """torchvision's ``cifar-10-batches-py`` (``path`` is that folder)."""
    import torchvision

    out = {}
    for split in SPLITS:
        try:
            ds = torchvision.datasets.CIFAR10(str(path.parent), train=(split == "train"), download=False)
        except Exception as e:  # noqa: BLE001 -- RuntimeError("Dataset not found or corrupted."), pickle errors
            raise DataError(
                f"cannot read CIFAR-10 batches in {path}: {e}; replace the folder with torchvision's "
                f"cifar-10-batches-py (or use another source; see data/README.md)"
            ) from e
        if list(ds.classes) != CIFAR10_CLASSES:
            raise DataError(f"{path} has classes {ds.classes}, expected {CIFAR10_CLASSES}")
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
        out[split] = (x, y)
    return out


def _download(root: Path) -> Path:
    import torchvision

    root.mkdir(parents=True, exist_ok=True)
    try:
        for train in (True, False):
            torchvision.datasets.CIFAR10(str(root), train=train, download=True)
    except Exception as e:  # noqa: BLE001 -- network errors of all kinds
        raise DataError(
            f"downloading CIFAR-10 into {root} failed ({type(e).__name__}: {e}); {HOW_TO_PROVIDE}"
        ) from e
    return root / BATCHES_NAME


def _decode_source(source: Path, progress: bool) -> RawImages:
    kind = _source_kind(source)
    if kind == "jpeg-tar":
        splits = _decode_sorted(_read_tar(source), str(source), progress)
    elif kind == "jpeg-dir":
        if not source.is_dir():
            raise DataError(f"{source} is not a directory; expected an ImageFolder with train/ and test/")
        splits = _decode_sorted(_read_dir(source), str(source), progress)
    else:
        splits = _load_batches(source, progress)
    raw = RawImages(
        x_train=splits["train"][0], y_train=splits["train"][1],
        x_test=splits["test"][0], y_test=splits["test"][1],
        classes=list(CIFAR10_CLASSES), source=f"{kind}:{source}",
    )
    problem = _check(raw)
    if problem:
        raise DataError(f"{source} is not usable CIFAR-10: {problem}")
    return raw


def load_cifar10(
    data_dir: Path | None, cache_dir: Path, download: bool = False, progress: bool = True
) -> RawImages:
    """CIFAR-10 train and test images from ``data_dir`` (decoded once, then from ``cache_dir``).

    With ``data_dir=None`` and ``download=True`` torchvision downloads the binary batches into
    ``cache_dir/torchvision``; with ``data_dir=None`` and no download this raises ``DataError``.
    """
    cache_dir = Path(cache_dir).expanduser()
    if data_dir is None:
        if not download:
            raise DataError(f"no data dir given for CIFAR-10; {HOW_TO_PROVIDE}")
        source = cache_dir / "torchvision" / BATCHES_NAME
        if not source.exists():
            source = _download(cache_dir / "torchvision")
    else:
        source = find_cifar10(Path(data_dir))
    source = source.resolve()

    try:
        cpath = cache_path(source, cache_dir)
    except OSError as e:
        raise DataError(f"cannot read CIFAR-10 source {source}: {e}") from e
    if cpath.exists():
        raw = _load_cache(cpath)
        if raw is not None:
            log.debug("CIFAR-10 loaded from cache %s", cpath)
            return raw
    log.info("decoding CIFAR-10 from %s (once; cached in %s)", source, cpath)
    raw = _decode_source(source, progress)
    _save_cache(raw, cpath)
    return raw


def class_counts(y: torch.Tensor | np.ndarray, num_classes: int = 10) -> list[int]:
    """Images per class (for checks and reports)."""
    y = torch.as_tensor(y)
    return torch.bincount(y, minlength=num_classes).tolist()


__all__ = [
    "CIFAR10_CLASSES", "RawImages", "cache_key", "cache_path", "class_counts", "cifar10_candidates",
    "find_cifar10", "first_source", "load_cifar10",
]
