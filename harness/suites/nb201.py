"""NAS-Bench-201 / NATS-Bench topology space with the benchmark's ground truth (our CSV or the
official NATS-Bench file)."""
from __future__ import annotations

from harness.groundtruth.base import DEFAULT_GT_COLUMN, load_ground_truth
from harness.spaces.nb201 import Nb201Space
from harness.suites.base import Suite, register_suite


def load_benchmark_gt(space, *, data_dir=None, gt_file=None, **_):
    """The benchmark table; budget, cache and device do not change it."""
    return load_ground_truth(space, data_dir, gt_file)


register_suite(Suite(
    name="nb201", make_space=Nb201Space, load_gt=load_benchmark_gt, default_gt=(DEFAULT_GT_COLUMN,),
    description="NAS-Bench-201 / NATS-Bench topology space (15,625 cells), CIFAR-10, benchmark ground truth",
))
