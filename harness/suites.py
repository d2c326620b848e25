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
    # the suite's shapes for a named budget (probe suites: width/resolution/GT epochs per budget),
    # applied before `--set` overrides
    shape_budget: Callable | None = None
    # load_gt also takes budget=, cache_dir=, device=, say= (standalone GT trained by the harness)
    standalone_gt: bool = False


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


def _probe_suite(name: str, module: str, cls: str, description: str) -> Suite:
    """A probe suite: a fixed list of 13 architectures whose GT the harness trains standalone."""
    import importlib

    def make_space():
        return getattr(importlib.import_module(module), cls)()

    def shape_budget(budget):
        from harness.spaces.resnet_probe import shaped_budget
        from harness.standalone import probe_list_path

        table = getattr(importlib.import_module(module), "BUDGET_SHAPES")
        b = shaped_budget(budget, table)
        # the scored set is the suite's committed list; the note (regenerated) names the suite's shapes
        return b.replace(archs=f"file:{probe_list_path(name, 'txt')}", purpose=f"{name} at {b.name}")

    def load_gt(space, data_dir, gt_file, *, budget=None, cache_dir=None, device="cpu", say=print):
        """With a budget: that budget's GT (built when missing). Without (callers that know no
        budget, e.g. a report): the committed GT, else the first fully cached budget; never trains."""
        from harness.standalone import cached_probe_ground_truth, probe_ground_truth

        if budget is None:
            return cached_probe_ground_truth(name, space, gt_file, cache_dir, shape_budget)
        return probe_ground_truth(name, space, budget, data_dir, gt_file, cache_dir, device, say)

    return Suite(name=name, make_space=make_space, load_gt=load_gt, default_gt=("standalone",),
                 description=description, shape_budget=shape_budget, standalone_gt=True)


register_suite(_probe_suite(
    "resnet-probe13", "harness.spaces.resnet_probe", "ResNetProbeSpace",
    "Pi-NAS ResNet-50-style Split-Attention space (4^16), 13 probe archs, harness-trained standalone GT"))
register_suite(_probe_suite(
    "mobilenet-probe13", "harness.spaces.mobilenet_probe", "MobileNetProbeSpace",
    "SE-NAS/ProxylessNAS MobileNet-like space (7^21), 13 probe archs, harness-trained standalone GT"))
