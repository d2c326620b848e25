"""FairNAS: strict-fairness supernet training (Chu et al., "FairNAS: Rethinking Evaluation Fairness
of Weight Sharing Neural Architecture Search", ICCV 2021).

Strict fairness (paper Sec. 3.2, Algorithm 1): at every step, for every decision, draw a random
permutation of its operators; the k-th entries of all permutations form the k-th of m paths, so the
m paths together use every operator of every decision exactly once. The m paths run forward and
backward on the SAME batch, their gradients are accumulated, and one optimizer step applies them
("Update theta by accumulated gradients"): every operator receives exactly one gradient
contribution per step, which is what makes the training fair.

Space-agnostic generalisation (the paper's spaces have equal choice counts): m is the largest
choice count over the decisions; a decision with fewer choices uses each of its operators once and
fills the remaining m - n_d paths with uniform draws (so it is still used at least once per step,
and each path's choice stays uniform). Same images budget as SPOS (one batch per step), m x the
forward/backward compute; the counters record the m passes so the cost is visible.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from harness.engine.evaluator import SupernetScorer, check_not_collapsed
from harness.spaces.base import Arch, SearchSpace
from harness.engine.trainer import SupernetTrainer
from harness.engine.method import Method, MethodConfig, register_method, rng_state_hooks


def fair_paths(choice_counts: Sequence[int], rng: np.random.Generator) -> list[Arch]:
    """The m strictly fair paths of one step (Chu et al. 2021, Algorithm 1, lines 4-6).

    ``choice_counts[d]`` is the number of operators of decision d; m = max(choice_counts). Column d
    of the returned m x D table is a random permutation of ``range(n_d)`` when n_d = m; otherwise it
    holds every operator once plus m - n_d uniform draws, in random order.
    """
    counts = [int(n) for n in choice_counts]
    if not counts or min(counts) < 1:
        raise ValueError(f"every decision needs at least one choice, got counts {counts}")
    m = max(counts)
    columns = []
    for n in counts:
        column = np.arange(n) if n == m else np.concatenate([np.arange(n), rng.integers(n, size=m - n)])
        columns.append(rng.permutation(column))
    table = np.stack(columns, axis=1)  # (m, D)
    return [tuple(int(c) for c in row) for row in table]


def space_fair_paths(space: SearchSpace, rng: np.random.Generator) -> list[Arch]:
    """Fair paths over each decision's allowed choices (a constrained space such as
    mobilenet-probe13 forbids identity in a stage's first layer)."""
    allowed = [space.allowed_choices(d) for d in range(len(space.decisions))]
    rows = fair_paths([len(a) for a in allowed], rng)
    return [tuple(allowed[d][c] for d, c in enumerate(row)) for row in rows]


def accumulate_paths(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, paths: Sequence[Arch],
                     loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                     average: bool = False) -> torch.Tensor:
    """Forward/backward every path on the same batch; gradients add up in ``.grad``.

    Returns the mean loss over paths (for logging). ``average=True`` scales each path's loss by 1/m
    (mean of gradients) instead of the paper's plain sum.
    """
    scale = 1.0 / len(paths) if average else 1.0
    total = torch.zeros((), device=x.device)
    for arch in paths:
        loss = loss_fn(model(x, arch), y)
        (loss * scale).backward()
        total = total + loss.detach()
    return total / len(paths)


@dataclass(frozen=True)
class FairNasConfig(MethodConfig):
    label_smoothing: float = 0.0
    # the paper sums the m paths' gradients; True applies their mean (same direction, 1/m step)
    average_grads: bool = False


@register_method("fairnas")
class FairNas(Method):
    Config = FairNasConfig

    def fit(self, job):
        model = job.build_supernet()
        rng = job.rng("path")
        space = job.space
        m = max(len(d.choices) for d in space.decisions)
        job.state["fairnas_paths_per_step"] = m

        def loss_fn(logits, y):
            return F.cross_entropy(logits, y, label_smoothing=self.config.label_smoothing)

        def step(x, y, step):
            paths = space_fair_paths(space, rng)
            loss = accumulate_paths(model, x, y, paths, loss_fn, average=self.config.average_grads)
            job.counters.add_path(len(x), forward=len(paths), backward=len(paths))
            return loss

        trainer = SupernetTrainer(job, model)
        job.set_curve_scorer(lambda: SupernetScorer(job, model))
        trainer.run(step, **rng_state_hooks(rng))
        check_not_collapsed(model, job.data.score_x[:64], [space.sample(job.rng("collapse")) for _ in range(4)])
        return SupernetScorer(job, model)
