"""A study resolved once: the suite, space, budget, methods, ground truth, architecture set and job
list, looked up by name here and handed downstream as objects (``StudyPlan``; each job gets the
picklable ``JobPlan`` part), so nothing below re-resolves a name.

``validate_config`` checks everything that can be checked before any data is read or anything is
written (bad values are one ``ConfigError`` line naming the value and the fix)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness.archsets import resolve_archs
from harness.budgets import Budget
from harness.core.errors import ConfigError
from harness.core.paths import default_cache_dir, default_data_dir
from harness.data.datasets import DEFAULT_DATASET, check_available, check_dataset
from harness.engine.method import create_method
from harness.executors import EXECUTORS, job_list
from harness.groundtruth.base import GroundTruth
from harness.paired import parse_pair
from harness.spaces.base import Arch, SearchSpace
from harness.study.spec import RunConfig
from harness.suites import Suite, get_suite


@dataclass(frozen=True)
class JobPlan:
    """What every job of a study receives (picklable, for worker processes and Ray tasks)."""

    cfg: RunConfig
    space: SearchSpace
    budget: Budget
    archs: tuple[Arch, ...]


@dataclass
class StudyPlan:
    cfg: RunConfig  # data_dir / cache_dir filled in
    suite: Suite
    space: SearchSpace
    budget: Budget
    gt_columns: tuple[str, ...]
    gt: GroundTruth
    archs: list[Arch]
    jobs: list[tuple[str, int]] = field(default_factory=list)

    def job_plan(self) -> JobPlan:
        return JobPlan(self.cfg, self.space, self.budget, tuple(self.archs))


def validate_config(cfg: RunConfig) -> None:
    """Everything that can be checked before any data is read or anything is written."""
    check_dataset(cfg.dataset)
    get_suite(cfg.suite).check_dataset(cfg.dataset)
    cfg.resolved_budget()
    if not cfg.methods:
        raise ConfigError("--methods is empty; name at least one method (see `harness list`)")
    for m in cfg.methods:
        create_method(m)
    if not cfg.seeds:
        raise ConfigError("--seeds is empty; give e.g. --seeds 0,1,2")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"--seeds {','.join(map(str, cfg.seeds))} repeats a seed")
    # with Ray the GPUs are the workers' (a cluster's head node may have none)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available() and cfg.executor != "ray":
        raise ConfigError(f"--device {cfg.device}: no CUDA device is available here; use --device cpu")
    EXECUTORS.get(cfg.executor)  # unknown name: did-you-mean
    if cfg.jobs < 1:
        raise ConfigError(f"--jobs {cfg.jobs}: give 1 or more worker processes")
    if cfg.out and Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise ConfigError(f"--out {cfg.out} is an existing file; name a folder (new, or a run folder to resume)")
    for pair in cfg.compare:
        parse_pair(pair)
    if cfg.max_retries < 0:
        raise ConfigError(f"--max-retries {cfg.max_retries}: give 0 or more")
    if cfg.copy_isomorphic:
        space = get_suite(cfg.suite).make_space()
        if space.isomorphism_key(next(iter(space.enumerate()))) is None:
            raise ConfigError(f"--copy-isomorphic: space {space.name} defines no isomorphism key; drop the flag")


def resolve(cfg: RunConfig, say: Callable[[str], None] = print) -> StudyPlan:
    """Validate ``cfg`` completely, then resolve it: the suite and its space, the budget with the
    suite's shapes and the overrides, the ground truth (probe suites may build their standalone GT
    here, saying so), the scored architectures and the job list (seed-major)."""
    validate_config(cfg)
    suite = get_suite(cfg.suite)
    space = suite.make_space()
    budget = cfg.resolved_budget()
    data_dir = cfg.data_dir or (str(default_data_dir()) if default_data_dir() else None)
    cfg = dataclasses.replace(cfg, data_dir=data_dir, cache_dir=cfg.cache_dir or str(default_cache_dir()))
    if cfg.dataset != DEFAULT_DATASET:  # a missing data set: one line, before anything is written
        check_available(cfg.dataset, Path(data_dir) if data_dir else None)
    gt_columns = tuple(cfg.gt or suite.default_gt_for(cfg.dataset))
    gt = suite.run_ground_truth(space, budget, Path(data_dir) if data_dir else None,
                                Path(cfg.gt_file) if cfg.gt_file else None, Path(cfg.cache_dir), gt_columns,
                                cfg.device, say=say, dataset=cfg.dataset)
    for c in gt_columns:
        gt.check_column(c)
    archs = resolve_archs(space, cfg.archs or budget.archs, cfg.arch_seed)
    if hasattr(gt, "prepare"):  # standalone GT: train (or load from cache) the scored archs up front
        gt.prepare(archs)
    return StudyPlan(cfg, suite, space, budget, gt_columns, gt, archs, job_list(cfg.methods, cfg.seeds))
