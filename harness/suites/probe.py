"""The probe suites (``resnet-probe13``, ``mobilenet-probe13``): a fixed list of 13 architectures
whose ground truth the harness trains standalone, and the committed GT table that goes with it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from harness.budgets import BUDGETS, Budget
from harness.core.errors import DataError
from harness.core.io import atomic_write_text
from harness.core.paths import SUITES_DATA, default_cache_dir
from harness.core.seeding import numpy_rng
from harness.groundtruth.standalone import PROBE_SEEDS, StandaloneCache
from harness.groundtruth.table import STANDALONE, TableGroundTruth, format_noise, gt_table
from harness.spaces.base import Arch, NetConfig, SearchSpace
from harness.spaces.mobilenet_probe import BUDGET_SHAPES as MOBILENET_SHAPES
from harness.spaces.mobilenet_probe import CHOICES, IDENTITY, MobileNetProbeSpace
from harness.spaces.resnet_probe import BLOCK_NAMES, ResNetProbeSpace, shaped_budget
from harness.spaces.resnet_probe import BUDGET_SHAPES as RESNET_SHAPES
from harness.suites.base import Suite, register_suite

# --- the probe suites -------------------------------------------------------------------
def probe_list_path(suite: str, ext: str = "csv") -> Path:
    return SUITES_DATA / f"{suite}.{ext}"


def committed_gt_path(suite: str) -> Path:
    return SUITES_DATA / f"{suite}-gt.csv"


def load_probe_archs(suite: str, space: SearchSpace) -> list[Arch]:
    path = probe_list_path(suite)
    if not path.is_file():
        raise DataError(f"probe architecture list {path} is missing (write it with "
                        f"`python -m harness.suites.probe --write-lists`)")
    table = pd.read_csv(path, comment="#")
    return [space.parse(a) for a in table["arch"]]


def load_committed_gt(suite: str, space: SearchSpace) -> TableGroundTruth:
    """The suite's committed GT table (the harness's own output, versioned with the probe list)."""
    path = committed_gt_path(suite)
    gt = TableGroundTruth.from_csv(path, space)
    b = gt.meta.get("budget", {})
    gt.source = (f"committed table harness/suites_data/{path.name} (standalone, budget {b.get('name', '?')}: "
                 f"C={b.get('channels', '?')}, {b.get('resolution', '?')}px, {b.get('standalone_epochs', '?')} "
                 f"epochs; seeds {gt.noise['seeds']})")
    return gt


def probe_ground_truth(suite: str, space: SearchSpace, budget: Budget, data_dir: Path | None,
                       gt_file: Path | None, cache_dir: Path, device: str = "cpu",
                       say: Callable[[str], None] = print) -> TableGroundTruth:
    """``--gt-file`` if given; else the committed GT table; else the standalone cache at ``budget``
    (training the missing results, and saying so)."""
    if gt_file is not None:
        return TableGroundTruth.from_csv(Path(gt_file), space)
    committed = committed_gt_path(suite)
    if committed.is_file():
        gt = load_committed_gt(suite, space)
        say(f"ground truth: {gt.source}; {format_noise(gt.noise)}")
        return gt
    archs = load_probe_archs(suite, space)
    cache = StandaloneCache(space, budget, cache_dir, str(data_dir) if data_dir else None, device, say)
    if cache.missing(archs, PROBE_SEEDS):
        say(f"ground truth: no committed GT for {suite}; building the standalone GT at budget {budget.name} "
            f"(cached; `harness gt --suite {suite} --budget {budget.name}` builds it ahead)")
    table = gt_table(cache.build(archs, PROBE_SEEDS))
    return TableGroundTruth(table, space, f"standalone cache ({budget.name}, seeds {list(PROBE_SEEDS)})",
                            {"budget": dataclasses.asdict(budget)})


def cached_probe_ground_truth(suite: str, space: SearchSpace, gt_file: Path | None, cache_dir: Path | None,
                              shape_budget: Callable[[Budget], Budget]) -> TableGroundTruth:
    """A probe GT without a budget: ``--gt-file``, the committed table, else the first of the named
    budgets whose GT is fully cached. Never trains."""
    if gt_file is not None:
        return TableGroundTruth.from_csv(Path(gt_file), space)
    if committed_gt_path(suite).is_file():
        return load_committed_gt(suite, space)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    archs = load_probe_archs(suite, space)
    for b in BUDGETS.values():
        budget = shape_budget(b)
        cache = StandaloneCache(space, budget, cache_dir, None, say=lambda m: None)
        if not cache.missing(archs, PROBE_SEEDS):
            return TableGroundTruth(gt_table(cache.build(archs, PROBE_SEEDS)), space,
                                    f"standalone cache ({budget.name}, seeds {list(PROBE_SEEDS)})")
    raise DataError(f"no committed or cached standalone GT for {suite} in {cache_dir / 'standalone'}; "
                    f"build it with `harness gt --suite {suite} --budget smoke`")

# --- choosing the 13 probe architectures ------------------------------------------------
def op_param_counts(space: SearchSpace, cfg) -> tuple[int, dict[tuple[int, int], int]]:
    """(parameters outside candidate ops, {(decision, choice): parameters of that candidate})."""
    per: dict[tuple[int, int], int] = {}

    def factory(spec):
        op = space.default_op(spec)
        per[(spec.decision, spec.choice)] = sum(p.numel() for p in op.parameters())
        return op

    net = space.build_supernet(cfg, factory)
    total = sum(p.numel() for p in net.parameters())
    return total - sum(per.values()), per


def arch_params(fixed: int, per: dict, arch: Arch) -> int:
    return fixed + sum(per.get((i, a), 0) for i, a in enumerate(arch))


def choose_probe_archs(space: SearchSpace, uniform: Sequence[tuple[str, Arch]], n_total: int = 13,
                       seed: int = 0, draws: int = 2000) -> pd.DataFrame:
    """The fixed probe set: the given "all the same block" archs, then random archs spread over
    parameter count (at the paper's widths): ``draws`` seeded uniform samples, sorted by parameters,
    one taken at each of ``n_total - len(uniform)`` evenly spaced quantiles."""
    shapes = getattr(space, "budget_shapes", {})
    paper = NetConfig(channels=shapes.get("paper", {}).get("channels", 16))
    smoke = NetConfig(channels=shapes.get("smoke", {}).get("channels", 8))
    fixed_p, per_p = op_param_counts(space, paper)
    fixed_s, per_s = op_param_counts(space, smoke)
    rows = [{"arch": space.format(a), "chosen_by": how} for how, a in uniform]
    rng = numpy_rng("probe13", space.name, seed)
    pool = list(dict.fromkeys(space.sample(rng) for _ in range(draws)))
    pool = [a for a in pool if space.format(a) not in {r["arch"] for r in rows}]
    pool.sort(key=lambda a: arch_params(fixed_p, per_p, a))
    k = n_total - len(rows)
    for j in range(k):
        q = (j + 0.5) / k
        a = pool[min(len(pool) - 1, int(q * len(pool)))]
        rows.append({"arch": space.format(a), "chosen_by": f"random: params quantile {q:.3f} of {len(pool)} "
                                                            f"seeded draws (numpy_rng('probe13', '{space.name}', {seed}))"})
    for r in rows:
        a = space.parse(r["arch"])
        r["params_paper"] = arch_params(fixed_p, per_p, a)
        r["params_smoke"] = arch_params(fixed_s, per_s, a)
    df = pd.DataFrame(rows)
    df.insert(0, "idx", range(len(df)))
    return df[["idx", "arch", "params_paper", "params_smoke", "chosen_by"]]


def write_probe_lists() -> None:
    rs = ResNetProbeSpace()
    r_uniform = [(f"uniform: all {name}", (i,) * len(rs.decisions)) for i, name in enumerate(BLOCK_NAMES)]
    ms = MobileNetProbeSpace()
    n = len(ms.decisions)
    m_uniform = [(f"uniform: all {c.name}", (i,) * n) for i, c in enumerate(CHOICES) if i != IDENTITY]
    m_uniform.append(("uniform: identity wherever allowed (k3e3 in each stage's first layer)",
                      tuple(IDENTITY if IDENTITY in ms.allowed_choices(d) else 0 for d in range(n))))
    for suite, space, uniform in (("resnet-probe13", rs, r_uniform), ("mobilenet-probe13", ms, m_uniform)):
        df = choose_probe_archs(space, uniform)
        header = (f"# {suite}: the 13 probe architectures (version 1; changing this list is a versioned change).\n"
                  f"# Chosen by harness.suites.probe.choose_probe_archs: the 'all the same block' architectures,\n"
                  f"# then seeded random architectures spread over parameter count (paper widths).\n")
        atomic_write_text(probe_list_path(suite), header + df.to_csv(index=False))
        atomic_write_text(probe_list_path(suite, "txt"), header + "\n".join(df["arch"]) + "\n")

def probe_suite(name: str, make_space: Callable[[], SearchSpace], budget_shapes: dict[str, dict],
                description: str) -> Suite:
    """A probe suite: a fixed list of 13 architectures whose GT the harness trains standalone."""

    def shape_budget(budget: Budget) -> Budget:
        b = shaped_budget(budget, budget_shapes)
        # the scored set is the suite's committed list; the note (regenerated) names the suite's shapes
        return b.replace(archs=f"file:{probe_list_path(name, 'txt')}", purpose=f"{name} at {b.name}")

    def load_gt(space, *, data_dir=None, gt_file=None, budget=None, cache_dir=None, device="cpu", say=print):
        """With a budget: that budget's GT (built when missing). Without (callers that know no
        budget, e.g. a report): the committed GT, else the first fully cached budget; never trains."""
        if budget is None:
            return cached_probe_ground_truth(name, space, gt_file, cache_dir, shape_budget)
        return probe_ground_truth(name, space, budget, data_dir, gt_file, cache_dir, device, say)

    return Suite(name=name, make_space=make_space, load_gt=load_gt, default_gt=(STANDALONE,),
                 description=description, shape_budget=shape_budget, standalone_gt=True)


register_suite(probe_suite(
    "resnet-probe13", ResNetProbeSpace, RESNET_SHAPES,
    "Pi-NAS ResNet-50-style Split-Attention space (4^16), 13 probe archs, harness-trained standalone GT"))
register_suite(probe_suite(
    "mobilenet-probe13", MobileNetProbeSpace, MOBILENET_SHAPES,
    "SE-NAS/ProxylessNAS MobileNet-like space (7^21), 13 probe archs, harness-trained standalone GT"))


if __name__ == "__main__":  # pragma: no cover
    import sys

    if sys.argv[1:] == ["--write-lists"]:
        write_probe_lists()
        print(f"wrote {probe_list_path('resnet-probe13')} and {probe_list_path('mobilenet-probe13')}")
    else:
        print("usage: python -m harness.suites.probe --write-lists")

