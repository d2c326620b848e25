"""The `harness` command: run, list, report, check, compare, gt, bench.

User errors (``HarnessError``) print one line and exit 2; other exceptions are bugs and raise.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from harness.errors import ConfigError, HarnessError


def _csv_list(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in _csv_list(text))
    except ValueError:
        raise ConfigError(f"malformed --seeds '{text}': give comma-separated integers, e.g. --seeds 0,1,2") from None


def _overrides(items: list[str]) -> tuple[tuple[str, object], ...]:
    out = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"malformed --set '{item}': use FIELD=VALUE, e.g. --set epochs=1")
        for conv in (int, float):
            try:
                value = conv(value)
                break
            except ValueError:
                continue
        else:
            value = {"true": True, "false": False}.get(value.lower(), value)
        out.append((key.strip(), value))
    return tuple(out)


def cmd_run(args) -> int:
    from harness.runner import DEFAULT_METHODS, RunConfig, run

    if args.executor == "local" and args.ray_address:
        raise ConfigError("--ray-address needs --executor ray")
    cfg = RunConfig(
        suite=args.suite, methods=_csv_list(args.methods) if args.methods else DEFAULT_METHODS,
        seeds=_seeds(args.seeds), budget=args.budget, archs=args.archs,
        gt=_csv_list(args.gt) if args.gt else None, out=args.out, data_dir=args.data_dir, gt_file=args.gt_file,
        device=args.device or _auto_device(), precision=args.precision, executor=args.executor, jobs=args.jobs,
        progress=not args.no_progress, report=not args.no_report, budget_overrides=_overrides(args.set),
        copy_isomorphic=args.copy_isomorphic, max_retries=args.max_retries,
        compare=tuple(_csv_list(args.compare)) if args.compare else (),
        **({"ray_address": args.ray_address} if args.ray_address and _has_field("ray_address") else {}),
    )
    run_dir = run(cfg)
    # 0: every job done; 1: the run finished (its folder is complete) but some job failed or collapsed
    jobs = json.loads((run_dir / "manifest.json").read_text()).get("jobs", {})
    bad = sorted(name for name, r in jobs.items() if r.get("status") != "done")
    if bad:
        print(f"harness: {len(bad)} of {len(jobs)} job(s) did not finish: {', '.join(bad)} (see the run folder)",
              file=sys.stderr)
        return 1
    return 0


def _has_field(name: str) -> bool:
    import dataclasses

    from harness.runner import RunConfig

    return name in {f.name for f in dataclasses.fields(RunConfig)}


def _auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cmd_list(args) -> int:
    from harness.budgets import BUDGETS
    from harness.groundtruth import NB201_COLUMNS
    from harness.suites import SUITES
    from methods.base import method_names

    print("suites:  " + ", ".join(sorted(SUITES)))
    print("methods: " + ", ".join(method_names()))
    print("budgets:")
    for b in BUDGETS.values():
        print(f"  {b.name:<7} {b.note}")
    print("ground-truth columns (nb201): " + ", ".join(NB201_COLUMNS))
    return 0


def _optional(module: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise HarnessError(f"`harness {what}` is not available in this build ({exc})") from None


def cmd_report(args) -> int:
    _optional("harness.report", "report").write_report(Path(args.run_dir), embed_figures=not args.link_figures)
    return 0


def cmd_check(args) -> int:
    return _optional("harness.check", "check").main(args)


def cmd_compare(args) -> int:
    rc = _optional("harness.report", "compare").compare_runs(Path(args.run_a), Path(args.run_b), args.out)
    _optional("harness.check", "compare").print_paired_compare(Path(args.run_a), Path(args.run_b))
    return rc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description="Benchmark how well weight-sharing supernets rank architectures.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="train and score methods over seeds; write a run folder")
    r.add_argument("--suite", default="nb201")
    r.add_argument("--methods", default=None, help="comma list (default: spos,params,flops,random)")
    r.add_argument("--seeds", default="0,1,2")
    r.add_argument("--budget", default="smoke")
    r.add_argument("--archs", default=None, help="all | unique | sample:N | file:PATH | a space subset")
    r.add_argument("--gt", default=None, help="comma list of ground-truth columns")
    r.add_argument("--gt-file", default=None)
    r.add_argument("--out", default=None)
    r.add_argument("--data-dir", default=None)
    r.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    r.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    r.add_argument("--executor", default="local")
    r.add_argument("--ray-address", default=None, help="with --executor ray: an existing cluster (auto, ray://HOST:10001)")
    r.add_argument("--max-retries", type=int, default=2,
                   help="with --executor ray: resubmit a crashed/preempted job up to N times (resumes from its checkpoint)")
    r.add_argument("--copy-isomorphic", action="store_true",
                   help="score one architecture per isomorphism class and copy its score to the others (labelled "
                        "in the manifest; isomorphic cells have different supernet weights)")
    r.add_argument("--jobs", type=int, default=1)
    r.add_argument("--compare", default=None, metavar="A:B[,C:D]",
                   help="extra method pairs for the paired tau test (every method is compared with spos and params)")
    r.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a budget field (recorded)")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--no-report", action="store_true")
    r.set_defaults(fn=cmd_run)

    sub.add_parser("list", help="registered suites, methods, budgets, gt columns").set_defaults(fn=cmd_list)

    rep = sub.add_parser("report", help="write report.html and report.pdf for a run folder")
    rep.add_argument("run_dir")
    rep.add_argument("--link-figures", action="store_true",
                     help="reference figures/*.png instead of embedding them (small report.html, e.g. to commit)")
    rep.set_defaults(fn=cmd_report)

    c = sub.add_parser("check", help="CI gates: thresholds on a run's metrics")
    c.add_argument("run_dir")
    c.add_argument("--thresholds", required=True)
    c.add_argument("--baseline", default=None)
    c.set_defaults(fn=cmd_check)

    cmp_ = sub.add_parser("compare", help="report metric differences between two runs (and a paired tau test per method)")
    cmp_.add_argument("run_a")
    cmp_.add_argument("run_b")
    cmp_.add_argument("--out", default=None)
    cmp_.set_defaults(fn=cmd_compare)

    # optional subcommands contributed by other modules: harness/cli_<name>.py exposing add_parser(sub)
    for name in ("gt", "bench"):
        try:
            importlib.import_module(f"harness.cli_{name}").add_parser(sub)
        except ImportError:
            pass
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


if __name__ == "__main__":
    sys.exit(main())
