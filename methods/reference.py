"""Reference rows that need no training: seeded random scores, #params and FLOPs.

A supernet method has to beat these to be worth its compute; `random` sits at tau ~ 0 by
construction, and `params` is a strong baseline on NB201 (tau ~ 0.5 against 200-epoch accuracy).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.profile import count_flops, count_params
from harness.engine.method import Method, MethodConfig, Scorer, register_method


class _FnScorer(Scorer):
    def __init__(self, fn):
        self.fn = fn

    def score(self, archs: Sequence) -> np.ndarray:
        return np.asarray([self.fn(a) for a in archs], dtype=float)


@register_method("random")
class RandomScores(Method):
    Config = MethodConfig
    trains_supernet = False

    def fit(self, job):
        rng = job.rng("random-scores")
        # one draw per architecture, keyed by its id, so a score does not depend on the set's order
        seed = int(rng.integers(2**62))
        return _FnScorer(lambda a: np.random.default_rng([seed, job.space.arch_id(a)]).random())


@register_method("params", quantity="params")
@register_method("flops", quantity="flops")
class CostProxy(Method):
    """Score = parameter count / FLOPs of the standalone network at the budget's shape."""

    @dataclass(frozen=True)
    class Config(MethodConfig):
        quantity: str = "params"

    trains_supernet = False

    # (space, arch, shape, quantity) -> value: a pure function of its key, so seeds after the first
    # (and params/flops rows of one process) reuse it instead of rebuilding every network
    _cache: dict = {}

    def fit(self, job):
        cfg, space, quantity = job.net_cfg, job.space, self.config.quantity

        def cost(a):
            key = (space.name, tuple(a), cfg, quantity)
            if key not in self._cache:
                net = space.build_standalone(a, cfg)
                self._cache[key] = float(count_params(net) if quantity == "params"
                                         else count_flops(net, a, cfg.resolution))
            return self._cache[key]

        return _FnScorer(cost)
