"""`mobilenet-probe13`: the MobileNet-like space of SE-NAS Table 2 (the ProxylessNAS skeleton).

Skeleton at 224 px, width 1.0 (output channels / repeats / stride)::

    3x3 conv                 40   1  2
    MBConv k3 e1 (fixed)     24   1  1
    searchable layers        32   4  2
                             56   4  2
                            112   4  2
                            128   4  1
                            256   4  2
                            432   1  1
    1x1 conv               1728   1  1
    global pool, FC

Every searchable layer (21 of them, so 7^21 architectures as in SE-NAS Sec. 3.5) chooses an
inverted bottleneck (MobileNetV2 MBConv: 1x1 expand -> kxk depthwise -> 1x1 project, ReLU6)
with kernel 3/5/7 and expansion 3/6, or ``identity``. Identity is not allowed in a stage's first
layer (which changes channels or stride); the very first inverted bottleneck (24 channels) has
expansion 1 and is fixed, as in ProxylessNAS.

A candidate operator computes the whole layer: ``MBConv(x) (+ x when the layer keeps shape)``, and
``identity`` returns ``x``; so ``op(x, ctx)`` is the layer's output for every choice.

Shapes (how a budget maps onto this space): ``NetConfig.channels`` is the stem width and sets the
width factor ``channels / 40`` (40 = the paper's widths), times ``NetConfig.width_mult``; channel
counts are rounded to multiples of 4. ``NetConfig.cells`` is not used. Strides are adapted to the
input: below 64 px the stem and the 32-channel stage keep the resolution (total stride 8, so 32 px
ends at 4x4); at 64 px and above the table's strides apply (total stride 32). The suite's TOML
(``harness/suites_data/mobilenet-probe13.toml``, ``[budgets.<name>]``) gives its channels,
resolution and standalone-GT epochs per named budget.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from harness.core.errors import ArchError
from harness.spaces.base import Arch, Decision, NetConfig, OpFactory, OpSpec, SearchSpace, Supernet

STEM = 40
FIRST = 24  # the fixed MBConv k3 e1 layer
# (output channels, repeats, stride at >= 64 px, stride below 64 px) of the searchable stages
STAGES = ((32, 4, 2, 1), (56, 4, 2, 2), (112, 4, 2, 2), (128, 4, 1, 1), (256, 4, 2, 2), (432, 1, 1, 1))
LAST = 1728


@dataclass(frozen=True)
class Choice:
    name: str
    kernel: int
    expansion: int


CHOICES = (Choice("k3e3", 3, 3), Choice("k3e6", 3, 6), Choice("k5e3", 5, 3), Choice("k5e6", 5, 6),
           Choice("k7e3", 7, 3), Choice("k7e6", 7, 6), Choice("identity", 0, 0))
CHOICE_NAMES = tuple(c.name for c in CHOICES)
IDENTITY = len(CHOICES) - 1

def width_factor(cfg: NetConfig) -> float:
    return cfg.channels / STEM * cfg.width_mult


def _round(c: float, divisor: int = 4) -> int:
    return max(divisor, int(round(c / divisor)) * divisor)


def _bn(c: int, spec) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, affine=spec.bn_affine, track_running_stats=spec.bn_track)


def _first_layers() -> tuple[int, ...]:
    out, i = [], 0
    for _c, n, _s, _s32 in STAGES:
        out.append(i)
        i += n
    return tuple(out)


STAGE_FIRST = _first_layers()  # decision indices where identity is not allowed


class MBConv(nn.Module):
    """MobileNetV2 inverted bottleneck; adds the input when it keeps the shape."""

    def __init__(self, c_in: int, c_out: int, kernel: int, expansion: int, stride: int, spec):
        super().__init__()
        hidden = c_in * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), _bn(hidden, spec), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False),
                   _bn(hidden, spec), nn.ReLU6(),
                   nn.Conv2d(hidden, c_out, 1, bias=False), _bn(c_out, spec)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x, ctx=None):
        out = self.conv(x)
        return out + x if self.residual else out


class Identity(nn.Module):
    def forward(self, x, ctx=None):
        return x


class MobileNetProbeNetwork(Supernet):
    def __init__(self, space: "MobileNetProbeSpace", cfg: NetConfig, factory: OpFactory, arch: Arch | None):
        super().__init__()
        self.fixed_arch = arch
        w = width_factor(cfg)
        small = cfg.resolution < 64
        stem = _round(STEM * w)
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, 1 if small else 2, 1, bias=False), _bn(stem, cfg), nn.ReLU6())
        first = _round(FIRST * w)
        self.first = MBConv(stem, first, 3, 1, 1, cfg)
        self.layers = nn.ModuleList()
        c_in, layer = first, 0
        for c, n, stride, stride_small in STAGES:
            c_out = _round(c * w)
            for i in range(n):
                s = (stride_small if small else stride) if i == 0 else 1
                ops = nn.ModuleDict()
                for ch in (range(len(CHOICES)) if arch is None else [arch[layer]]):
                    if ch == IDENTITY and i == 0:
                        continue  # never allowed here: no module
                    ch_ = CHOICES[ch]
                    spec = OpSpec(layer, ch, ch_.name, c_in, c_out, s, layer, cfg.bn_affine, cfg.bn_track,
                                  (("kernel", ch_.kernel), ("expansion", ch_.expansion)))
                    ops[ch_.name] = factory(spec)
                self.layers.append(ops)
                c_in, layer = c_out, layer + 1
        last = _round(LAST * w)
        self.last = nn.Sequential(nn.Conv2d(c_in, last, 1, bias=False), _bn(last, cfg), nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(last, cfg.num_classes)

    def features(self, x, arch: Arch, ctx=None):
        if self.fixed_arch is not None and tuple(arch) != self.fixed_arch:
            raise ValueError(f"standalone network for {self.fixed_arch} called with {tuple(arch)}")
        x = self.first(self.stem(x))
        for layer, (ops, choice) in enumerate(zip(self.layers, arch)):
            name = CHOICE_NAMES[choice]
            if name not in ops:
                raise ArchError(f"'{name}' is not allowed at layer {layer} (a stage's first layer)")
            x = ops[name](x, ctx)
        return self.pool(self.last(x)).flatten(1)


class MobileNetProbeSpace(SearchSpace):
    """7^21 MBConv/identity architectures; string format: 21 choice names joined by '-'."""

    name = "mobilenet-probe"
    model_version = 1  # bump when the network a given (arch, NetConfig) builds changes (GT cache key)
    supports_downsample_sharing = False
    decisions = tuple(Decision(f"stage{s + 2}.layer{i}", CHOICE_NAMES)
                      for s, (_c, n, _s, _s32) in enumerate(STAGES) for i in range(n))

    def allowed_choices(self, decision: int) -> tuple[int, ...]:
        """Choices allowed at a decision (identity is refused in a stage's first layer)."""
        n = len(CHOICES)
        return tuple(range(n - 1)) if decision in STAGE_FIRST else tuple(range(n))

    def is_allowed(self, arch: Arch) -> bool:
        return all(a in self.allowed_choices(i) for i, a in enumerate(arch))

    def sample(self, rng: np.random.Generator) -> Arch:
        """Uniform over the allowed choices of each layer."""
        out = []
        for i in range(len(self.decisions)):
            allowed = self.allowed_choices(i)
            out.append(int(allowed[rng.integers(len(allowed))]))
        return tuple(out)

    def validate(self, arch) -> Arch:
        arch = super().validate(arch)
        for i, a in enumerate(arch):
            if a not in self.allowed_choices(i):
                raise ArchError(f"'{CHOICE_NAMES[a]}' is not allowed at layer {i} ({self.decisions[i].name}): "
                                f"a stage's first layer changes shape; use one of {', '.join(CHOICE_NAMES[:-1])}")
        return arch

    def parse(self, text: str) -> Arch:
        example = "-".join("k3e6" if i in STAGE_FIRST else "identity" for i in range(len(self.decisions)))
        return self.validate(self.parse_joined_names(text, CHOICE_NAMES, "layers", "choice", example))

    def format(self, arch: Arch) -> str:
        return "-".join(CHOICE_NAMES[a] for a in self.validate(arch))

    def default_op(self, spec: OpSpec) -> nn.Module:
        if spec.choice == IDENTITY:
            if spec.stride != 1 or spec.c_in != spec.c_out:
                raise ArchError(f"identity cannot change shape (layer {spec.layer})")
            return Identity()
        ex = dict(spec.extra)
        return MBConv(spec.c_in, spec.c_out, ex["kernel"], ex["expansion"], spec.stride, spec)

    def build_supernet(self, cfg: NetConfig, op_factory: OpFactory | None = None) -> MobileNetProbeNetwork:
        return MobileNetProbeNetwork(self, cfg, op_factory or self.default_op, None)

    def build_standalone(self, arch: Arch, cfg: NetConfig, op_factory: OpFactory | None = None) -> MobileNetProbeNetwork:
        return MobileNetProbeNetwork(self, cfg, op_factory or self.default_op, self.validate(arch))
