"""Ground-truth tables and their noise: a fixed (architecture -> accuracy per seed) table, the
Kendall tau between its seeds (the ceiling any estimator can reach on those architectures), and the
lines that describe it in a run's summary.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from harness import metrics as M
from harness.core.errors import DataError
from harness.core.io import write_csv, write_json
from harness.groundtruth.base import GroundTruth
from harness.spaces.base import Arch, SearchSpace

STANDALONE = "standalone"

_SEED_COL = re.compile(rf"{STANDALONE}_s(\d+)")


def seed_column(seed: int) -> str:
    return f"{STANDALONE}_s{seed}"



# --- tables and their noise -------------------------------------------------------------
def gt_table(results: pd.DataFrame) -> pd.DataFrame:
    """Long (arch, seed, accuracy) -> wide: arch, standalone (mean), standalone_std, standalone_s<seed>."""
    wide = results.pivot_table(index="arch", columns="seed", values="accuracy", sort=False)
    wide.columns = [seed_column(int(s)) for s in wide.columns]
    out = pd.DataFrame({"arch": wide.index})
    out[STANDALONE] = wide.mean(axis=1).to_numpy()
    out[f"{STANDALONE}_std"] = wide.std(axis=1, ddof=1).to_numpy() if wide.shape[1] > 1 else np.nan
    for c in wide.columns:
        out[c] = wide[c].to_numpy()
    if "params" in results:
        out["params"] = results.groupby("arch", sort=False)["params"].first().reindex(wide.index).to_numpy()
    return out


def gt_noise(table: pd.DataFrame) -> dict:
    """The GT's own noise: Kendall tau between every pair of GT seeds (the ceiling any estimator
    can reach on these archs) and the per-architecture std over seeds."""
    cols = [c for c in table.columns if _SEED_COL.fullmatch(c)]
    taus = {f"{a}~{b}": M.kendall_tau(table[a].to_numpy(), table[b].to_numpy())
            for i, a in enumerate(cols) for b in cols[i + 1:]}
    std = table[cols].std(axis=1, ddof=1).to_numpy() if len(cols) > 1 else np.full(len(table), np.nan)
    return {"seeds": [int(c.rsplit("_s", 1)[1]) for c in cols], "n_archs": int(len(table)),
            "seed_pair_tau": taus, "tau_between_seeds_mean": float(np.mean(list(taus.values()))) if taus else None,
            "per_arch_std_mean": float(np.nanmean(std)) if len(cols) > 1 else None,
            "per_arch_std_max": float(np.nanmax(std)) if len(cols) > 1 else None,
            "accuracy_range": [float(table[STANDALONE].min()), float(table[STANDALONE].max())]}


# a GT whose seeds agree less than this (Kendall tau) does not order its architectures reproducibly
LOW_CEILING = 0.3


def low_ceiling_warning(noise: dict) -> str:
    """A plain sentence when the GT's tau between its own seeds is near 0 (else '')."""
    tau = noise.get("tau_between_seeds_mean")
    if not noise.get("seed_pair_tau") or (tau is not None and np.isfinite(tau) and tau >= LOW_CEILING):
        return ""
    return (f"The ceiling is below {LOW_CEILING}: this ground truth does not reproducibly order these "
            f"architectures, so method taus against it mostly measure GT noise; do not rank methods by them.")


def format_noise(noise: dict) -> str:
    if not noise.get("seed_pair_tau"):
        return f"GT noise: one seed only (no ceiling); accuracy range {noise['accuracy_range']}"
    taus = ", ".join(f"{k}: {v:+.3f}" for k, v in noise["seed_pair_tau"].items())
    text = (f"GT noise over {noise['n_archs']} archs: Kendall tau between GT seeds {taus} (ceiling); per-arch std "
            f"mean {noise['per_arch_std_mean']:.2f} / max {noise['per_arch_std_max']:.2f} points; accuracy "
            f"{noise['accuracy_range'][0]:.2f}..{noise['accuracy_range'][1]:.2f}%")
    warning = low_ceiling_warning(noise)
    return f"{text}\n{warning}" if warning else text


class TableGroundTruth(GroundTruth):
    """A standalone GT table over a fixed architecture set; NaN (dropped by the metrics) elsewhere."""

    def __init__(self, table: pd.DataFrame, space: SearchSpace, source: str, meta: dict | None = None):
        self.space, self.source, self.meta = space, source, dict(meta or {})
        self.columns = tuple(c for c in table.columns if c.startswith(STANDALONE) and c != f"{STANDALONE}_std")
        self._row = {space.parse(a): i for i, a in enumerate(table["arch"])}
        self._values = {c: table[c].to_numpy(dtype=float) for c in self.columns}
        self.table = table
        self.noise = gt_noise(table)

    @classmethod
    def from_csv(cls, path: Path, space: SearchSpace) -> "TableGroundTruth":
        path = Path(path)
        if not path.is_file():
            raise DataError(f"standalone GT table {path} not found; build one with `harness gt --suite ...`")
        try:
            table = pd.read_csv(path, comment="#")
        except Exception as exc:  # pandas raises many types for unreadable files
            raise DataError(f"cannot read standalone GT table {path}: {exc}") from None
        if "arch" not in table or STANDALONE not in table:
            raise DataError(f"standalone GT table {path} needs columns arch and {STANDALONE} (written by `harness gt`)")
        meta_path = path.with_suffix(".manifest.json")
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        return cls(table, space, str(path), meta)

    def values(self, archs: Sequence[Arch], column: str) -> np.ndarray:
        self.check_column(column)
        vals = self._values[column]
        return np.array([vals[self._row[tuple(a)]] if tuple(a) in self._row else np.nan for a in archs])

    def best(self, column: str) -> float:
        """Best over the table's architectures (regret is within the probe set)."""
        self.check_column(column)
        return float(np.nanmax(self._values[column]))

    def quality(self, archs: Sequence[Arch]) -> dict:
        return {"gt_noise": self.noise, "gt_source": self.source, "gt_meta": self.meta}


def write_gt_csv(path: Path, table: pd.DataFrame, manifest: dict) -> None:
    write_csv(path, table)
    write_json(Path(path).with_suffix(".manifest.json"), manifest)


def format_quality(q: dict) -> str:
    """Lines for the run summary: the GT's noise ceiling and the standalone proxy's fidelity."""
    lines = []
    if q.get("gt_noise"):
        lines.append(format_noise(q["gt_noise"]))
    fid = q.get("standalone_fidelity")
    if fid:
        for col, v in fid["vs"].items():
            lines.append(f"fidelity of standalone-at-budget vs {col} over {fid['n_archs']} archs: "
                         f"Kendall tau {v['kendall_tau']:+.3f}, Spearman {v['spearman_rho']:+.3f}")
    return "\n".join(lines)
