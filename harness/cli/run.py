"""`harness run`: train and score methods over seeds; write (or resume) a run folder.

``--study FILE`` reads the study from a file (``study.toml``; every run folder holds the one that
reproduces it); flags given on the command line override the file's values, ``--set`` key by key.

Exit codes: 0 every job done; 1 the run finished (its folder is complete and says which) but some
job failed or collapsed; 2 usage, config or data errors (one line, nothing written).
"""
from __future__ import annotations

import argparse
import json
import sys

from harness.cli.common import auto_device, csv_list, parse_overrides, parse_seeds
from harness.core.errors import ConfigError
from harness.report import write_report
from harness.study.spec import PRECISIONS, config_from_study, read_study, study_source
from harness.study.runner import run


def _gt(text: str) -> tuple[str, ...] | None:
    return csv_list(text) or None


# argparse dest -> (RunConfig field, parse); every one defaults to None, so "given" means "on the command line"
FLAGS = {
    "suite": ("suite", str), "dataset": ("dataset", str), "methods": ("methods", csv_list), "seeds": ("seeds", parse_seeds),
    "budget": ("budget", str), "archs": ("archs", str), "arch_seed": ("arch_seed", int), "gt": ("gt", _gt),
    "gt_file": ("gt_file", str), "out": ("out", str), "data_dir": ("data_dir", str), "device": ("device", str),
    "precision": ("precision", str), "executor": ("executor", str), "ray_address": ("ray_address", str),
    "max_retries": ("max_retries", int), "copy_isomorphic": ("copy_isomorphic", bool), "jobs": ("jobs", int),
    "compare": ("compare", csv_list), "set": ("budget_overrides", parse_overrides),
    "progress": ("progress", bool), "report": ("report", bool),
}


def given_flags(args) -> dict:
    """The RunConfig fields set by flags on the command line (parsed), and only those."""
    return {field: parse(getattr(args, dest)) for dest, (field, parse) in FLAGS.items()
            if getattr(args, dest) is not None}


def cmd_run(args) -> int:
    given = given_flags(args)
    values = read_study(args.study) if args.study else {}
    cfg = config_from_study(values, given, defaults={"device": auto_device()})
    if cfg.executor == "local" and cfg.ray_address:
        raise ConfigError("--ray-address needs --executor ray")
    source = study_source(args.study, values, given) if args.study else None
    run_dir = run(cfg, report_writer=write_report, study_file=source)
    # 0: every job done; 1: the run finished (its folder is complete) but some job failed or collapsed
    jobs = json.loads((run_dir / "manifest.json").read_text()).get("jobs", {})
    bad = sorted(name for name, r in jobs.items() if r.get("status") != "done")
    if bad:
        print(f"harness: {len(bad)} of {len(jobs)} job(s) did not finish: {', '.join(bad)} (see the run folder)",
              file=sys.stderr)
        return 1
    return 0


def add_parser(subparsers) -> None:
    r = subparsers.add_parser("run", help="train and score methods over seeds; write a run folder")
    r.add_argument("--study", default=None, metavar="FILE",
                   help="read the study from a TOML file (e.g. a run folder's study.toml); flags given here override it")
    r.add_argument("--suite", default=None, help="default: nb201")
    r.add_argument("--dataset", default=None,
                   help="what the supernet trains on: cifar10 (default), cifar100 or imagenet16-120 (the nb201 "
                        "suite; the default ground-truth column follows it); see data/README.md")
    r.add_argument("--methods", default=None, help="comma list (default: spos,params,flops,random)")
    r.add_argument("--seeds", default=None, help="comma list (default: 0,1,2)")
    r.add_argument("--budget", default=None, help="default: smoke")
    r.add_argument("--archs", default=None, help="all | unique | sample:N | file:PATH | a space subset")
    r.add_argument("--arch-seed", type=int, default=None, help="seed of sample:N (default: 0)")
    r.add_argument("--gt", default=None, help="comma list of ground-truth columns")
    r.add_argument("--gt-file", default=None)
    r.add_argument("--out", default=None)
    r.add_argument("--data-dir", default=None)
    r.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    r.add_argument("--precision", default=None, choices=list(PRECISIONS), help="default: fp32")
    r.add_argument("--executor", default=None, help="default: local")
    r.add_argument("--ray-address", default=None, help="with --executor ray: an existing cluster (auto, ray://HOST:10001)")
    r.add_argument("--max-retries", type=int, default=None,
                   help="with --executor ray: resubmit a crashed/preempted job up to N times (resumes from its "
                        "checkpoint; default: 2)")
    r.add_argument("--copy-isomorphic", action=argparse.BooleanOptionalAction, default=None,
                   help="score one architecture per isomorphism class and copy its score to the others (labelled "
                        "in the manifest; isomorphic cells have different supernet weights)")
    r.add_argument("--jobs", type=int, default=None, help="local worker processes (default: 1)")
    r.add_argument("--compare", default=None, metavar="A:B[,C:D]",
                   help="extra method pairs for the paired tau test (every method is compared with spos and params)")
    r.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a budget field (recorded)")
    r.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="default: on")
    r.add_argument("--report", action=argparse.BooleanOptionalAction, default=None,
                   help="write report.html/pdf at the end (default: on)")
    r.set_defaults(fn=cmd_run)
