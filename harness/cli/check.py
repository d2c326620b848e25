"""`harness check RUN --thresholds FILE [--baseline RUN]`: CI gates on a run's metrics (no plotting)."""
from __future__ import annotations

from harness import check


def cmd_check(args) -> int:
    return check.main(args)


def add_parser(subparsers) -> None:
    c = subparsers.add_parser("check", help="CI gates: thresholds on a run's metrics")
    c.add_argument("run_dir")
    c.add_argument("--thresholds", required=True)
    c.add_argument("--baseline", default=None)
    c.add_argument("--exact", action="store_true",
                   help="also require metrics.csv to equal the baseline's value for value (where the baseline "
                        "was made on the same CPU model and torch build; skipped, and said, elsewhere)")
    c.add_argument("--exact-also", nargs="+", default=None, metavar="DIR",
                   help="with --exact: the same baseline made on other platforms; the first whose CPU model "
                        "and torch build are this run's is compared (the thresholds still use --baseline)")
    c.set_defaults(fn=cmd_check)
