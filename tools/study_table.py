"""A markdown table of a run folder's jobs, for READMEs and closing notes: per job its commit,
Kendall tau and Spearman (against the run's first GT column, all scored architectures), wall and
CPU minutes, path passes per image, curve cost and warnings. Unfinished jobs are listed as such.

    python tools/study_table.py RUN [RUN ...]
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def rows(run: Path) -> list[str]:
    manifest = json.loads((run / "manifest.json").read_text())
    gt = manifest["gt_columns"][0] if manifest.get("gt_columns") else None
    values: dict[tuple[str, str, str], float] = {}
    if (run / "metrics.csv").is_file():
        with open(run / "metrics.csv") as f:
            for r in csv.DictReader(f):
                if r["subset"] == "scored" and r["gt"] == gt and not r["k"] and r["value"]:
                    values[(r["method"], r["seed"], r["metric"])] = float(r["value"])
    out = []
    for name, job in manifest["jobs"].items():
        m, s = job["method"], str(job["seed"])
        # a job that predates per-job commits gets the run's (last) commit, marked "run"
        commit = job["git_commit"][:7] if job.get("git_commit") else f"{manifest.get('git_commit', '?')[:7]} (run)"
        if job.get("status") != "done":
            out.append(f"| {name} | | {job.get('status', '?')} | | | | | | | |")
            continue
        c = job.get("counters", {})
        passes = f"{c.get('forward_passes_per_image', 0):.2f} + {c.get('backward_passes_per_image', 0):.2f}"
        tau, rho = values.get((m, s, "kendall_tau")), values.get((m, s, "spearman_rho"))
        curve = job.get("curve", {}).get("seconds")
        cpu = "" if job.get("cpu_s") is None else f"{job['cpu_s'] / 60:.1f}"  # not recorded before issue 15
        out.append(f"| {name} | {commit} | {job.get('status', '?')} | "
                   f"{'' if tau is None else f'{tau:+.3f}'} | {'' if rho is None else f'{rho:+.3f}'} | "
                   f"{job.get('wall_s', 0) / 60:.1f} | {cpu} | {passes} | "
                   f"{'' if curve is None else f'{curve / 60:.1f}'} | {len(job.get('extra', {}).get('warnings', []))} |")
    return out


if __name__ == "__main__":
    print("| job | commit | status | Kendall tau | Spearman | wall min | CPU min | fwd + bwd passes / image | "
          "curve min | warnings |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for arg in sys.argv[1:]:
        print("\n".join(rows(Path(arg))))
