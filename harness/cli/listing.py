"""`harness list`: registered suites (and their data sets), methods, budgets and ground-truth columns."""
from __future__ import annotations

from harness.budgets import BUDGETS
from harness.engine.method import method_names
from harness.groundtruth.base import NATS_ONLY_COLUMNS, NB201_COLUMNS
from harness.suites import SUITES


def cmd_list(args) -> int:
    print("suites:  " + ", ".join(sorted(SUITES)))
    print("data sets (--dataset): " + "; ".join(f"{n}: {', '.join(SUITES.get(n).datasets)}" for n in sorted(SUITES)))
    print("methods: " + ", ".join(method_names()))
    print("budgets:")
    for b in BUDGETS.values():
        print(f"  {b.name:<7} {b.note}")
    print("ground-truth columns (nb201): " + ", ".join(NB201_COLUMNS))
    print("  with the NATS-Bench file (--gt-file) also: " + ", ".join(NATS_ONLY_COLUMNS))
    return 0


def add_parser(subparsers) -> None:
    subparsers.add_parser("list", help="registered suites, methods, budgets, gt columns").set_defaults(fn=cmd_list)
