"""Suites: a search space, its dataset and its ground truth, registered by name."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import unknown_name
from harness.groundtruth import DEFAULT_GT_COLUMN, GroundTruth, load_ground_truth
from harness.spaces.base import SearchSpace


@dataclass(frozen=True)
class Suite:
    name: str
    make_space: Callable[[], SearchSpace]
    load_gt: Callable[[SearchSpace, Path | None, Path | None], GroundTruth]
    default_gt: tuple[str, ...]
    dataset: str = "cifar10"
    description: str = ""


SUITES: dict[str, Suite] = {}


def register_suite(suite: Suite) -> Suite:
    SUITES[suite.name] = suite
    return suite


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise unknown_name("suite", name, SUITES)
    return SUITES[name]


def _nb201_space():
    from harness.spaces.nb201 import Nb201Space

    return Nb201Space()


register_suite(Suite(
    name="nb201", make_space=_nb201_space, load_gt=load_ground_truth, default_gt=(DEFAULT_GT_COLUMN,),
    description="NAS-Bench-201 / NATS-Bench topology space (15,625 cells), CIFAR-10, benchmark ground truth",
))
