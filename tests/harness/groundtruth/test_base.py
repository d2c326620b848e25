"""Ground-truth table loading and its validation errors."""
from __future__ import annotations

import pandas as pd
import pytest

from harness.core.errors import DataError
from harness.groundtruth.base import CsvGroundTruth, load_ground_truth
from harness.spaces.nb201 import Nb201Space

SPACE = Nb201Space()


@pytest.fixture(scope="module")
def table(shared_dir):
    return pd.read_csv(shared_dir / "nb201" / "nats_tss_accuracy.csv")


def test_loads_and_returns_values(shared_dir, table):
    gt = load_ground_truth(SPACE, shared_dir, None)
    archs = [SPACE.from_index(6111), SPACE.from_index(0)]
    vals = gt.values(archs, "cifar10_test_200ep")
    assert vals[0] == pytest.approx(94.3733, abs=1e-3)
    assert vals[1] == pytest.approx(table["cifar10_test_200ep"][0])
    assert gt.best("cifar10_test_200ep") == pytest.approx(94.3733, abs=1e-3)


def _write(tmp_path, df):
    p = tmp_path / "gt.csv"
    df.to_csv(p, index=False)
    return p


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.drop(columns=["arch"]), "lacks column"),
    (lambda d: d.iloc[:-1], "15624 rows; expected 15625"),
    (lambda d: d.assign(cifar10_test_200ep=d["cifar10_test_200ep"].where(d.index != 7, 140.0)), "row 7"),
    (lambda d: d.assign(cifar10_test_200ep=d["cifar10_test_200ep"].astype(object).where(d.index != 3, "abc")), "row 3"),
    (lambda d: d.assign(arch=d["arch"].where(d.index != 5, d["arch"][4])), "more than once"),
    (lambda d: d.assign(arch=d["arch"].where(d.index != 9, "|bogus~0|+|x|")), "row 9"),
])
def test_validation_errors(tmp_path, table, mutate, match):
    with pytest.raises(DataError, match=match):
        CsvGroundTruth(_write(tmp_path, mutate(table.copy())), SPACE)


def test_missing_file_says_how_to_fix(tmp_path):
    with pytest.raises(DataError, match="--gt-file"):
        load_ground_truth(SPACE, tmp_path, None)


def test_unknown_column_suggests(shared_dir):
    from harness.core.errors import ConfigError

    gt = load_ground_truth(SPACE, shared_dir, None)
    with pytest.raises(ConfigError, match="did you mean 'cifar10_test_200ep'"):
        gt.check_column("cifar10_test_200")
