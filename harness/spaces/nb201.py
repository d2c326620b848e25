"""NAS-Bench-201 / NATS-Bench topology space: a 4-node cell, 6 edges, 5 operators per edge.

The network follows the benchmark: 3x3 stem, three stages of N cells with C, 2C, 4C channels,
residual reduction blocks between stages, BN-ReLU, global pool, linear head. One class builds the
supernet (every operator on every edge) and standalone networks (only the chosen ones) with the
same parameter names, so supernet weights load into a standalone network with ``strict=False``.
"""
from __future__ import annotations

import functools
import re
from importlib import resources

import torch
from torch import nn

from harness.errors import ArchError
from harness.spaces.base import Arch, Decision, NetConfig, OpFactory, OpSpec, SearchSpace, Supernet

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# Edge e feeds node EDGES[e][0] from node EDGES[e][1]; this is the order of the string format.
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
NONE, SKIP, CONV1, CONV3, POOL = range(5)
_NODE_RE = re.compile(r"^\|(?:[a-z0-9_]+~\d\|)+$")


def _bn(c: int, affine: bool, track: bool) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, affine=affine, track_running_stats=track)


class ReLUConvBN(nn.Module):
    def __init__(self, c_in, c_out, kernel, stride, padding, affine, track):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
            _bn(c_out, affine, track),
        )

    def forward(self, x, ctx=None):
        return self.op(x)


class AvgPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.op = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x, ctx=None):
        return self.op(x)


class Identity(nn.Module):
    def forward(self, x, ctx=None):
        return x


class ResBlock(nn.Module):
    """NB201's ResNetBasicblock with stride 2 between stages (not searched)."""

    def __init__(self, c_in, c_out, affine, track):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1, affine, track)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1, affine, track)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False)
        )

    def forward(self, x):
        return self.downsample(x) + self.conv_b(self.conv_a(x))


@functools.lru_cache(maxsize=None)
def live_edges(arch: Arch) -> tuple[int, ...]:
    """Edges whose operator runs: not `none`, and whose target node reaches the cell output.

    Skipping edges into a node that never reaches node 3 gives exactly the same output; edges out
    of an all-zero node are kept, because an affine BN turns zeros into a constant.
    """
    reaches = {3}
    for node in (2, 1):
        if any(arch[e] != NONE and src == node and dst in reaches for e, (dst, src) in enumerate(EDGES)):
            reaches.add(node)
    return tuple(e for e, (dst, _src) in enumerate(EDGES) if arch[e] != NONE and dst in reaches)


class Nb201Cell(nn.Module):
    def __init__(self, c: int, layer: int, space: "Nb201Space", factory: OpFactory, arch: Arch | None, cfg: NetConfig):
        super().__init__()
        self.edges = nn.ModuleList()
        for e in range(len(EDGES)):
            ops = nn.ModuleDict()
            choices = range(len(NB201_OPS)) if arch is None else [arch[e]]
            for ch in choices:
                if ch == NONE:
                    continue  # zero op: no module, never computed
                spec = OpSpec(e, ch, NB201_OPS[ch], c, c, 1, layer, cfg.bn_affine, cfg.bn_track)
                ops[NB201_OPS[ch]] = factory(spec)
            self.edges.append(ops)

    def forward(self, x, arch: Arch, ctx=None):
        nodes = [x, None, None, None]
        live = live_edges(arch)
        for node in (1, 2, 3):
            total = None
            for e in live:
                dst, src = EDGES[e]
                if dst != node:
                    continue
                inp = nodes[src] if nodes[src] is not None else torch.zeros_like(x)
                out = self.edges[e][NB201_OPS[arch[e]]](inp, ctx)
                total = out if total is None else total + out
            nodes[node] = total
        return nodes[3] if nodes[3] is not None else torch.zeros_like(x)


