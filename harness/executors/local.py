"""``local``: jobs in this process one after another, or (``--jobs N``) in N spawned worker processes."""
from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed

from harness.executors import Job, JobFn, register_executor


@register_executor("local")
def run_local(jobs: list[Job], run_job: JobFn, cfg, on_result: Callable[[dict], None] = lambda r: None) -> list[dict]:
    if cfg.jobs <= 1:
        results = []
        for m, s in jobs:
            results.append(run_job(m, s))
            on_result(results[-1])
        return results
    # spawn, not fork: torch's thread pools do not survive a fork
    with ProcessPoolExecutor(max_workers=cfg.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(run_job, m, s) for m, s in jobs]
        for f in as_completed(futures):
            on_result(f.result())
        return [f.result() for f in futures]
