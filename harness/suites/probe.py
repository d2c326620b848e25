"""The probe suites' architecture lists (``resnet-probe13``, ``mobilenet-probe13``): how the 13
architectures were chosen, and the tool that writes the committed lists.

The suites themselves are data (``harness/suites_data/<suite>.toml``); their ground truth is the
``standalone-probe`` provider (``harness.groundtruth.providers``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from harness.core.errors import DataError
from harness.core.io import atomic_write_text
from harness.core.paths import SUITES_DATA
from harness.core.seeding import numpy_rng
from harness.spaces.base import Arch, NetConfig, SearchSpace
from harness.spaces.mobilenet_probe import CHOICES, IDENTITY, MobileNetProbeSpace
from harness.spaces.resnet_probe import BLOCK_NAMES, ResNetProbeSpace
from harness.suites.base import get_suite


def probe_list_path(suite: str, ext: str = "csv") -> Path:
    """The committed list: ``<suite>.csv`` (encodings, parameters, how each was chosen) or ``.txt``."""
    return SUITES_DATA / f"{suite}.{ext}"


def load_probe_archs(suite: str, space: SearchSpace) -> list[Arch]:
    """The architectures of the committed ``<suite>.csv`` (the ``.txt`` the suite scores lists the same)."""
    path = probe_list_path(suite)
    if not path.is_file():
        raise DataError(f"probe architecture list {path} is missing (write it with "
                        f"`python -m harness.suites.probe --write-lists`)")
    table = pd.read_csv(path, comment="#")
    return [space.parse(a) for a in table["arch"]]


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
                       seed: int = 0, draws: int = 2000,
                       shapes: Mapping[str, Mapping[str, object]] | None = None) -> pd.DataFrame:
    """The fixed probe set: the given "all the same block" archs, then random archs spread over
    parameter count (at the paper's widths): ``draws`` seeded uniform samples, sorted by parameters,
    one taken at each of ``n_total - len(uniform)`` evenly spaced quantiles. ``shapes``: the suite's
    per-budget shapes (its TOML's [budgets.*]), whose `paper` and `smoke` widths count parameters."""
    shapes = shapes or {}
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
        df = choose_probe_archs(space, uniform, shapes=get_suite(suite).shapes)
        header = (f"# {suite}: the 13 probe architectures (version 1; changing this list is a versioned change).\n"
                  f"# Chosen by harness.suites.probe.choose_probe_archs: the 'all the same block' architectures,\n"
                  f"# then seeded random architectures spread over parameter count (paper widths).\n")
        atomic_write_text(probe_list_path(suite), header + df.to_csv(index=False))
        atomic_write_text(probe_list_path(suite, "txt"), header + "\n".join(df["arch"]) + "\n")


if __name__ == "__main__":  # pragma: no cover
    import sys

    if sys.argv[1:] == ["--write-lists"]:
        write_probe_lists()
        print(f"wrote {probe_list_path('resnet-probe13')} and {probe_list_path('mobilenet-probe13')}")
    else:
        print("usage: python -m harness.suites.probe --write-lists")

