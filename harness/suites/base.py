"""A suite: a search space, its dataset, its ground truth and its per-budget shapes, registered by name.

Built-in suites are the modules of this package; a third-party suite registers through the
``supernet_harness.suites`` entry-point group (a ``Suite`` object, or a module that calls
``register_suite``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.budgets import Budget, get_budget
from harness.core.registry import Registry
from harness.groundtruth.base import GroundTruth
from harness.groundtruth.standalone import (NB201_STANDALONE_SEEDS, CompositeGroundTruth, StandaloneCache,
                                            StandaloneGroundTruth)
from harness.groundtruth.table import STANDALONE
from harness.spaces.base import SearchSpace

# load_gt(space, *, data_dir, gt_file, budget, cache_dir, device, say) -> GroundTruth. ``budget`` is
# None where the caller knows none (a report): then the provider must not train anything.
GtLoader = Callable[..., GroundTruth]


@dataclass(frozen=True)
class Suite:
    name: str
    make_space: Callable[[], SearchSpace]
    load_gt: GtLoader
    default_gt: tuple[str, ...]
    dataset: str = "cifar10"
    description: str = ""
    # the suite's shapes for a named budget (probe suites: width/resolution/GT epochs per budget),
    # applied before `--set` overrides
    shape_budget: Callable[[Budget], Budget] | None = None
    # the suite's own GT is trained by the harness at the run's budget (probe suites)
    standalone_gt: bool = False

    def budget(self, name: str, overrides: Sequence[tuple[str, object]] = ()) -> Budget:
        """The named budget with this suite's shapes, then ``--set`` overrides (validated)."""
        b = get_budget(name)
        b = self.shape_budget(b) if self.shape_budget is not None else b
        return b.replace(**dict(overrides)) if overrides else b

    def run_ground_truth(self, space: SearchSpace, budget: Budget, data_dir: Path | None, gt_file: Path | None,
                         cache_dir: Path, columns: Sequence[str], device: str = "cpu",
                         say: Callable[[str], None] = print) -> GroundTruth:
        """A run's GT: the suite's own, plus standalone-at-budget when a `standalone` column is asked
        for and the suite's GT lacks it (NB201 `--gt standalone`)."""
        base = self.load_gt(space, data_dir=data_dir, gt_file=gt_file, budget=budget, cache_dir=cache_dir,
                            device=device, say=say)
        wants = [c for c in columns if c.startswith(STANDALONE) and c not in base.columns]
        if not wants:
            return base
        seeds = tuple(sorted({*NB201_STANDALONE_SEEDS, *(int(c.rsplit("_s", 1)[1]) for c in wants if "_s" in c)}))
        cache = StandaloneCache(space, budget, cache_dir, str(data_dir) if data_dir else None, device, say)
        bench = [c for c in columns if c in base.columns] or list(self.default_gt[:1])
        return CompositeGroundTruth([base, StandaloneGroundTruth(cache, seeds)], fidelity_columns=bench)


def _suite_entry(name: str, obj) -> Suite:
    if not isinstance(obj, Suite):
        raise TypeError(f"suite entry point '{name}' names {obj!r}, not a harness.suites.Suite")
    return obj


SUITES: Registry[Suite] = Registry("suite", builtin_packages=("harness.suites",), coerce=_suite_entry)


def register_suite(suite: Suite) -> Suite:
    return SUITES.add(suite.name, suite)


def get_suite(name: str) -> Suite:
    return SUITES.get(name)
