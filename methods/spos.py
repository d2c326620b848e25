"""SPOS: single-path one-shot with uniform sampling (Guo et al., ECCV 2020), the baseline.

Each step samples one architecture uniformly from the space and trains only that path with
cross-entropy; SGD + cosine schedule from the budget.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from harness.engine.evaluator import SupernetScorer, check_not_collapsed
from harness.engine.trainer import SupernetTrainer
from harness.engine.method import Method, MethodConfig, register_method, rng_state_hooks


@dataclass(frozen=True)
class SposConfig(MethodConfig):
    label_smoothing: float = 0.0


@register_method("spos")
class Spos(Method):
    Config = SposConfig

    def fit(self, job):
        model = job.build_supernet()
        rng = job.rng("path")
        space = job.space

        def step(x, y, step):
            arch = space.sample(rng)
            loss = F.cross_entropy(model(x, arch), y, label_smoothing=self.config.label_smoothing)
            job.counters.add_path(len(x))
            return loss  # one loss: the trainer runs its backward

        trainer = SupernetTrainer(job, model, backward=True)
        job.set_curve_scorer(lambda: SupernetScorer(job, model))
        trainer.run(step, **rng_state_hooks(rng))
        check_not_collapsed(model, job.data.score_x[:64], [space.sample(job.rng("collapse")) for _ in range(4)])
        return SupernetScorer(job, model)
