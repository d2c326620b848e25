"""The `harness` command: one module per subcommand (run, merge, list, report + compare, check, gt, bench),
each exposing ``add_parser(subparsers)``.

User errors (``HarnessError``) print one line and exit 2; other exceptions are bugs and raise.
"""
from __future__ import annotations

import argparse
import sys

from harness.cli import bench, check, gt, listing, merge, report, run
from harness.core.errors import HarnessError

COMMANDS = (run, merge, listing, report, check, gt, bench)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description="Benchmark how well weight-sharing supernets rank architectures.")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except HarnessError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
