"""Where jobs run, registered by name: ``local`` (this process, or N worker processes) and ``ray``.

An executor is a function ``(jobs, run_job, cfg, on_result) -> list[result]``: ``jobs`` lists
``(method, seed)`` in execution order, ``run_job(method, seed) -> dict`` runs one job (a picklable
callable the study hands down, so executors never import the study layer), ``on_result`` is
called as each job finishes. Every executor calls the same ``run_job`` and the driver aggregates
from the job folders, so the metrics are the same whichever executor ran the jobs. A third-party
executor registers through the ``supernet_harness.executors`` entry-point group.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from harness.core.registry import Registry

Job = tuple[str, int]
JobFn = Callable[[str, int], dict]
Executor = Callable[..., list[dict]]

EXECUTORS: Registry[Executor] = Registry("executor", builtin_packages=("harness.executors",))


def register_executor(name: str):
    return EXECUTORS.register(name)


def job_list(methods: Sequence[str], seeds: Sequence[int]) -> list[Job]:
    """The run's jobs in execution order: seed-major (every method's seed 0 before any seed 1), so a
    study stopped part-way has whole seeds to compare. Aggregation orders results by method."""
    return [(m, s) for s in seeds for m in methods]


def _noop(result: dict) -> None: ...


def run_jobs(jobs: Sequence[Job], run_job: JobFn, cfg, on_result: Callable[[dict], None] = _noop) -> list[dict]:
    return EXECUTORS.get(cfg.executor)(list(jobs), run_job, cfg, on_result=on_result)
