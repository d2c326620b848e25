"""Aggregation of a method's own subsets (SE-NAS `survivors`) beside the full set."""
from __future__ import annotations

import numpy as np
import pandas as pd

from harness.spaces.nb201 import Nb201Space
from harness.study.aggregate import job_metrics, summarize, summary_table


class _GT:
    def values(self, archs, column):
        return np.array([float(sum(a)) for a in archs])  # any fixed function of the architecture


def test_survivor_subset_gets_its_own_metrics_and_summary_line():
    space = Nb201Space()
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(30)]
    truth = _GT().values(archs, "acc")
    survivors = archs[:8]
    rows = [{"subset": "scored", "arch": space.format(a), "score": t} for a, t in zip(archs, truth)]
    rows += [{"subset": "survivors", "arch": space.format(a), "score": -t} for a, t in zip(survivors, truth[:8])]
    m = job_metrics(pd.DataFrame(rows), _GT(), space, ["acc"], picked=None)
    tau = {r["subset"]: r["value"] for r in m if r["metric"] == "kendall_tau"}
    assert tau["scored"] > 0.99 and tau["survivors"] < -0.99  # computed on each subset's own archs
    metrics = pd.DataFrame([{"method": "senas", "seed": 0, **r, "status": "done"} for r in m])
    text = summary_table(summarize(metrics), [{"method": "senas", "seed": 0, "status": "done"}], "acc")
    assert "subset survivors: kendall_tau -1.000" in text
