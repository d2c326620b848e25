"""NAS-Bench-201 / NATS-Bench topology space: a 4-node cell, 6 edges, 5 operators per edge.

The network follows the benchmark: 3x3 stem, three stages of N cells with C, 2C, 4C channels,
residual reduction blocks between stages, BN-ReLU, global pool, linear head. One class builds the
supernet (every operator on every edge) and standalone networks (only the chosen ones) with the
same parameter names, so supernet weights load into a standalone network with ``strict=False``.
"""
from __future__ import annotations

import contextlib
import functools
import re
from collections import OrderedDict
from collections.abc import Callable
from importlib import resources

import torch
from torch import nn

from harness.core.errors import ArchError
from harness.spaces.base import Arch, Decision, NetConfig, OpFactory, OpSpec, SearchSpace, Supernet
from harness.spaces.cpu_kernels import pool_kernels

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# Edge e feeds node EDGES[e][0] from node EDGES[e][1]; this is the order of the string format.
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
NONE, SKIP, CONV1, CONV3, POOL = range(5)
_NODE_RE = re.compile(r"^\|(?:[a-z0-9_]+~\d\|)+$")


def _bn(c: int, affine: bool, track: bool) -> nn.BatchNorm2d:
    return FastBatchNorm2d(c, affine=affine, track_running_stats=track)


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


