"""``--executor ray``: every (method, seed) job is a Ray task; the driver aggregates as ``local`` does.

A task runs the same ``harness.study.jobs.run_job`` as the local executor, in a Ray worker process,
with a resource request of ``budget.threads`` CPUs (and one GPU with ``--device cuda``). Jobs write
their folders (``result.json``, ``scores.csv``, checkpoints) under the run folder, which on a
cluster must be a path every node sees (a shared filesystem); the driver then aggregates from those
folders exactly as for ``--executor local``, so ``metrics.csv`` is byte-for-byte the same for the
same seeds.

A task that fails (worker crashed, node preempted, an exception escaping ``run_job``) is submitted
again, up to ``cfg.max_retries`` times; ``run_job`` resumes from the job's last good checkpoint
(``SupernetTrainer.try_resume``), so a retry repeats at most ``checkpoint_every`` steps. Each job's
attempts (outcome, worker pid and node, error) are recorded in the manifest under
``jobs.<method>-s<seed>.attempts``. A job that fails every attempt is recorded with status
``crashed`` and the study goes on; its metrics rows are NaN, as for any failed job.
"""
from __future__ import annotations

import os
import re
import time

from harness.core.errors import ConfigError
from harness.executors import Job, JobFn, register_executor
from harness.core.io import read_json, write_json
from harness.core.provenance import utc_now

INSTALL_HINT = "pip install 'supernet-harness[ray]' (or pip install ray)"


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def job_resources(cfg) -> dict:
    """What one job asks Ray for: the budget's torch threads as CPUs, one GPU on CUDA."""
    budget = cfg.resolved_budget()
    return {"num_cpus": max(1, int(budget.threads)), "num_gpus": 1 if str(cfg.device).startswith("cuda") else 0}


def _ray_job(run_job: JobFn, cfg, method: str, seed: int, attempt: int) -> dict:
    """Body of one Ray task (runs in a worker process)."""
    import ray

    try:
        node = ray.util.get_node_ip_address()
    except Exception:  # pragma: no cover - outside a Ray worker
        node = None
    if str(cfg.device).startswith("cuda:"):  # Ray exposes the task's GPU as device 0 (CUDA_VISIBLE_DEVICES)
        run_job = run_job.on_device("cuda")
    worker = {"pid": os.getpid(), "node": node, "attempt": attempt, "started": utc_now()}
    # written first, so the driver can name the process of an attempt that dies (crash errors do not)
    job_dir = run_job.job_dir(method, seed)
    job_dir.mkdir(parents=True, exist_ok=True)
    write_json(job_dir / f"ray-attempt-{attempt}.json", worker)
    result = run_job(method, seed)
    return {**result, "worker": worker}


def _attempt_worker(run_job: JobFn, j: Job, attempt: int) -> dict:
    path = run_job.job_dir(*j) / f"ray-attempt-{attempt}.json"
    try:
        return read_json(path)
    except (OSError, ValueError):
        return {}


def _error_line(exc: BaseException, limit: int = 300) -> str:
    """One line naming the failure (Ray's task errors carry the remote traceback in str())."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        text = str(cause).strip().splitlines()
        line = f"{type(cause).__name__}: {text[0] if text else ''}"
    else:
        text = str(exc).strip().splitlines()
        line = f"{type(exc).__name__}: {text[-1] if text else ''}"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _failed_worker(exc: BaseException) -> tuple[int | None, str | None]:
    """(pid, node) of the worker a failure came from: attributes of task errors, else Ray's
    worker-crash message ("Worker IP address: ... Worker PID: ...")."""
    pid, node = getattr(exc, "pid", None), getattr(exc, "ip", None)
    text = str(exc)
    if pid is None and (m := re.search(r"Worker PID: (\d+)", text)):
        pid = int(m.group(1))
    if node is None and (m := re.search(r"Worker IP address: (\S+)", text)):
        node = m.group(1)
    return pid, node


@register_executor("ray")
def run_ray(jobs: list[Job], run_job: JobFn, cfg, on_result=lambda r: None) -> list[dict]:
    """``run_job`` must also offer ``job_dir(method, seed)`` (where a job writes) and
    ``on_device(device)`` (the same job on another device name), as the study's job runner does."""
    ray = import_ray()
    started_here = False
    if not ray.is_initialized():
        # address None: connect to RAY_ADDRESS if set, else start a local instance for this run
        ray.init(address=cfg.ray_address, include_dashboard=False, log_to_driver=bool(cfg.progress))
        started_here = True
    try:
        return _run_all(ray, jobs, run_job, cfg, on_result)
    finally:
        if started_here:
            ray.shutdown()


def _run_all(ray, jobs: list[Job], run_job: JobFn, cfg, on_result=lambda r: None) -> list[dict]:
    # max_retries=0: retries are ours, so each one is recorded and resumes from the checkpoint
    task = ray.remote(_ray_job).options(max_retries=0, **job_resources(cfg))
    job_ref = ray.put(run_job)  # one copy (with the architecture list) in the object store, shared by every task
    attempts: dict[tuple[str, int], list[dict]] = {j: [] for j in jobs}
    results: dict[tuple[str, int], dict] = {}
    pending: dict = {}

    def submit(j: tuple[str, int]) -> None:
        n = len(attempts[j]) + 1
        ref = task.remote(job_ref, cfg, j[0], j[1], n)
        pending[ref] = (j, n, time.time())

    for j in jobs:
        submit(j)
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        ref = done[0]
        j, n, t0 = pending.pop(ref)
        try:
            res = ray.get(ref)
        except Exception as exc:  # worker crash, node loss, an exception escaping run_job
            pid, node = _failed_worker(exc)
            announced = _attempt_worker(run_job, j, n)
            pid, node = pid or announced.get("pid"), node or announced.get("node")
            attempts[j].append({"attempt": n, "outcome": "failed", "error": _error_line(exc), "pid": pid,
                                "node": node, "wall_s": round(time.time() - t0, 3)})
            if n <= cfg.max_retries:
                submit(j)
            else:
                results[j] = {"method": j[0], "seed": j[1], "status": "crashed",
                              "reason": f"failed {n} attempt(s); last: {attempts[j][-1]['error']}"}
            continue
        worker = res.pop("worker", {})
        attempts[j].append({"attempt": n, "outcome": "ok", "pid": worker.get("pid"), "node": worker.get("node"),
                            "wall_s": round(time.time() - t0, 3)})
        results[j] = res
        on_result(res)
    return [{**results[j], "executor": "ray", "attempts": attempts[j]} for j in jobs]
