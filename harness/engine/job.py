"""What one (method, seed) job sees: the space, the budget, the data and its own folder."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from harness.budgets import Budget
from harness.data.tensors import CIFAR10_MEAN, CIFAR10_STD, BatchStream
from harness.core.seeding import derive_seed, numpy_rng
from harness.spaces.base import NetConfig, OpFactory, SearchSpace, Supernet


@dataclass
class TaskData:
    """Float tensors at the budget's resolution, already on the job's device.

    ``train`` feeds weight updates; ``search`` (valid half minus ``score``) is the validation signal
    for methods that search; ``score`` is reserved for final scores; ``recal`` is a fixed set of
    training images for BN re-estimation. ``mean``/``std``: the normalisation the images carry (the
    data set's; methods that undo it to augment, e.g. Pi-NAS, read it here).
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    search_x: torch.Tensor
    search_y: torch.Tensor
    score_x: torch.Tensor
    score_y: torch.Tensor
    num_classes: int = 10
    mean: tuple[float, float, float] = CIFAR10_MEAN
    std: tuple[float, float, float] = CIFAR10_STD

    def recal_x(self, n: int) -> torch.Tensor:
        return spread_rows(self.train_x, n)


def spread_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` rows of ``x`` evenly spaced over its length (all of it when ``n >= len(x)``).

    The splits keep their images in source order, which is class by class for the ImageFolder
    CIFAR-10, so a prefix such as ``x[:n]`` is one class; evenly spaced rows cover every class
    in proportion, deterministically (no RNG stream is touched)."""
    total = len(x)
    if n >= total:
        return x
    idx = torch.div(torch.arange(n, device=x.device) * total, n, rounding_mode="floor")
    return x[idx]


@dataclass
class JobCounters:
    """Cost accounting recorded per job in the manifest."""

    steps: int = 0
    images_seen: int = 0  # training-split images consumed by weight updates
    path_forward: int = 0  # single-path forward passes over a batch (x images)
    path_backward: int = 0
    path_forward_images: int = 0
    path_backward_images: int = 0

    def add_path(self, images: int, forward: int = 1, backward: int = 1) -> None:
        self.path_forward += forward
        self.path_backward += backward
        self.path_forward_images += forward * images
        self.path_backward_images += backward * images

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        seen = max(self.images_seen, 1)
        d["forward_passes_per_image"] = self.path_forward_images / seen
        d["backward_passes_per_image"] = self.path_backward_images / seen
        return d


def job_extra(job: "JobContext", scorer_extra: dict | None = None) -> dict:
    """result.json's ``extra``: the job's recorded values, then the scorer's ``extra()``, and
    ``warnings`` (always a list of strings: the job's, then any the scorer's ``extra()`` lists)."""
    scorer_extra = dict(scorer_extra or {})
    warnings = list(job.warnings)
    warnings += [str(w) for w in scorer_extra.pop("warnings", []) if str(w) not in warnings]
    return {**job.extra, **scorer_extra, "warnings": warnings}


class TrainingHooks:
    """Observers of supernet training (diagnostics); the default does nothing."""

    def on_train_start(self, model: torch.nn.Module, job: "JobContext") -> None: ...

    def on_step(self, model: torch.nn.Module, step: int, total: int) -> None: ...

    def on_train_end(self, model: torch.nn.Module, job: "JobContext") -> None: ...


class HookList(TrainingHooks):
    """Several observers, called in order (fidelity curve, diagnostics)."""

    def __init__(self, hooks):
        self.hooks = [h for h in hooks if h is not None]

    def on_train_start(self, model, job):
        for h in self.hooks:
            h.on_train_start(model, job)

    def on_step(self, model, step, total):
        for h in self.hooks:
            h.on_step(model, step, total)

    def on_train_end(self, model, job):
        for h in self.hooks:
            h.on_train_end(model, job)


@dataclass
class JobContext:
    space: SearchSpace
    budget: Budget
    net_cfg: NetConfig
    data: TaskData
    seed: int
    job_dir: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("harness.engine.job"))
    counters: JobCounters = field(default_factory=JobCounters)
    hooks: TrainingHooks = field(default_factory=TrainingHooks)
    progress: bool = True
    precision: str = "fp32"
    state: dict = field(default_factory=dict)  # per-job facts a method reports (result.json `state`)
    # values for result.json's `extra` (`record`) and the detected fallbacks (`warn`); merged with
    # the scorer's `extra()` by `job_extra` when the job ends, whatever its status
    extra: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # the scorer of the method's current training state, set by the method before it trains: the
    # fidelity curve calls it at its points (inside fork_rng/no_grad; it must not train the supernet)
    curve_scorer: Callable[[], object] | None = None
    curve_note: str = ""  # how the curve's scorer differs from the final one, if it does (report)

    def record(self, key: str, value) -> None:
        """A per-job value for result.json's ``extra`` (statistics the report may show)."""
        self.extra[key] = value

    def warn(self, message: str, **values) -> None:
        """A detected fallback (a method that silently became its trivial case): ``message`` is one
        plain sentence with the numbers, shown by the report from ``extra["warnings"]``; ``values``
        are the same numbers under descriptive keys of ``extra``. The same message twice is kept once."""
        self.extra.update(values)
        if message not in self.warnings:
            self.warnings.append(message)
            self.log.warning("%s", message)

    def set_curve_scorer(self, factory: Callable[[], object], note: str = "") -> None:
        self.curve_scorer, self.curve_note = factory, note

    def rng(self, purpose: str) -> np.random.Generator:
        """A numpy stream for one purpose ("path", "arch-eval", ...), derived from the job seed."""
        return numpy_rng("job", self.seed, purpose)

    def seed_torch(self, purpose: str = "init") -> None:
        torch.manual_seed(derive_seed("job", self.seed, purpose))

    def build_supernet(self, op_factory: OpFactory | None = None, **cfg_overrides) -> Supernet:
        """The space's supernet, initialised from the job's `init` stream, on the job's device."""
        import dataclasses

        cfg = dataclasses.replace(self.net_cfg, **cfg_overrides) if cfg_overrides else self.net_cfg
        self.seed_torch("init")
        model = self.space.build_supernet(cfg, op_factory).to(self.device)
        if self.device.type == "cuda":  # NHWC convolutions (tensor cores); the CPU path stays NCHW, bit for bit
            model = model.to(memory_format=torch.channels_last)
        return model

    def autocast(self):
        """``--precision bf16``: bfloat16 autocast for forward passes (fp32 weights and optimizer);
        fp32 is a no-op context. Losses/logits are cast back to fp32 by the callers."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_stream(self, batch_size: int | None = None, augment: bool = True) -> BatchStream:
        """Training batches in the run's per-seed data order (identical for every method)."""
        return BatchStream(self.data.train_x, self.data.train_y, batch_size or self.budget.batch_size,
                           seed=self.seed, augment=augment)

    def search_stream(self, batch_size: int | None = None) -> BatchStream:
        return BatchStream(self.data.search_x, self.data.search_y, batch_size or self.budget.batch_size,
                           seed=derive_seed("search", self.seed), augment=False)
