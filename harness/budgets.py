"""Named training/evaluation budgets. Every method in a run gets the identical budget.

A budget fixes the network shape, the number of training-split images consumed by weight updates
(``epochs`` x the train half), the batch size, the score subset and the BN protocol. Methods that
do more compute per image (Pi-NAS's four views, FairNAS's m paths) spend it inside the same image
budget; the runner records their path passes and wall time so cost is visible, not hidden.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from harness.errors import ConfigError, unknown_name
from harness.spaces.base import NetConfig


@dataclass(frozen=True)
class Budget:
    name: str
    channels: int
    cells: int
    resolution: int
    epochs: float
    batch_size: int
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True
    score_size: int = 512  # images of the reserved `score` subset used for final scores
    eval_batch_size: int = 512
    bn_mode: str = "batch"  # "batch": batch statistics; "recal": re-estimate on train batches
    recal_batches: int = 4
    archs: str = "sample:1000"  # default architecture set scored
    threads: int = 2  # torch threads per job (fixed for determinism)
    checkpoint_every: int = 200  # training steps between checkpoints
    standalone_epochs: float = 2.0  # standalone ground truth at this budget's shapes
    note: str = ""

    def net_config(self, num_classes: int = 10, **overrides) -> NetConfig:
        base = NetConfig(channels=self.channels, cells=self.cells, num_classes=num_classes,
                         resolution=self.resolution)
        return dataclasses.replace(base, **overrides)

    def replace(self, **changes) -> "Budget":
        fields = {f.name for f in dataclasses.fields(self)}
        for key in changes:
            if key not in fields:
                raise unknown_name("budget field", key, fields)
        try:
            return dataclasses.replace(self, **changes)
        except TypeError as exc:  # pragma: no cover - dataclasses reports the field
            raise ConfigError(f"bad budget override {changes}: {exc}") from None


BUDGETS: dict[str, Budget] = {
    # CI and `make run`: checks the pipeline in minutes on a 2-core CPU. Far from the papers'
    # settings (see the manifest's `scaled_down` record); ranking claims need `small` or `paper`.
    "smoke": Budget("smoke", channels=8, cells=1, resolution=16, epochs=3, batch_size=128,
                    score_size=512, archs="sample:1000", standalone_epochs=2,
                    note="CPU pipeline check: C=8, N=1, 16px, 3 epochs"),
    # tens of minutes on a CPU: enough for supernet scores to carry some signal at small scale.
    "small": Budget("small", channels=8, cells=1, resolution=16, epochs=10, batch_size=128,
                    score_size=1024, archs="sample:300", standalone_epochs=4,
                    note="CPU study: C=8, N=1, 16px, 10 epochs"),
    # the papers' settings (NB201: C=16, N=5, 32px); GPU.
    "paper": Budget("paper", channels=16, cells=5, resolution=32, epochs=50, batch_size=64,
                    lr=0.05, score_size=2048, eval_batch_size=1024, bn_mode="batch",
                    archs="all", threads=8, checkpoint_every=1000, standalone_epochs=12,
                    note="paper scale: C=16, N=5, 32px, 50 epochs (GPU)"),
}
PAPER_REFERENCE = BUDGETS["paper"]


def get_budget(name: str) -> Budget:
    if name not in BUDGETS:
        raise unknown_name("budget", name, BUDGETS)
    return BUDGETS[name]


def scale_down_record(budget: Budget) -> dict:
    """What this budget changes relative to the paper settings (recorded in every manifest)."""
    out = {}
    for f in ("channels", "cells", "resolution", "epochs", "batch_size", "score_size"):
        mine, ref = getattr(budget, f), getattr(PAPER_REFERENCE, f)
        if mine != ref:
            out[f] = {"budget": mine, "paper": ref}
    return out
