"""`harness report RUN` (report.html and report.pdf) and `harness compare RUN_A RUN_B`."""
from __future__ import annotations

from pathlib import Path

from harness.report import compare_runs, write_report


def _pdf_choice(args) -> bool | None:
    return False if args.no_pdf else True if args.pdf else None


def cmd_report(args) -> int:
    html = write_report(Path(args.run_dir), embed_figures=not args.link_figures, pdf=_pdf_choice(args))
    pdf = html.with_name("report.pdf")
    print(f"written: {html}" + (f", {pdf}" if pdf.is_file() and pdf.stat().st_mtime >= html.stat().st_mtime else ""))
    return 0


def cmd_compare(args) -> int:
    return compare_runs(Path(args.run_a), Path(args.run_b), args.out, thresholds=args.thresholds,
                        pdf=_pdf_choice(args))


def _pdf_flags(p) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--pdf", action="store_true",
                   help="require the PDF: fail (exit 2, one line) when headless Chromium is not installed "
                        "(default: print it when Chromium is there, else say why not)")
    g.add_argument("--no-pdf", action="store_true", help="write the HTML only")


def add_parser(subparsers) -> None:
    rep = subparsers.add_parser("report", help="write report.html and report.pdf (the same document) for a run folder")
    rep.add_argument("run_dir")
    rep.add_argument("--link-figures", action="store_true",
                     help="reference figures/*.png instead of embedding them (small report.html, e.g. to commit)")
    _pdf_flags(rep)
    rep.set_defaults(fn=cmd_report)

    cmp_ = subparsers.add_parser("compare", help="compare two runs: metric differences, a paired tau test per method "
                                                 "and (with --thresholds) the harness check gates that change")
    cmp_.add_argument("run_a")
    cmp_.add_argument("run_b")
    cmp_.add_argument("--out", default=None, help="folder for compare.html/.pdf/.csv (default: RUN_B/compare-<A>)")
    cmp_.add_argument("--thresholds", default=None,
                      help="a `harness check` thresholds file: show which gates pass in one run and fail in the other")
    _pdf_flags(cmp_)
    cmp_.set_defaults(fn=cmd_compare)
