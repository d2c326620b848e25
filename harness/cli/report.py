"""`harness report RUN` (report.html and report.pdf) and `harness compare RUN_A RUN_B`."""
from __future__ import annotations

from pathlib import Path

from harness.check import print_paired_compare
from harness.report import compare_runs, write_report


def cmd_report(args) -> int:
    write_report(Path(args.run_dir), embed_figures=not args.link_figures)
    return 0


def cmd_compare(args) -> int:
    rc = compare_runs(Path(args.run_a), Path(args.run_b), args.out)
    print_paired_compare(Path(args.run_a), Path(args.run_b))
    return rc


def add_parser(subparsers) -> None:
    rep = subparsers.add_parser("report", help="write report.html and report.pdf for a run folder")
    rep.add_argument("run_dir")
    rep.add_argument("--link-figures", action="store_true",
                     help="reference figures/*.png instead of embedding them (small report.html, e.g. to commit)")
    rep.set_defaults(fn=cmd_report)

    cmp_ = subparsers.add_parser("compare", help="report metric differences between two runs (and a paired tau test per method)")
    cmp_.add_argument("run_a")
    cmp_.add_argument("run_b")
    cmp_.add_argument("--out", default=None)
    cmp_.set_defaults(fn=cmd_compare)
