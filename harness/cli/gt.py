"""`harness gt`: build (or load from cache) a suite's standalone ground truth and report its noise.

    harness gt --suite resnet-probe13 --budget smoke --seeds 0,1
    harness gt --suite nb201 --budget smoke --archs sample:50 --seeds 0

Trains every (architecture, seed) missing from ``HARNESS_CACHE_DIR/standalone`` and writes the GT
table (``arch, standalone, standalone_std, standalone_s<seed>..., params``) with a manifest beside
it; ``--commit`` writes the probe suite's committed table (its TOML's ``gt_table``,
``harness/suites_data/<suite>-gt.csv`` for the built-in ones).
"""
from __future__ import annotations

import dataclasses
import os
import platform
import time
from pathlib import Path

import harness
from harness.archsets import resolve_archs
from harness.cli.common import parse_overrides, parse_seeds
from harness.core.errors import ConfigError
from harness.core.paths import default_cache_dir, default_data_dir
from harness.core.provenance import git_commit, utc_now
from harness.groundtruth.providers import suite_archs
from harness.groundtruth.standalone import StandaloneCache
from harness.groundtruth.table import format_noise, gt_noise, gt_table, write_gt_csv
from harness.suites import get_suite


def check_seeds(seeds) -> tuple[int, ...]:
    seeds = tuple(int(s) for s in seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {seeds}: give distinct seeds, e.g. --seeds 0,1")
    return seeds


def cmd_gt(args) -> int:
    import torch


    suite = get_suite(args.suite)
    space = suite.make_space()
    budget = suite.budget(args.budget, parse_overrides(args.set))
    seeds = check_seeds(parse_seeds(args.seeds))
    if suite.standalone_gt:
        if args.archs:
            raise ConfigError(f"--archs: suite {args.suite} has a fixed probe list; drop --archs")
        archs = suite_archs(suite, space)
    else:
        archs = resolve_archs(space, args.archs or "sample:50", 0)
    data_dir = args.data_dir or (str(default_data_dir()) if default_data_dir() else None)
    cache_dir = Path(default_cache_dir())
    if args.threads:
        budget = budget.replace(threads=args.threads)
    cache = StandaloneCache(space, budget, cache_dir, data_dir, args.device,
                            say=lambda m: print(m, flush=True))
    t0 = time.perf_counter()
    started = utc_now()
    results = cache.build(archs, seeds)
    wall = time.perf_counter() - t0
    table = gt_table(results)
    noise = gt_noise(table)
    if args.commit:
        if not suite.standalone_gt:
            raise ConfigError("--commit is for probe suites (their committed GT table)")
        if suite.gt_table is None:
            raise ConfigError(f"--commit: suite {args.suite} names no committed table; add gt_table = "
                              f"\"{args.suite}-gt.csv\" to {suite.source or 'its TOML'}")
        out = Path(suite.gt_table)
    elif args.out:
        out = Path(args.out)
    else:
        out = cache_dir / "standalone" / f"{args.suite}-{budget.name}-gt.csv"
    manifest = {
        "what": f"standalone ground truth of {args.suite} ({len(archs)} archs x seeds {list(seeds)})",
        "harness_version": harness.__version__, "git_commit": git_commit(), "suite": args.suite,
        "space": space.name, "model_version": getattr(space, "model_version", 1),
        "budget": dataclasses.asdict(budget), "seeds": list(seeds), "eval_set": "cifar10-test (10,000 images)",
        "noise": noise, "trained_now": cache.trained, "wall_s": wall,
        "train_wall_s_total": float(results["wall_s"].sum()),
        # process CPU seconds: on a shared, oversubscribed machine they estimate the uncontended cost
        "train_cpu_s_total": float(results["cpu_s"].sum(min_count=1)), "started": started, "ended": utc_now(),
        "platform": {"python": platform.python_version(), "machine": platform.platform(),
                     "torch": torch.__version__, "cpus": os.cpu_count(), "threads": budget.threads,
                     "load_avg_1min_at_end": os.getloadavg()[0]},
        "command": "harness gt " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                                            if k not in ("fn", "command") and v not in (None, False, [])),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_gt_csv(out, table, manifest)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(format_noise(noise))
    print(f"{len(results)} results ({cache.trained} trained now) in {wall:.0f} s; sum over results: "
          f"{results['wall_s'].sum():.0f} s wall, {results['cpu_s'].sum(min_count=1):.0f} s CPU")
    print(f"wrote {out} and {out.with_suffix('.manifest.json').name}")
    return 0


def add_parser(subparsers) -> None:
    g = subparsers.add_parser("gt", help="build a suite's standalone ground truth (cached) and report its noise")
    g.add_argument("--suite", required=True)
    g.add_argument("--budget", default="smoke")
    g.add_argument("--seeds", default="0,1")
    g.add_argument("--archs", default=None, help="NB201 only (default sample:50); probe suites use their list")
    g.add_argument("--data-dir", default=None)
    g.add_argument("--device", default="cpu")
    g.add_argument("--threads", type=int, default=None, help="torch threads (default: the budget's)")
    g.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a budget field")
    g.add_argument("--out", default=None, help="GT table path (default: in the cache dir)")
    g.add_argument("--commit", action="store_true", help="write the probe suite's committed GT table")
    g.set_defaults(fn=cmd_gt)
