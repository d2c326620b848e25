"""Ground truth for architectures: the NB201 accuracy table (our CSV) or the official NATS-Bench file.

Both providers answer ``values(archs, column)``; the runner computes every metric against each
requested column and records it in the ``gt`` column of metrics.csv.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core.errors import ArchError, DataError, unknown_name
from harness.core.io import read_json, write_json
from harness.spaces.base import Arch, SearchSpace

NB201_COLUMNS = (
    "cifar10_test_200ep", "cifar100_test_200ep", "imagenet16_test_200ep",
    "cifar10_valid_12ep", "cifar10_test_12ep", "cifar100_valid_12ep", "cifar100_test_12ep",
    "imagenet16_valid_12ep", "imagenet16_test_12ep",
)
DEFAULT_GT_COLUMN = "cifar10_test_200ep"
NB201_ROWS = 15625
TABLE_RELPATH = Path("nb201") / "nats_tss_accuracy.csv"

# Every column the NATS-Bench file answers: (dataset as the API names it, hp, key of the dict
# ``api.get_more_info(arch_str, dataset, hp=hp, is_random=False)`` returns, i.e. the mean over the
# benchmark's training seeds). The first nine are our CSV's columns (the same figures); the rest
# exist only in the file. ``cifar10`` is trained on CIFAR-10 train+valid and tested on its test set;
# ``cifar10-valid`` is trained on one half of CIFAR-10 train, validated on the other half
# (``valid-accuracy``) and also tested on the CIFAR-10 test set (``test-accuracy``).
NATS_COLUMNS: dict[str, tuple[str, str, str]] = {
    "cifar10_test_200ep": ("cifar10", "200", "test-accuracy"),
    "cifar100_test_200ep": ("cifar100", "200", "test-accuracy"),
    "imagenet16_test_200ep": ("ImageNet16-120", "200", "test-accuracy"),
    "cifar10_valid_12ep": ("cifar10-valid", "12", "valid-accuracy"),
    "cifar10_test_12ep": ("cifar10", "12", "test-accuracy"),
    "cifar100_valid_12ep": ("cifar100", "12", "valid-accuracy"),
    "cifar100_test_12ep": ("cifar100", "12", "test-accuracy"),
    "imagenet16_valid_12ep": ("ImageNet16-120", "12", "valid-accuracy"),
    "imagenet16_test_12ep": ("ImageNet16-120", "12", "test-accuracy"),
    # only in the NATS-Bench file
    "cifar10-valid_test_200ep": ("cifar10-valid", "200", "test-accuracy"),
    "cifar10_valid_200ep": ("cifar10-valid", "200", "valid-accuracy"),
    "cifar100_valid_200ep": ("cifar100", "200", "valid-accuracy"),
    "imagenet16_valid_200ep": ("ImageNet16-120", "200", "valid-accuracy"),
    "cifar10-valid_test_12ep": ("cifar10-valid", "12", "test-accuracy"),
}
NATS_ONLY_COLUMNS = tuple(c for c in NATS_COLUMNS if c not in NB201_COLUMNS)
NATS_SIMPLE_DIR = "NATS-tss-v1_0-3ffb9-simple"
NATS_ARCHIVE = "NATS-tss-v1_0-3ffb9.pickle.pbz2"
NATS_FORMS = (f"the folder {NATS_SIMPLE_DIR}/ (meta.pickle.pbz2 and one NNNNNN.pickle.pbz2 per architecture; "
              f"read with fast_mode=True) or the single archive {NATS_ARCHIVE} (fast_mode=False)")
_NATS_EXT = ".pickle.pbz2"
_NATS_ARCH_FILE = re.compile(r"(\d+)\.pickle\.pbz2")
_NATS_CACHE_VERSION = 1


class GroundTruth(ABC):
    columns: tuple[str, ...]
    source: str

    @abstractmethod
    def values(self, archs: Sequence[Arch], column: str) -> np.ndarray: ...

    def check_column(self, column: str) -> None:
        if column not in self.columns:
            raise unknown_name("ground-truth column", column, self.columns)

    def best(self, column: str) -> float:
        """The optimum of the column over the whole space (for regret)."""
        raise NotImplementedError

    def optimum_unavailable(self, column: str) -> str | None:
        """Why the space optimum of ``column`` is unknown (then regret is NaN), or None where it is known."""
        return None


class CsvGroundTruth(GroundTruth):
    """The table described in the data README (``index, arch, isomorphism_key, <accuracy columns>``)."""

    def __init__(self, path: Path, space: SearchSpace, expected_rows: int | None = NB201_ROWS):
        path = Path(path)
        if not path.is_file():
            raise DataError(
                f"ground-truth table not found at {path}; pass --gt-file PATH or --data-dir DIR "
                f"holding {TABLE_RELPATH} (see data/README.md)")
        try:
            df = pd.read_csv(path)
        except Exception as exc:  # pandas raises many types for unreadable files
            raise DataError(f"cannot read ground-truth table {path}: {exc}") from None
        self.source = str(path)
        missing = [c for c in ("arch",) if c not in df.columns]
        acc_cols = tuple(c for c in df.columns if c not in ("index", "arch", "isomorphism_key"))
        if missing:
            raise DataError(f"ground-truth table {path} lacks column(s) {', '.join(missing)}; "
                            f"expected index, arch and accuracy columns such as {DEFAULT_GT_COLUMN}")
        if not acc_cols:
            raise DataError(f"ground-truth table {path} has no accuracy columns (e.g. {DEFAULT_GT_COLUMN})")
        if expected_rows is not None and len(df) != expected_rows:
            raise DataError(f"ground-truth table {path} has {len(df)} rows; expected {expected_rows} "
                            f"(one per {space.name} architecture)")
        dup = df["arch"][df["arch"].duplicated()]
        if len(dup):
            raise DataError(f"ground-truth table {path} lists architecture '{dup.iloc[0]}' more than once")
        for col in acc_cols:
            vals = pd.to_numeric(df[col], errors="coerce")
            bad = vals.isna() | (vals < 0) | (vals > 100)
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(f"ground-truth table {path}: column {col} row {row} holds "
                                f"'{df[col].iloc[row]}'; accuracies must be numbers in [0, 100]")
            df[col] = vals.astype(float)
        archs = []
        for i, text in enumerate(df["arch"]):
            try:
                archs.append(space.parse(text))
            except ArchError as exc:
                raise DataError(f"ground-truth table {path} row {i}: {exc}") from None
        self.columns = acc_cols
        self._row = {a: i for i, a in enumerate(archs)}
        self._values = {c: df[c].to_numpy(dtype=float) for c in acc_cols}

    def values(self, archs: Sequence[Arch], column: str) -> np.ndarray:
        self.check_column(column)
        try:
            rows = [self._row[tuple(a)] for a in archs]
        except KeyError as exc:
            raise ArchError(f"architecture {exc.args[0]} is not in the ground-truth table {self.source}") from None
        return self._values[column][rows]

    def best(self, column: str) -> float:
        self.check_column(column)
        return float(np.nanmax(self._values[column]))


def nats_fast_mode(path: Path) -> bool:
    """The ``fast_mode`` the NATS-Bench API needs for ``path``: True for the ``-simple`` folder,
    False for the single archive; anything else is one DataError line naming both forms."""
    path = Path(path)
    if path.is_dir():
        if (path / f"meta{_NATS_EXT}").is_file():
            return True
        why = f"is a folder without meta{_NATS_EXT}"
    elif path.is_file():
        if path.name == f"meta{_NATS_EXT}" or _NATS_ARCH_FILE.fullmatch(path.name):
            why = "is a file inside a -simple folder (pass the folder itself)"
        elif path.name.endswith(_NATS_EXT):
            return False
        else:
            why = f"is neither our .csv table nor a NATS-Bench {_NATS_EXT} file"
    else:
        why = "does not exist"
    raise DataError(f"--gt-file {path} {why}; a NATS-Bench topology benchmark is {NATS_FORMS}")


class NatsBenchGroundTruth(GroundTruth):
    """The official NATS-Bench topology (tss) file, read with the optional ``nats_bench`` package.

    Both forms the API reads: the ``NATS-tss-v1_0-3ffb9-simple`` folder (``fast_mode=True``: one
    file per architecture, read when first asked) and the single ``NATS-tss-v1_0-3ffb9.pickle.pbz2``
    archive (``fast_mode=False``: read whole at start). Each architecture is asked for by its
    string; the index the API gives it and the architecture string of the results it returns are
    checked against ours. A file may hold only part of the space (the upstream test data holds
    three architectures): those it holds are answered, one it lacks is an ArchError naming it, and
    the space optimum (regret) is NaN. A value the file lacks is a DataError naming architecture,
    dataset, hp and key; no other key is substituted.
    """

    def __init__(self, path: Path, space: SearchSpace, cache_dir: Path | None = None,
                 say: Callable[[str], None] | None = None):
        path = Path(path)
        fast_mode = nats_fast_mode(path)
        try:
            from nats_bench import create  # type: ignore
        except ImportError:
            raise DataError("reading a NATS-Bench file needs the optional package: pip install nats_bench "
                            "(or pip install 'supernet-harness[natsbench]')") from None
        try:
            api = create(str(path), "tss", fast_mode=fast_mode, verbose=False)
        except Exception as exc:  # nats_bench raises ValueError, AssertionError, OSError, pickle errors...
            raise DataError(f"cannot read NATS-Bench file {path} (fast_mode={fast_mode}): "
                            f"{type(exc).__name__}: {' '.join(str(exc).split())}") from None
        self.api, self.space, self.path, self.fast_mode = api, space, path, fast_mode
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.say = say or (lambda message: None)
        ours = [space.format(a) for a in space.enumerate()]
        if len(api.meta_archs) != len(ours):
            raise DataError(f"NATS-Bench file {path} lists {len(api.meta_archs)} architectures; the {space.name} "
                            f"topology space has {len(ours)} (is it a size-space NATS-sss file?)")
        for i, (theirs, mine) in enumerate(zip(api.meta_archs, ours)):
            if theirs != mine:
                raise DataError(f"NATS-Bench file {path}: index {i} is {theirs} there and {mine} in the harness's "
                                f"{space.name} order; the index orders differ")
        if fast_mode:
            present = {int(m.group(1)) for name in os.listdir(path) if (m := _NATS_ARCH_FILE.fullmatch(name))}
        else:
            present = set(api.arch2infos_dict)
        self.present = frozenset(i for i in present if 0 <= i < len(ours))
        self.size = len(ours)
        self.complete = len(self.present) == self.size
        form = "folder, fast_mode=True" if fast_mode else "single archive, fast_mode=False"
        cover = (f"all {self.size:,} architectures" if self.complete else
                 f"{len(self.present):,} of {self.size:,} architectures: a partial benchmark, so the space optimum "
                 f"is unknown and regret is NaN")
        self.source = f"NATS-Bench file {path} ({form}; {cover})"
        self.columns = tuple(NATS_COLUMNS)
        self._values: dict[int, dict[str, float | str]] = {}
        self._optimum: dict[str, float | str] | None = None

    # --- one architecture ---------------------------------------------------------------
    def _missing(self, arch: Arch, n_missing: int = 1, n_asked: int = 1) -> ArchError:
        more = f" ({n_missing} of the {n_asked} architectures asked for are missing)" if n_missing > 1 else ""
        return ArchError(f"architecture {self.space.format(arch)} (NATS-Bench index {self.space.arch_index(arch)}) "
                         f"is not in the NATS-Bench file {self.path}, which holds {len(self.present):,} of "
                         f"{self.size:,} architectures{more}; score only architectures it holds (--archs file:PATH) "
                         f"or use the complete benchmark")

    def _info(self, text: str, index: int, dataset: str, hp: str) -> dict | str:
        """``get_more_info`` for one (dataset, hp), asked by architecture string; a str says what is missing."""
        try:
            info = self.api.get_more_info(text, dataset, hp=hp, is_random=False)
        except Exception as exc:  # nats_bench: KeyError for a missing hp or dataset, AssertionError for a missing file
            loaded = self.api.arch2infos_dict.get(index)
            if loaded is None:
                raise DataError(f"cannot read architecture {text} (index {index}) from NATS-Bench file {self.path}: "
                                f"{type(exc).__name__}: {exc}") from None
            if hp not in loaded:
                return f"no results at hp={hp} (it has hp {', '.join(map(str, loaded))})"
            if dataset not in loaded[hp].get_dataset_names():
                return f"no results (it has {', '.join(loaded[hp].get_dataset_names())} at hp={hp})"
            return f"no results ({type(exc).__name__}: {exc})"
        got = self.api.arch2infos_dict[index][hp].arch_str
        if got != text:
            raise DataError(f"NATS-Bench file {self.path}: asked for {text} (index {index}), it returned the results "
                            f"of {got}")
        return info

    def _arch_values(self, arch: Arch) -> dict[str, float | str]:
        """Every column of one architecture (a float, or the one-line reason it is missing)."""
        index = self.space.arch_index(arch)
        if index in self._values:
            return self._values[index]
        if index not in self.present:
            raise self._missing(arch)
        text = self.space.format(arch)
        asked = self.api.query_index_by_arch(text)
        if asked != index:
            raise DataError(f"NATS-Bench file {self.path}: architecture {text} is index {asked} there and {index} in "
                            f"the harness's {self.space.name} order")
        infos: dict[tuple[str, str], dict | str] = {}
        out: dict[str, float | str] = {}
        for column, (dataset, hp, key) in NATS_COLUMNS.items():
            if (dataset, hp) not in infos:
                infos[dataset, hp] = self._info(text, index, dataset, hp)
            info = infos[dataset, hp]
            where = f"NATS-Bench file {self.path}: architecture {text} (index {index}), dataset {dataset}, hp={hp}"
            if isinstance(info, str):
                out[column] = f"{where}: {info}; column {column} needs its '{key}'"
            elif info.get(key) is None:
                out[column] = (f"{where} has no '{key}' (get_more_info gave {', '.join(sorted(info))}); column "
                               f"{column} needs it and no other key is substituted")
            else:
                out[column] = float(info[key])
        if self.fast_mode:  # the values are kept here; drop the API's copy (a few hundred kB per architecture)
            self.api.arch2infos_dict.pop(index, None)
            self.api.evaluated_indexes.discard(index)
        self._values[index] = out
        return out

    # --- the GroundTruth API ------------------------------------------------------------
    def values(self, archs: Sequence[Arch], column: str) -> np.ndarray:
        self.check_column(column)
        out = []
        for a in archs:
            v = self._arch_values(a)[column]
            if isinstance(v, str):
                raise DataError(v)
            out.append(v)
        return np.asarray(out, dtype=float)

    def prepare(self, archs: Sequence[Arch]) -> None:
        """Before any job: every scored architecture must be in the file (else one line naming the first)."""
        missing = [a for a in archs if self.space.arch_index(a) not in self.present]
        if missing:
            raise self._missing(missing[0], len(missing), len(archs))
        for a in archs:
            self._arch_values(a)

    def optimum_unavailable(self, column: str) -> str | None:
        if self.complete:
            return None
        return (f"{self.source}: the optimum of {column} over the {self.space.name} space is unknown, "
                f"so regret is NaN")

    def best(self, column: str) -> float:
        """The optimum over the whole space; NaN for a partial benchmark. A complete ``-simple``
        folder is read whole once for it (cached in the cache dir, keyed by the file)."""
        self.check_column(column)
        if not self.complete:
            return math.nan
        if self._optimum is None:
            self._optimum = self._space_optimum()
        v = self._optimum[column]
        if isinstance(v, str):
            raise DataError(v)
        return float(v)

    def _cache_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        st = self.path.stat()
        ident = {"path": str(self.path.resolve()), "fast_mode": self.fast_mode, "size": st.st_size,
                 "mtime_ns": st.st_mtime_ns, "n": len(self.present), "version": _NATS_CACHE_VERSION,
                 "columns": NATS_COLUMNS}
        if self.fast_mode:
            meta = (self.path / f"meta{_NATS_EXT}").stat()
            ident["meta"] = [meta.st_size, meta.st_mtime_ns]
        key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
        return self.cache_dir / "natsbench" / f"optimum-{key}.json"

    def _space_optimum(self) -> dict[str, float | str]:
        cache = self._cache_path()
        if cache is not None and cache.is_file():
            try:
                return read_json(cache)["optimum"]
            except (ValueError, KeyError, OSError):
                pass  # unreadable: compute it again
        where = f"; cached in {cache}" if cache is not None else ""
        self.say(f"ground truth: reading all {self.size:,} architectures of {self.path} once for the space "
                 f"optimum (regret){where}")
        best: dict[str, float | str] = {}
        for arch in self.space.enumerate():
            for column, v in self._arch_values(arch).items():
                old = best.get(column, -math.inf)
                if not isinstance(old, str):  # a missing value stays the column's answer (its error)
                    best[column] = v if isinstance(v, str) else max(old, v)
        if cache is not None:
            write_json(cache, {"source": self.source, "optimum": best})
        return best


def load_ground_truth(space: SearchSpace, data_dir: Path | None, gt_file: Path | None,
                      cache_dir: Path | None = None, say: Callable[[str], None] | None = None) -> GroundTruth:
    """``--gt-file`` wins; a .csv is our table, anything else must be one of the NATS-Bench file's two
    forms (``NATS_FORMS``). ``cache_dir`` keeps a complete NATS-Bench folder's space optimum."""
    if gt_file is not None:
        gt_file = Path(gt_file)
        if gt_file.suffix == ".csv":
            return CsvGroundTruth(gt_file, space)
        return NatsBenchGroundTruth(gt_file, space, cache_dir=cache_dir, say=say)
    if data_dir is None:
        raise DataError("no data dir: pass --data-dir DIR or set HARNESS_DATA_DIR "
                        f"(it must hold {TABLE_RELPATH}; see data/README.md)")
    return CsvGroundTruth(Path(data_dir) / TABLE_RELPATH, space)