class Nb201Network(Supernet):
    def __init__(self, space: "Nb201Space", cfg: NetConfig, factory: OpFactory, arch: Arch | None):
        super().__init__()
        c, n = cfg.channels, cfg.cells
        self.fixed_arch = arch
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), _bn(c, cfg.bn_affine, cfg.bn_track))
        self.layers = nn.ModuleList()
        layer = 0
        for stage, width in enumerate((c, 2 * c, 4 * c)):
            if stage > 0:
                self.layers.append(ResBlock(width // 2, width, cfg.bn_affine, cfg.bn_track))
            for _ in range(n):
                self.layers.append(Nb201Cell(width, layer, space, factory, arch, cfg))
                layer += 1
        self.lastact = nn.Sequential(_bn(4 * c, cfg.bn_affine, cfg.bn_track), nn.ReLU(inplace=False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4 * c, cfg.num_classes)

    def features(self, x, arch: Arch, ctx=None):
        if self.fixed_arch is not None and tuple(arch) != self.fixed_arch:
            raise ValueError(f"standalone network for {self.fixed_arch} called with {arch}")
        x = self.stem(x)
        for m in self.layers:
            x = m(x, arch, ctx) if isinstance(m, Nb201Cell) else m(x)
        return self.pool(self.lastact(x)).flatten(1)


@functools.lru_cache(maxsize=1)
def _benchmark_order() -> tuple[Arch, ...]:
    text = resources.files("harness.spaces").joinpath("nb201_index_order.txt").read_text()
    return tuple(tuple(int(ch) for ch in line) for line in text.splitlines() if line and not line.startswith("#"))


class Nb201Space(SearchSpace):
    name = "nb201"
    decisions = tuple(Decision(f"edge{dst}<-{src}", NB201_OPS) for dst, src in EDGES)

    def __init__(self):
        order = _benchmark_order()
        assert len(order) == 15625
        self._order = order
        self._index = {a: i for i, a in enumerate(order)}

    # --- strings -------------------------------------------------------------------------
    def parse(self, text: str) -> Arch:
        """Parse ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` exactly (no spaces, no reordering)."""
        if not isinstance(text, str):
            raise ArchError(f"architecture must be a string, got {type(text).__name__}")
        s = text.strip()
        groups = s.split("+")
        fix = "expected e.g. '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|'"
        if len(groups) != 3 or not all(_NODE_RE.match(g) for g in groups):
            raise ArchError(f"malformed NB201 architecture string '{text}': {fix}")
        arch = []
        for node, group in enumerate(groups, start=1):
            edges = group.strip("|").split("|")
            if len(edges) != node:
                raise ArchError(f"malformed NB201 architecture string '{text}': node {node} needs {node} edges; {fix}")
            for src, edge in enumerate(edges):
                op, _, j = edge.partition("~")
                if op not in NB201_OPS:
                    raise ArchError(f"unknown operator '{op}' in '{text}'; operators are {', '.join(NB201_OPS)}")
                if j != str(src):
                    raise ArchError(f"edge '{edge}' in '{text}' should read from node {src} (~{src})")
                arch.append(NB201_OPS.index(op))
        return tuple(arch)

    def format(self, arch: Arch) -> str:
        arch = self.validate(arch)
        parts, e = [], 0
        for node in (1, 2, 3):
            parts.append("|" + "|".join(f"{NB201_OPS[arch[e + j]]}~{j}" for j in range(node)) + "|")
            e += node
        return "+".join(parts)

    # --- indices -------------------------------------------------------------------------
    def arch_index(self, arch: Arch) -> int:
        return self._index[tuple(arch)]

    def from_index(self, index: int) -> Arch:
        if not 0 <= index < len(self._order):
            raise ArchError(f"NB201 index {index} out of range 0..{len(self._order) - 1}")
        return self._order[index]

    def enumerate(self):
        """All 15,625 architectures in benchmark index order."""
        return iter(self._order)

    def named_subsets(self):
        return {"no-none-no-skip": lambda a: all(op not in (NONE, SKIP) for op in a)}

    # --- isomorphism ---------------------------------------------------------------------
    def isomorphism_key(self, arch: Arch) -> str:
        """Canonical string of the function the cell computes (NB201's ``to_unique_str`` rule).

        Each node is the sorted ``+``-join of its incoming terms: ``skip`` passes the input node's
        string through, ``none`` or any operator of a zero node gives the zero term ``#``, any
        other operator gives ``(input)@op``. Sorting makes the order of additions irrelevant; the
        string (not a flattened multiset) is sorted, which is the benchmark's own rule and gives
        exactly its 6,466 classes.
        """
        nodes = ["0", "", "", ""]
        for dst in (1, 2, 3):
            terms = []
            for e, (d, src) in enumerate(EDGES):
                if d != dst:
                    continue
                op, inp = arch[e], nodes[src]
                if op == NONE or inp == "#":
                    terms.append("#")
                elif op == SKIP:
                    terms.append(inp)
                else:
                    terms.append(f"({inp})@{NB201_OPS[op]}")
            nodes[dst] = "+".join(sorted(terms))
        return nodes[3]

    # --- networks ------------------------------------------------------------------------
    def default_op(self, spec: OpSpec) -> nn.Module:
        if spec.choice == SKIP:
            return Identity()
        if spec.choice == CONV1:
            return ReLUConvBN(spec.c_in, spec.c_out, 1, spec.stride, 0, spec.bn_affine, spec.bn_track)
        if spec.choice == CONV3:
            return ReLUConvBN(spec.c_in, spec.c_out, 3, spec.stride, 1, spec.bn_affine, spec.bn_track)
        if spec.choice == POOL:
            return AvgPool()
        raise ValueError(f"no module for operator {spec.name}")

    def build_supernet(self, cfg: NetConfig, op_factory: OpFactory | None = None) -> Nb201Network:
        return Nb201Network(self, cfg, op_factory or self.default_op, None)

    def build_standalone(self, arch: Arch, cfg: NetConfig, op_factory: OpFactory | None = None) -> Nb201Network:
        return Nb201Network(self, cfg, op_factory or self.default_op, self.validate(arch))
