"""A markdown table of a run folder's jobs, for READMEs and closing notes: per job its commit,
Kendall tau and Spearman (against the run's first GT column, all scored architectures), wall and
CPU minutes, the CPU model it ran on, path passes per image, curve cost and warnings. Unfinished jobs are listed as such.
``--by-method``: one row per method (seeds done, tau mean +- std and per seed, mean Spearman, CPU
minutes per job, passes) and the run's paired tests (first GT column).

    python tools/study_table.py RUN [RUN ...]
    python tools/study_table.py --by-method RUN
"""
from __future__ import annotations

import csv
import json
import re
import statistics
import sys
from pathlib import Path


def scored_values(run: Path, manifest: dict) -> dict[tuple[str, str, str], float]:
    """(method, seed, metric) -> value on all scored architectures, against the first GT column."""
    gt = manifest["gt_columns"][0] if manifest.get("gt_columns") else None
    values: dict[tuple[str, str, str], float] = {}
    if (run / "metrics.csv").is_file():
        with open(run / "metrics.csv") as f:
            for r in csv.DictReader(f):
                if r["subset"] == "scored" and r["gt"] == gt and not r["k"] and r["value"]:
                    values[(r["method"], r["seed"], r["metric"])] = float(r["value"])
    return values


def cpu_tag(platform: dict) -> str:
    """'f25m17' for an 'AMD EPYC (...; cpu family 25, model 17, stepping 1)' CPU model: rows from
    different CPU models differ in their bits (kernel choice), so the table says which made which."""
    m = re.search(r"family (\d+), model (\d+)", platform.get("cpu_model", ""))
    return f"f{m.group(1)}m{m.group(2)}" if m else platform.get("cpu_model", "?")


def cpu_range(minutes: list[float]) -> str:
    lo, hi = (f"{min(minutes):.1f}", f"{max(minutes):.1f}") if minutes else ("", "")
    return lo if lo == hi else f"{lo}-{hi}"


def by_method(run: Path) -> list[str]:
    manifest = json.loads((run / "manifest.json").read_text())
    values = scored_values(run, manifest)
    out = ["| method | seeds | Kendall tau | per seed | Spearman (mean) | CPU min / job | fwd + bwd passes / image |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for m in manifest["config"]["methods"]:
        done = [j for j in manifest["jobs"].values() if j["method"] == m and j.get("status") == "done"]
        if not done:
            out.append(f"| {m} | - | pending | | | | |")
            continue
        seeds = [str(j["seed"]) for j in done]
        tau = [values[(m, s, "kendall_tau")] for s in seeds]
        rho = [values[(m, s, "spearman_rho")] for s in seeds]
        mean = statistics.mean(tau)
        cpu = [j["cpu_s"] / 60 for j in done if j.get("cpu_s") is not None]
        c = done[0].get("counters", {})
        passes = (f"{c.get('forward_passes_per_image', 0):.2f} + {c.get('backward_passes_per_image', 0):.2f}"
                  if c.get("forward_passes_per_image") else "-")
        out.append(f"| {m} | {','.join(seeds)} | {mean:+.3f}" + (f" ± {statistics.stdev(tau):.3f}" if len(tau) > 1 else "") +
                   f" | {', '.join(f'{t:+.3f}' for t in tau)} | {sum(rho) / len(rho):+.3f} | "
                   f"{cpu_range(cpu)} | {passes} |")
    paired = run / "paired.csv"
    gt = manifest["gt_columns"][0]
    if paired.is_file():
        out += ["", "| A - B | seeds | tau difference [95 % CI] | per seed | verdict |", "| --- | --- | --- | --- | --- |"]
        with open(paired) as f:
            for r in csv.DictReader(f):
                if r["gt"] != gt:
                    continue
                ci = "" if not r["ci_low"] else f" [{float(r['ci_low']):+.3f}, {float(r['ci_high']):+.3f}]"
                out.append(f"| {r['a']} - {r['b']} | {r['n_seeds']} | {float(r['diff']):+.3f}{ci} | {r['per_seed']} | "
                           f"{r['verdict']} |")
    return out


def rows(run: Path) -> list[str]:
    manifest = json.loads((run / "manifest.json").read_text())
    values = scored_values(run, manifest)
    out = []
    for name, job in manifest["jobs"].items():
        m, s = job["method"], str(job["seed"])
        # a job that predates per-job commits gets the run's (last) commit, marked "run"
        commit = job["git_commit"][:7] if job.get("git_commit") else f"{manifest.get('git_commit', '?')[:7]} (run)"
        if job.get("status") != "done":
            out.append(f"| {name} | | | {job.get('status', '?')} | | | | | | | |")
            continue
        # a job that predates per-job platforms ran on its run's
        cpu_model = cpu_tag(job.get("platform") or manifest.get("platform", {}))
        c = job.get("counters", {})
        passes = f"{c.get('forward_passes_per_image', 0):.2f} + {c.get('backward_passes_per_image', 0):.2f}"
        tau, rho = values.get((m, s, "kendall_tau")), values.get((m, s, "spearman_rho"))
        curve = job.get("curve", {}).get("seconds")
        cpu = "" if job.get("cpu_s") is None else f"{job['cpu_s'] / 60:.1f}"  # not recorded before issue 15
        out.append(f"| {name} | {commit} | {cpu_model} | {job.get('status', '?')} | "
                   f"{'' if tau is None else f'{tau:+.3f}'} | {'' if rho is None else f'{rho:+.3f}'} | "
                   f"{job.get('wall_s', 0) / 60:.1f} | {cpu} | {passes} | "
                   f"{'' if curve is None else f'{curve / 60:.1f}'} | {len(job.get('extra', {}).get('warnings', []))} |")
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["--by-method"]:
        for arg in sys.argv[2:]:
            print("\n".join(by_method(Path(arg))))
        sys.exit(0)
    print("| job | commit | CPU | status | Kendall tau | Spearman | wall min | CPU min | fwd + bwd passes / image | "
          "curve min | warnings |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for arg in sys.argv[1:]:
        print("\n".join(rows(Path(arg))))
