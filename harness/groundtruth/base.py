"""Ground truth for architectures: the NB201 accuracy table (our CSV) or the official NATS-Bench file.

Both providers answer ``values(archs, column)``; the runner computes every metric against each
requested column and records it in the ``gt`` column of metrics.csv.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core.errors import ArchError, DataError, unknown_name
from harness.spaces.base import Arch, SearchSpace

NB201_COLUMNS = (
    "cifar10_test_200ep", "cifar100_test_200ep", "imagenet16_test_200ep",
    "cifar10_valid_12ep", "cifar10_test_12ep", "cifar100_valid_12ep", "cifar100_test_12ep",
    "imagenet16_valid_12ep", "imagenet16_test_12ep",
)
DEFAULT_GT_COLUMN = "cifar10_test_200ep"
NB201_ROWS = 15625
TABLE_RELPATH = Path("nb201") / "nats_tss_accuracy.csv"


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


class NatsBenchGroundTruth(GroundTruth):
    """The official NATS-Bench tss file, read with the optional ``nats_bench`` package."""

    _DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet16": "ImageNet16-120"}

    def __init__(self, path: Path, space: SearchSpace):
        try:
            from nats_bench import create  # type: ignore
        except ImportError:
            raise DataError("reading a NATS-Bench file needs the optional package: "
                            "pip install 'supernet-harness[natsbench]'") from None
        self.api = create(str(path), "tss", fast_mode=True, verbose=False)
        self.space = space
        self.source = str(path)
        self.columns = NB201_COLUMNS

    def values(self, archs: Sequence[Arch], column: str) -> np.ndarray:  # pragma: no cover - optional dep
        self.check_column(column)
        dataset, split, epochs = column.split("_")
        hp = "200" if epochs == "200ep" else "12"
        name = "cifar10-valid" if (dataset == "cifar10" and split == "valid") else self._DATASETS[dataset]
        key = "valid-accuracy" if split == "valid" else "test-accuracy"
        out = []
        for a in archs:
            info = self.api.get_more_info(self.space.arch_index(a), name, hp=hp, is_random=False)
            out.append(info[key if key in info else "valtest-accuracy"])
        return np.asarray(out, dtype=float)


def load_ground_truth(space: SearchSpace, data_dir: Path | None, gt_file: Path | None) -> GroundTruth:
    """``--gt-file`` wins; a .csv is our table, anything else is tried as a NATS-Bench file."""
    if gt_file is not None:
        gt_file = Path(gt_file)
        if gt_file.suffix == ".csv":
            return CsvGroundTruth(gt_file, space)
        return NatsBenchGroundTruth(gt_file, space)
    if data_dir is None:
        raise DataError("no data dir: pass --data-dir DIR or set HARNESS_DATA_DIR "
                        f"(it must hold {TABLE_RELPATH}; see data/README.md)")
    return CsvGroundTruth(Path(data_dir) / TABLE_RELPATH, space)