@functools.lru_cache(maxsize=64)
def _pool3_divisor(h: int, w: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    """How many in-image pixels each 3x3 window covers (count_include_pad=False)."""
    cnt = torch.nn.functional.pad(torch.ones(1, 1, h, w, dtype=dtype, device=device), (1, 1, 1, 1))
    return sum(cnt[..., i:i + h, j:j + w] for i in range(3) for j in range(3))


def _pool3_sum(xp: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Sum of the nine shifted h x w views of a 1-padded tensor, row by row (the kernel's order)."""
    s = xp[..., 0:h, 0:w] + xp[..., 0:h, 1:w + 1]
    for i, j in ((0, 2), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)):
        s.add_(xp[..., i:i + h, j:j + w])
    return s


class _AvgPool3x3Fn(torch.autograd.Function):
    """3x3/stride 1/pad 1 average pool without padded pixels, bit-identical to ATen's CPU kernels.

    Forward: out[o] = (sum of the window's pixels, row-major, from 0) / count[o]. Backward (ATen
    ``avg_pool2d_backward``): each output adds grad[o] / count[o] to its window's pixels, outputs
    visited row-major; pixel i therefore sums the nine shifted views of grad / count in the same
    row-major order. Padded positions contribute +0.0, which changes no bits.

    The compiled kernel (``harness/spaces/cpu_kernels.py``) does the same additions in one pass;
    without it, nine shifted views of the padded tensor are added.
    """

    @staticmethod
    def forward(ctx, x):
        h, w = x.shape[-2:]
        div = _pool3_divisor(h, w, x.dtype, str(x.device))
        ctx.save_for_backward(div)
        kernels = pool_kernels()
        if kernels is not None:
            return kernels.pool3(x, div, False)
        return _pool3_sum(torch.nn.functional.pad(x, (1, 1, 1, 1)), h, w).div_(div)

    @staticmethod
    def backward(ctx, g):
        (div,) = ctx.saved_tensors
        h, w = g.shape[-2:]
        kernels = pool_kernels()
        if kernels is not None:
            return kernels.pool3(g, div, True)
        return _pool3_sum(torch.nn.functional.pad(g / div, (1, 1, 1, 1)), h, w)


class _AvgPool2x2Fn(torch.autograd.Function):
    """2x2/stride 2 average pool, bit-identical to ATen's CPU kernels (see ``_AvgPool3x3Fn``)."""

    @staticmethod
    def forward(ctx, x):
        kernels = pool_kernels()
        if kernels is not None:
            return kernels.pool2(x, False)
        s = x[..., ::2, ::2] + x[..., ::2, 1::2]
        return s.add_(x[..., 1::2, ::2]).add_(x[..., 1::2, 1::2]).div_(4)

    @staticmethod
    def backward(ctx, g):
        kernels = pool_kernels()
        if kernels is not None:
            return kernels.pool2(g, True)
        q = g / 4
        n, c, h, w = q.shape
        return q.view(n, c, h, 1, w, 1).expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)


def _exact_cpu_path(x: torch.Tensor) -> bool:
    # fp32/fp64 only: ATen accumulates half/bf16 pools in fp32, which this path would not reproduce
    return x.device.type == "cpu" and x.dim() == 4 and x.dtype in (torch.float32, torch.float64)


class FastAvgPool3x3(nn.AvgPool2d):
    """``AvgPool2d(3, 1, 1, count_include_pad=False)``, faster on the CPU with the same bits.

    PyTorch's NCHW CPU kernels for this pool (forward and backward) cost about 2.5x a 3x3
    convolution at NB201 smoke shapes; adding shifted views in the kernel's own order is 3-4x
    faster and exact (tests/bench/test_bench_speed.py checks the bits). Other devices use the
    native op.
    """

    def __init__(self):
        super().__init__(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x):
        if not _exact_cpu_path(x):
            return super().forward(x)
        return _AvgPool3x3Fn.apply(x)


class FastAvgPool2x2(nn.AvgPool2d):
    """``AvgPool2d(2, 2)`` with the same exact CPU path as :class:`FastAvgPool3x3`."""

    def __init__(self):
        super().__init__(2, 2)

    def forward(self, x):
        if not _exact_cpu_path(x) or x.shape[-1] % 2 or x.shape[-2] % 2:
            return super().forward(x)
        return _AvgPool2x2Fn.apply(x)


class _BatchStatBNFn(torch.autograd.Function):
    """Batch norm with batch statistics by the compiled kernels (``csrc/batchnorm.cpp``), ATen's
    bits both ways: forward with its per-channel sums interleaved (running buffers, when given,
    updated in place as ATen updates them); backward on the saved mean and inverse std, with its two
    reductions in one pass, by whichever emulation of ATen's vector lanes reproduces
    ``native_batch_norm_backward`` on this CPU and torch build (checked against it on first use;
    if none does, ATen's own backward runs)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, running_mean=None, running_var=None, momentum=0.0):
        ctx.kernels = kernels = pool_kernels()  # the backward uses the same library, even if disabled since
        out, mean, invstd = kernels.bn_forward(x, weight, bias, eps, running_mean, running_var, momentum)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx, g):
        x, weight, mean, invstd = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[1],
                weight is not None and ctx.needs_input_grad[2]]
        gx, gw, gb = ctx.kernels.bn_backward(g, x, weight, mean, invstd, ctx.eps, mask)
        return gx, gw, gb, None, None, None, None


class FastBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose forward with batch statistics (training, with or without running
    buffers to update, and every BN while scoring under ``batch_stat_bn``) runs the compiled exact
    kernel on the CPU: the same bits, output, gradients and running buffers (tests), about a third
    of ATen's time at NB201 shapes, whose statistics are one sequential double sum per channel.
    Normalising by running statistics (eval with buffers), other devices and dtypes: ``BatchNorm2d``
    itself."""

    def forward(self, x):
        # BatchNorm2d normalises by the batch when training or when it has no buffers
        if not ((self.training or self.running_mean is None) and _exact_cpu_path(x) and x.dtype == torch.float32
                and x.shape[0] > 0 and x.shape[-1] * x.shape[-2] > 1 and x.is_contiguous()
                and pool_kernels() is not None):
            return super().forward(x)
        # _BatchNorm.forward's bookkeeping, and the buffers it would hand F.batch_norm to update
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        if self.track_running_stats or not self.training:
            return _BatchStatBNFn.apply(x, self.weight, self.bias, self.eps, self.running_mean, self.running_var, factor)
        return _BatchStatBNFn.apply(x, self.weight, self.bias, self.eps)


class AvgPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.op = FastAvgPool3x3()

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
            FastAvgPool2x2(), nn.Conv2d(c_in, c_out, 1, bias=False)
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


@functools.lru_cache(maxsize=None)
def dead_edges(arch: Arch) -> tuple[int, ...]:
    """Edges whose operator is not `none` but lies on no all-non-`none` route from node 0 to node
    3: its source is never fed from the cell input, or its target never reaches the output. Such
    an operator computes zeros or is skipped (with the supernet's BN without affine), so its
    weights get no gradient in a training step of ``arch``."""
    fed = {0}
    for node in (1, 2, 3):
        if any(arch[e] != NONE and dst == node and src in fed for e, (dst, src) in enumerate(EDGES)):
            fed.add(node)
    live = set(live_edges(arch))
    return tuple(e for e, (dst, src) in enumerate(EDGES) if arch[e] != NONE and (e not in live or src not in fed))


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

    def forward(self, x, arch: Arch, ctx=None, cache: "PrefixCache | None" = None, key: tuple = ()):
        """``cache``/``key`` (first cell, inference only): reuse node values and edge outputs that
        other architectures with the same ops on the edges they depend on already computed."""
        nodes = [x, None, None, None]
        live = live_edges(arch)
        for node in (1, 2, 3):
            if not any(EDGES[e][0] == node for e in live):
                continue  # no live input: stays None (zero node)
            if cache is None or node == 3:
                nodes[node] = self._node(node, nodes, x, arch, live, ctx, cache, key)
            else:  # a live node's value depends only on the ops of the edges into it and its ancestors
                nodes[node] = cache.get_or_compute((key, "node", node, _node_prefix(arch, node)),
                                                   lambda n=node: self._node(n, nodes, x, arch, live, ctx, cache, key))
        return nodes[3] if nodes[3] is not None else torch.zeros_like(x)

    def _node(self, node, nodes, x, arch, live, ctx, cache, key):
        total = None
        for e in live:
            dst, src = EDGES[e]
            if dst != node:
                continue

            def run(e=e, src=src):
                inp = nodes[src] if nodes[src] is not None else torch.zeros_like(x)
                return self.edges[e][NB201_OPS[arch[e]]](inp, ctx)

            out = run() if cache is None else cache.get_or_compute((key, "edge", e, arch[e], _node_prefix(arch, src)), run)
            total = out if total is None else total + out
        return total


def _node_prefix(arch: Arch, node: int) -> tuple[int, ...]:
    """The choices a node's value depends on: the edges into it and into its ancestors."""
    return tuple(arch[e] for e, (dst, _src) in enumerate(EDGES) if dst <= node)


class PrefixCache:
    """Inference-time LRU of tensors fixed by the input batch and an architecture prefix.

    Valid only while the weights are frozen and BN normalises by batch statistics (an op's output
    is then a function of its input alone); ``SupernetEvaluator`` turns it on under exactly those
    conditions. Entries modified in place after caching (tensor version bumped) are recomputed.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.items: OrderedDict = OrderedDict()
        self.nbytes = 0
        self.hits = self.misses = 0
        self.inputs: dict = {}  # keeps keyed input batches alive, so their addresses stay unique

    def get_or_compute(self, key, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        item = self.items.get(key)
        if item is not None and item[0]._version == item[1]:
            self.items.move_to_end(key)
            self.hits += 1
            return item[0]
        self.misses += 1
        t = fn()
        if item is not None:
            self.nbytes -= item[2]
            del self.items[key]
        size = t.element_size() * t.nelement()
        if size <= self.max_bytes:
            self.items[key] = (t, t._version, size)
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                _, (_, _, old) = self.items.popitem(last=False)
                self.nbytes -= old
        return t

    def batch_key(self, x: torch.Tensor) -> tuple:
        key = (x.data_ptr(), tuple(x.shape), tuple(x.stride()), str(x.dtype), str(x.device))
        self.inputs[key] = x
        return key

    def stats(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "bytes": self.nbytes, "entries": len(self.items)}


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
        self._prefix_cache: PrefixCache | None = None

    @contextlib.contextmanager
    def prefix_cache(self, max_bytes: int = 512 << 20):
        """Within this block, no-grad forwards with ``ctx=None`` reuse the stem output and the
        first cell's node values / edge outputs across architectures (the only parts of the network
        whose input does not depend on the architecture). Same bits, about half the compute at
        smoke shapes. The caller guarantees frozen weights and batch-statistics BN."""
        self._prefix_cache = cache = PrefixCache(max_bytes)
        try:
            yield cache
        finally:
            self._prefix_cache = None

    def features(self, x, arch: Arch, ctx=None):
        if self.fixed_arch is not None and tuple(arch) != self.fixed_arch:
            raise ValueError(f"standalone network for {self.fixed_arch} called with {arch}")
        cache = self._prefix_cache if ctx is None and not torch.is_grad_enabled() else None
        if cache is None:
            x = self.stem(x)
        else:
            key = cache.batch_key(x)
            x = cache.get_or_compute((key, "stem"), lambda: self.stem(x))
        for i, m in enumerate(self.layers):
            if isinstance(m, Nb201Cell):
                x = m(x, arch, ctx, cache, key) if cache is not None and i == 0 else m(x, arch, ctx)
            else:
                x = m(x)
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

    def dead_decisions(self, arch: Arch) -> tuple[int, ...]:
        return dead_edges(tuple(arch))

    def computes_from_input(self, arch: Arch) -> bool:
        """Some non-`none` edge lies on an all-non-`none` route from node 0 to node 3."""
        dead = dead_edges(tuple(arch))
        return any(op != NONE and e not in dead for e, op in enumerate(arch))

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
