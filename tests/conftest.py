"""Shared fixtures: tiny synthetic jobs (no real data) and the shared data dir when present."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from harness.budgets import get_budget
from harness.engine.job import JobContext, TaskData
from harness.spaces.nb201 import Nb201Space

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("HARNESS_DATA_DIR", REPO.parent / "shared"))


def tiny_data(n_train=256, n_search=128, n_score=128, resolution=8, num_classes=10, seed=0) -> TaskData:
    """Synthetic images whose class is visible in the mean colour, so tiny nets can learn a bit."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        y = torch.randint(0, num_classes, (n,), generator=g)
        x = torch.randn(n, 3, resolution, resolution, generator=g) * 0.5
        x += (y.float().view(n, 1, 1, 1) / num_classes - 0.5) * 2
        return x, y

    tx, ty = make(n_train)
    sx, sy = make(n_search)
    qx, qy = make(n_score)
    return TaskData(tx, ty, sx, sy, qx, qy, num_classes=num_classes)


def make_job(tmp_path: Path, space=None, seed: int = 0, data: TaskData | None = None, **budget_overrides) -> JobContext:
    """A JobContext at a tiny shape: C=4, N=1, 8px, 2 epochs of 256 images, batch 32."""
    space = space or Nb201Space()
    defaults = dict(channels=4, cells=1, resolution=8, epochs=2, batch_size=32, score_size=128,
                    eval_batch_size=128, threads=1, checkpoint_every=0)
    defaults.update(budget_overrides)
    budget = get_budget("smoke").replace(**defaults)
    data = data or tiny_data(resolution=budget.resolution)
    job_dir = tmp_path / f"job-s{seed}"
    job_dir.mkdir(parents=True, exist_ok=True)
    return JobContext(space=space, budget=budget, net_cfg=budget.net_config(num_classes=data.num_classes),
                      data=data, seed=seed, job_dir=job_dir, progress=False)


@pytest.fixture
def job_factory(tmp_path):
    def factory(**kw):
        return make_job(tmp_path, **kw)

    return factory


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "nb201" / "nats_tss_accuracy.csv").is_file():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests use tiny tensors: one torch thread is faster and keeps a shared 2-core CPU responsive.
    (Jobs run by the runner still set the budget's thread count themselves.)"""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def recording_factory(space):
    """An op factory wrapping the space's own ops that records every (decision, choice) built and
    every ctx passed at forward time: checks that a space routes construction and ctx through it."""
    seen, ctxs = [], []

    class Wrap(torch.nn.Module):
        def __init__(self, op):
            super().__init__()
            self.op = op

        def forward(self, x, ctx=None):
            ctxs.append(ctx)
            return self.op(x, ctx)

    def factory(spec):
        seen.append((spec.decision, spec.choice))
        return Wrap(space.default_op(spec))

    return factory, seen, ctxs
