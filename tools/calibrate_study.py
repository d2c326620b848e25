"""Calibrate the `study` budget (issue 15): SPOS on NB201 at candidate shapes/epochs, one run per seed.

Each (candidate, seed) is its own `harness run` (so the cosine schedule is that run's, not a point of
a longer run) in ``ROOT/<candidate>/s<seed>``; wall and CPU time (getrusage of the child) are
recorded beside Kendall tau / Spearman against cifar10_test_200ep on the 300-architecture default
set. Re-running skips finished rows and resumes an interrupted job from its checkpoint.

    python tools/calibrate_study.py ROOT [candidate ...]     # run (resumes)
    python tools/calibrate_study.py --table ROOT              # the markdown table (README, closing note)
    python tools/export_run.py ROOT DEST                      # copy the run folders without checkpoints
"""
from __future__ import annotations

import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HARNESS = str(Path(sys.executable).with_name("harness"))
# name: (budget-field overrides, seeds); smoke shapes are C=8, N=1, 16 px, batch 128.
CANDIDATES = {
    "c8-e100": ({"epochs": 100}, (0, 1, 2)),
    # The rest run at 1 thread, two jobs side by side (the study's own layout from 2026-12-01, issue
    # 21: 1.21x the throughput of one 2-thread job); recorded in the overrides column.
    "c16-e50": ({"epochs": 50, "channels": 16, "threads": 1}, (0, 1, 2)),  # ~1.9x per image: equal wall
    "c8-e200": ({"epochs": 200, "threads": 1}, (0, 1, 2)),
    "c8-e300": ({"epochs": 300, "threads": 1}, (0,)),  # a data point past the 20-minute cap
}
FIELDS = ["candidate", "seed", "overrides", "kendall_tau", "spearman_rho", "fit_s", "wall_s", "cpu_s",
          "images_seen", "load1_start", "run"]


def metric(run: Path, name: str) -> float:
    with open(run / "metrics.csv") as f:
        for r in csv.DictReader(f):
            if r["metric"] == name and r["subset"] == "scored" and r["gt"] == "cifar10_test_200ep":
                return float(r["value"])
    raise KeyError(name)


def main(root: Path, names: list[str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    table = root / "calibration.csv"
    done = set()
    if table.exists():
        with open(table) as f:
            done = {(r["candidate"], r["seed"]) for r in csv.DictReader(f)}
    for name in names or list(CANDIDATES):
        overrides, seeds = CANDIDATES[name]
        for seed in seeds:
            if (name, str(seed)) in done:
                continue
            out = root / name / f"s{seed}"
            cmd = [HARNESS, "run", "--suite", "nb201", "--methods", "spos", "--budget", "smoke",
                   "--archs", "sample:300", "--gt", "cifar10_test_200ep", "--seeds", str(seed),
                   "--no-report", "--no-progress", "--out", str(out)]
            for k, v in overrides.items():
                cmd += ["--set", f"{k}={v}"]
            load1 = os.getloadavg()[0]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            with open(root / f"{name}-s{seed}.log", "a") as log:
                subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            job = json.loads((out / "manifest.json").read_text())["jobs"][f"spos-s{seed}"]
            row = {"candidate": name, "seed": seed, "overrides": ";".join(f"{k}={v}" for k, v in overrides.items()),
                   "kendall_tau": metric(out, "kendall_tau"), "spearman_rho": metric(out, "spearman_rho"),
                   "fit_s": round(job["fit_s"], 1), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                   "images_seen": job["counters"]["images_seen"], "load1_start": round(load1, 2),
                   "run": str(out.relative_to(root))}
            new = not table.exists()
            with open(table, "a", newline="") as f:
                w = csv.DictWriter(f, FIELDS)
                if new:
                    w.writeheader()
                w.writerow(row)
            print(row, flush=True)


def table(root: Path) -> str:
    """Per candidate: shape, epochs, per-seed tau, mean +- std, wall and CPU minutes per job."""
    with open(root / "calibration.csv") as f:
        rows = list(csv.DictReader(f))
    lines = ["| candidate | shape | epochs | Kendall tau per seed | mean ± std | Spearman mean | wall min / job | "
             "CPU min / job | threads |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in dict.fromkeys(r["candidate"] for r in rows):
        rs = [r for r in rows if r["candidate"] == name]
        ov = dict(kv.split("=") for kv in rs[0]["overrides"].split(";"))
        taus = [float(r["kendall_tau"]) for r in rs]
        sd = f"{statistics.stdev(taus):.3f}" if len(taus) > 1 else "n/a"
        per = ", ".join(f"s{r['seed']} {float(r['kendall_tau']):+.3f}" for r in rs)
        lines.append(f"| {name} | C={ov.get('channels', 8)}, N=1, 16 px | {ov['epochs']} | {per} | "
                     f"{statistics.mean(taus):+.3f} ± {sd} | "
                     f"{statistics.mean(float(r['spearman_rho']) for r in rs):+.3f} | "
                     f"{statistics.mean(float(r['wall_s']) for r in rs) / 60:.1f} | "
                     f"{statistics.mean(float(r['cpu_s']) for r in rs) / 60:.1f} | {ov.get('threads', 2)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1] == "--table":
        print(table(Path(sys.argv[2])))
    else:
        main(Path(sys.argv[1]), sys.argv[2:])
