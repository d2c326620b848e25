"""`harness merge RUN [SRC ...]`: finished jobs of other run folders of the same study (shards) join
RUN, whose run-level files are recomputed (``harness.study.merge``)."""
from __future__ import annotations

from pathlib import Path

from harness.report import write_report
from harness.study.merge import merge_runs


def cmd_merge(args) -> int:
    merge_runs(Path(args.run_dir), [Path(s) for s in args.sources], data_dir=args.data_dir)
    if args.report:
        html = write_report(Path(args.run_dir), embed_figures=not args.link_figures, pdf=None)
        print(f"written: {html}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("merge", help="bring finished jobs of other run folders of the same study into a run "
                                            "folder and recompute its metrics, summary, curves and paired tests")
    p.add_argument("run_dir", help="the run folder to complete (not one whose harness run is still going)")
    p.add_argument("sources", nargs="*", help="run folders of the same study (methods and seeds aside); none: "
                                              "recompute RUN from its own job folders")
    p.add_argument("--data-dir", default=None, help="where the ground truth is (default: HARNESS_DATA_DIR)")
    p.add_argument("--report", action="store_true", help="write report.html/pdf afterwards")
    p.add_argument("--link-figures", action="store_true", help="with --report: link figures instead of embedding")
    p.set_defaults(fn=cmd_merge)
