"""Where jobs run. ``local``: in this process, one after another, or in N worker processes.

Every executor calls the same ``run_job`` and the driver aggregates from the job folders, so the
metrics are the same whichever executor ran the jobs.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness.errors import unknown_name

EXECUTORS: dict[str, Callable] = {}


def register_executor(name: str):
    def deco(fn):
        EXECUTORS[name] = fn
        return fn

    return deco


def job_list(cfg) -> list[tuple[str, int]]:
    """The run's jobs in execution order: seed-major (every method's seed 0 before any seed 1), so a
    study stopped part-way has whole seeds to compare. Aggregation orders results by method."""
    return [(m, s) for s in cfg.seeds for m in cfg.methods]


def _noop(result: dict) -> None: ...


@register_executor("local")
def run_local(run_dir: Path, cfg, archs, hooks_factory, on_result: Callable[[dict], None] = _noop) -> list[dict]:
    from harness.runner import run_job

    if cfg.jobs <= 1:
        results = []
        for m, s in job_list(cfg):
            results.append(run_job(run_dir, cfg, m, s, archs, hooks_factory))
            on_result(results[-1])
        return results
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: torch's thread pools do not survive a fork
    with ProcessPoolExecutor(max_workers=cfg.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(run_job, run_dir, cfg, m, s, archs, hooks_factory) for m, s in job_list(cfg)]
        for f in as_completed(futures):
            on_result(f.result())
        return [f.result() for f in futures]


def run_jobs(run_dir: Path, cfg, archs, hooks_factory=None, on_result: Callable[[dict], None] = _noop) -> list[dict]:
    try:
        import harness.ray_executor  # noqa: F401  (registers "ray" when present)
    except ImportError:
        pass
    if cfg.executor not in EXECUTORS:
        raise unknown_name("executor", cfg.executor, EXECUTORS)
    return EXECUTORS[cfg.executor](run_dir, cfg, archs, hooks_factory, on_result=on_result)
