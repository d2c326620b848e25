"""The `local` executor: in-process jobs in list order, `--jobs N` in spawned worker processes with
the same results, one `on_result` per job, and the run's seed-major job list."""
from __future__ import annotations

import itertools
import os
from types import SimpleNamespace

import pytest

from harness.core.errors import ConfigError
from harness.executors import EXECUTORS, job_list, run_jobs
from harness.executors.local import run_local

JOBS = job_list(["alpha", "beta", "gamma"], [0, 1])


def square_job(method: str, seed: int) -> dict:
    """A picklable job function (module level), so worker processes can import it."""
    return {"method": method, "seed": seed, "value": f"{method}:{seed * seed + len(method)}", "pid": os.getpid()}


def _without_pid(results):
    return [{k: v for k, v in r.items() if k != "pid"} for r in results]


def test_in_process_runs_jobs_in_list_order():
    calls, seen = [], []

    def job(method, seed):
        calls.append((method, seed))
        return square_job(method, seed)

    results = run_local(JOBS, job, SimpleNamespace(jobs=1), on_result=seen.append)
    assert calls == JOBS
    assert [(r["method"], r["seed"]) for r in results] == JOBS
    assert seen == results  # once per job, as each finishes (in order here)
    assert {r["pid"] for r in results} == {os.getpid()}


def test_in_process_on_result_sees_each_result_before_the_next_job_starts():
    log = []

    def job(method, seed):
        log.append(("start", method, seed))
        return {"method": method, "seed": seed}

    run_local(JOBS[:3], job, SimpleNamespace(jobs=1), on_result=lambda r: log.append(("done", r["method"], r["seed"])))
    assert log == [(kind, m, s) for m, s in JOBS[:3] for kind in ("start", "done")]


def test_worker_processes_give_the_in_process_results():
    """`--jobs 2`: spawned workers run the same function; the returned list is in job order whatever
    order they finish in, and on_result is called once per job."""
    serial = run_local(JOBS, square_job, SimpleNamespace(jobs=1))
    seen = []
    parallel = run_local(JOBS, square_job, SimpleNamespace(jobs=2), on_result=seen.append)
    assert _without_pid(parallel) == _without_pid(serial)
    assert sorted(_without_pid(seen), key=lambda r: (r["method"], r["seed"])) == \
        sorted(_without_pid(serial), key=lambda r: (r["method"], r["seed"]))
    assert len(seen) == len(JOBS)
    assert os.getpid() not in {r["pid"] for r in parallel}  # ran in the workers, not here


def test_a_failing_job_raises_in_process():
    def job(method, seed):
        if seed == 1:
            raise RuntimeError(f"boom {method}")
        return {"method": method, "seed": seed}

    seen = []
    with pytest.raises(RuntimeError, match="boom alpha"):
        run_local(JOBS, job, SimpleNamespace(jobs=1), on_result=seen.append)
    assert [(r["method"], r["seed"]) for r in seen] == JOBS[:3]  # seed 0 of every method finished first


@pytest.mark.parametrize("methods,seeds", [(["a", "b", "c"], [0, 1, 2]), (["spos"], [4, 2]), (["x", "y"], [7])])
def test_job_list_is_seed_major(methods, seeds):
    jobs = job_list(methods, seeds)
    assert sorted(jobs) == sorted(itertools.product(methods, seeds))  # every pair once
    # every method's job of one seed before any job of the next seed, methods in the given order
    assert [s for _, s in jobs] == [s for s in seeds for _ in methods]
    for s in seeds:
        assert [m for m, t in jobs if t == s] == list(methods)


def test_run_jobs_dispatches_to_the_named_executor():
    assert EXECUTORS.get("local") is run_local
    seen = []
    results = run_jobs(JOBS[:2], square_job, SimpleNamespace(executor="local", jobs=1), on_result=seen.append)
    assert [(r["method"], r["seed"]) for r in results] == JOBS[:2] and seen == results
    with pytest.raises(ConfigError, match=r"unknown executor 'locl' \(did you mean 'local'\?\)"):
        run_jobs(JOBS, square_job, SimpleNamespace(executor="locl", jobs=1))
