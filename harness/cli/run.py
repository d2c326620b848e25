"""`harness run`: train and score methods over seeds; write (or resume) a run folder.

Exit codes: 0 every job done; 1 the run finished (its folder is complete and says which) but some
job failed or collapsed; 2 usage, config or data errors (one line, nothing written).
"""
from __future__ import annotations

import json
import sys

from harness.cli.common import auto_device, csv_list, parse_overrides, parse_seeds
from harness.core.errors import ConfigError
from harness.report import write_report
from harness.study.runner import DEFAULT_METHODS, RunConfig, run


def cmd_run(args) -> int:

    if args.executor == "local" and args.ray_address:
        raise ConfigError("--ray-address needs --executor ray")
    cfg = RunConfig(
        suite=args.suite, methods=csv_list(args.methods) if args.methods else DEFAULT_METHODS,
        seeds=parse_seeds(args.seeds), budget=args.budget, archs=args.archs,
        gt=csv_list(args.gt) if args.gt else None, out=args.out, data_dir=args.data_dir, gt_file=args.gt_file,
        device=args.device or auto_device(), precision=args.precision, executor=args.executor, jobs=args.jobs,
        progress=not args.no_progress, report=not args.no_report, budget_overrides=parse_overrides(args.set),
        copy_isomorphic=args.copy_isomorphic, max_retries=args.max_retries,
        compare=tuple(csv_list(args.compare)) if args.compare else (),
        ray_address=args.ray_address,
    )
    run_dir = run(cfg, report_writer=write_report)
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
