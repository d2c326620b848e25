"""`resnet-probe13`: Pi-NAS's ResNet-50-style space of Split-Attention bottlenecks (Pi-NAS Sec. 4.1).

Layout: the 16 bottleneck layers of ResNet-50 ([3, 4, 6, 3] per stage, bottleneck planes 64, 128,
256, 512, expansion 4); every layer chooses one of four Split-Attention blocks (ResNeSt, Zhang et
al. 2020) named ``<radix>s<cardinality>x<width>d``::

    1s1x64d   2s1x64d (ResNeSt-50's block)   1s2x42d   2s2x40d

designed by Pi-NAS to cost about the same (parameter counts within a few percent at equal width),
so the space is 4^16 architectures of near-equal size.

A block is ``conv1x1 -> SplAtConv3x3 -> conv1x1`` (bottleneck group width ``int(planes * d/64) * x``).
SplAtConv (ResNeSt Eq. 1-3): a grouped 3x3 conv over ``radix * cardinality`` groups produces
``radix`` splits; their sum is globally pooled, passed through FC -> BN-ReLU -> FC, and an
r-softmax *over the radix splits* (per cardinal group and channel; a sigmoid when radix == 1) gives
the weights of the splits' weighted sum.

Downsample sharing (Pi-NAS "DS", ``NetConfig.share_downsample``, on by default): the projection
shortcut of a stage's first layer is one module of the layer, shared by the four candidates;
with it off every candidate holds its own projection. A candidate operator computes the residual
branch (plus its own projection when not shared); the layer adds the shortcut and applies ReLU.

Shapes (how a budget maps onto this space): ``NetConfig.channels`` is the stem width and sets the
width factor ``channels / 64`` (64 = ResNet-50, the paper's widths), times ``NetConfig.width_mult``;
``NetConfig.cells`` is not used (the layout is fixed). ``NetConfig.resolution`` picks the stem:
below 64 px a CIFAR stem (3x3 conv, stride 1, no max-pool), else ImageNet's 7x7/2 + max-pool.
The suite's TOML (``harness/suites_data/resnet-probe13.toml``, ``[budgets.<name>]``) gives its
channels, resolution and standalone ground-truth epochs for each named budget (applied by the suite
before ``--set`` overrides).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.errors import ArchError
from harness.spaces.base import Arch, Decision, NetConfig, OpFactory, OpSpec, SearchSpace, Supernet

LAYOUT = (3, 4, 6, 3)
PLANES = (64, 128, 256, 512)
EXPANSION = 4
REF_STEM = 64  # ResNet-50's stem width: channels=64 means the paper's widths


@dataclass(frozen=True)
class BlockType:
    name: str
    radix: int
    cardinality: int
    width: int  # bottleneck width d (per cardinal group, at planes = 64)


BLOCKS = (BlockType("1s1x64d", 1, 1, 64), BlockType("2s1x64d", 2, 1, 64),
          BlockType("1s2x42d", 1, 2, 42), BlockType("2s2x40d", 2, 2, 40))
BLOCK_NAMES = tuple(b.name for b in BLOCKS)

def width_factor(cfg: NetConfig) -> float:
    return cfg.channels / REF_STEM * cfg.width_mult


def _bn(c: int, cfg_or_spec) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, affine=cfg_or_spec.bn_affine, track_running_stats=cfg_or_spec.bn_track)


def _scaled(c: float, w: float) -> int:
    return max(1, int(round(c * w)))


def r_softmax(logits: torch.Tensor, radix: int, cardinality: int) -> torch.Tensor:
    """ResNeSt's r-softmax: (B, cardinality * radix * C') -> weights softmaxed over the radix axis.

    fc2 is grouped by cardinality, so its channels are ordered (cardinality, radix, C'); the result
    is reordered to (radix, cardinality, C') to match the split order of the grouped conv's output.
    With radix == 1 the gate is a sigmoid (as in ResNeSt).
    """
    b = logits.shape[0]
    if radix > 1:
        x = logits.view(b, cardinality, radix, -1).transpose(1, 2)
        return F.softmax(x, dim=1).reshape(b, -1)
    return torch.sigmoid(logits).reshape(b, -1)


class SplitAttentionConv(nn.Module):
    """SplAtConv2d (ResNeSt): grouped kxk conv into ``radix`` splits, attention over the splits."""

    def __init__(self, c_in: int, channels: int, stride: int, radix: int, cardinality: int, inter: int, spec):
        super().__init__()
        self.radix, self.cardinality, self.channels = radix, cardinality, channels
        self.conv = nn.Conv2d(c_in, channels * radix, 3, stride, 1, groups=cardinality * radix, bias=False)
        self.bn0 = _bn(channels * radix, spec)
        self.fc1 = nn.Conv2d(channels, inter, 1, groups=cardinality)
        self.bn1 = _bn(inter, spec)
        self.fc2 = nn.Conv2d(inter, channels * radix, 1, groups=cardinality)

    def attention(self, splits: torch.Tensor) -> torch.Tensor:
        """(B, radix * C, H, W) split features -> (B, radix, C) attention weights."""
        b = splits.shape[0]
        gap = splits.view(b, self.radix, self.channels, *splits.shape[2:]).sum(1) if self.radix > 1 else splits
        gap = F.adaptive_avg_pool2d(gap, 1)
        gap = F.relu(self.bn1(self.fc1(gap)))
        return r_softmax(self.fc2(gap).flatten(1), self.radix, self.cardinality).view(b, self.radix, self.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn0(self.conv(x)))
        b = x.shape[0]
        att = self.attention(x)
        if self.radix == 1:
            return x * att.view(b, self.channels, 1, 1)
        splits = x.view(b, self.radix, self.channels, *x.shape[2:])
        return (splits * att.view(b, self.radix, self.channels, 1, 1)).sum(1)


def projection(c_in: int, c_out: int, stride: int, spec) -> nn.Sequential:
    """ResNeSt's avg-down shortcut: avg-pool for the stride, then 1x1 conv + BN."""
    layers: list[nn.Module] = [nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)] if stride > 1 else []
    return nn.Sequential(*layers, nn.Conv2d(c_in, c_out, 1, bias=False), _bn(c_out, spec))


class SplitAttentionBottleneck(nn.Module):
    """The residual branch of one ResNeSt bottleneck (plus its own projection when DS is off)."""

    def __init__(self, spec: OpSpec):
        super().__init__()
        ex = dict(spec.extra)
        radix, card, width, planes, w = ex["radix"], ex["cardinality"], ex["width"], ex["planes"], ex["w"]
        base = max(1, int(planes * width / 64))  # ResNeSt: group width = int(planes * d / 64) * cardinality
        base = -(-base // radix) * radix  # at reduced widths, round up so the conv's radix*card groups divide it
        group = base * card
        inter = max(group * radix // 4, _scaled(32, w), card)  # ResNeSt reduction 4, floor 32 (scaled)
        inter = -(-inter // card) * card  # fc1/fc2 are grouped by cardinality
        self.group_width = group
        self.conv1 = nn.Conv2d(spec.c_in, group, 1, bias=False)
        self.bn1 = _bn(group, spec)
        self.conv2 = SplitAttentionConv(group, group, spec.stride, radix, card, inter, spec)
        self.conv3 = nn.Conv2d(group, spec.c_out, 1, bias=False)
        self.bn3 = _bn(spec.c_out, spec)
        self.downsample = projection(spec.c_in, spec.c_out, spec.stride, spec) if ex["own_downsample"] else None

    def forward(self, x, ctx=None):
        out = self.bn3(self.conv3(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return out + self.downsample(x) if self.downsample is not None else out


class ProbeLayer(nn.Module):
    """One searchable layer: candidate blocks (``ops``) and the shortcut (shared projection or identity)."""

    def __init__(self, layer: int, c_in: int, c_out: int, stride: int, planes: int, cfg: NetConfig,
                 factory: OpFactory, choices: list[int]):
        super().__init__()
        needs_proj = stride != 1 or c_in != c_out
        share = needs_proj and cfg.share_downsample
        self.identity_shortcut = not needs_proj
        self.downsample = projection(c_in, c_out, stride, cfg) if share else None
        self.ops = nn.ModuleDict()
        w = width_factor(cfg)
        for ch in choices:
            b = BLOCKS[ch]
            extra = (("radix", b.radix), ("cardinality", b.cardinality), ("width", b.width),
                     ("planes", planes), ("w", w), ("own_downsample", needs_proj and not share))
            spec = OpSpec(layer, ch, b.name, c_in, c_out, stride, layer, cfg.bn_affine, cfg.bn_track, extra)
            self.ops[b.name] = factory(spec)

    def forward(self, x, choice: int, ctx=None):
        out = self.ops[BLOCK_NAMES[choice]](x, ctx)
        if self.downsample is not None:
            out = out + self.downsample(x)
        elif self.identity_shortcut:
            out = out + x
        return F.relu(out)


class ResNetProbeNetwork(Supernet):
    def __init__(self, cfg: NetConfig, factory: OpFactory, arch: Arch | None):
        super().__init__()
        self.fixed_arch = arch
        w = width_factor(cfg)
        stem = _scaled(REF_STEM, w)
        if cfg.resolution >= 64:  # ImageNet stem
            self.stem = nn.Sequential(nn.Conv2d(3, stem, 7, 2, 3, bias=False), _bn(stem, cfg), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
        else:  # CIFAR stem: keep the resolution for 16-32 px inputs
            self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, 1, 1, bias=False), _bn(stem, cfg), nn.ReLU())
        self.layers = nn.ModuleList()
        c_in, layer = stem, 0
        for stage, (n, planes) in enumerate(zip(LAYOUT, PLANES)):
            p = _scaled(planes, w)
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                choices = list(range(len(BLOCKS))) if arch is None else [arch[layer]]
                self.layers.append(ProbeLayer(layer, c_in, p * EXPANSION, stride, p, cfg, factory, choices))
                c_in, layer = p * EXPANSION, layer + 1
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c_in, cfg.num_classes)
        self.out_channels = c_in

    def features(self, x, arch: Arch, ctx=None):
        if self.fixed_arch is not None and tuple(arch) != self.fixed_arch:
            raise ValueError(f"standalone network for {self.fixed_arch} called with {tuple(arch)}")
        x = self.stem(x)
        for layer, choice in zip(self.layers, arch):
            x = layer(x, choice, ctx)
        return self.pool(x).flatten(1)


class ResNetProbeSpace(SearchSpace):
    """4^16 ResNeSt-block architectures; string format: 16 block names joined by '-'."""

    name = "resnet-probe"
    model_version = 1  # bump when the network a given (arch, NetConfig) builds changes (GT cache key)
    supports_downsample_sharing = True  # NetConfig.share_downsample is honoured (Pi-NAS `pinas-no-ds`)
    decisions = tuple(Decision(f"stage{s + 1}.layer{i}", BLOCK_NAMES)
                      for s, n in enumerate(LAYOUT) for i in range(n))

    def parse(self, text: str) -> Arch:
        example = "-".join(BLOCK_NAMES[i % 4] for i in range(len(self.decisions)))
        return tuple(self.parse_joined_names(text, BLOCK_NAMES, "blocks", "block", example))

    def format(self, arch: Arch) -> str:
        return "-".join(BLOCK_NAMES[a] for a in self.validate(arch))

    def default_op(self, spec: OpSpec) -> nn.Module:
        return SplitAttentionBottleneck(spec)

    def build_supernet(self, cfg: NetConfig, op_factory: OpFactory | None = None) -> ResNetProbeNetwork:
        return ResNetProbeNetwork(cfg, op_factory or self.default_op, None)

    def build_standalone(self, arch: Arch, cfg: NetConfig, op_factory: OpFactory | None = None) -> ResNetProbeNetwork:
        return ResNetProbeNetwork(cfg, op_factory or self.default_op, self.validate(arch))
