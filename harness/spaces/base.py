"""The search-space contract every space implements and every method sees.

An architecture is a tuple of choice indices, one per decision. Methods never branch on the space:
they sample, encode and build supernets through this interface only.
"""
from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from harness.core.errors import ArchError

Arch = tuple[int, ...]


@dataclass(frozen=True)
class Decision:
    name: str
    choices: tuple[str, ...]


@dataclass(frozen=True)
class NetConfig:
    """Shape of a network built from a space; every field is recorded in the run manifest."""

    channels: int = 16
    cells: int = 5  # cells per stage (NB201 N) / depth knob for layer-wise spaces
    num_classes: int = 10
    resolution: int = 32
    bn_affine: bool = False
    bn_track: bool = True
    width_mult: float = 1.0
    share_downsample: bool = True  # layer-wise spaces: share a stage's downsample projection


@dataclass(frozen=True)
class OpSpec:
    """Everything an operator factory needs to build one candidate operator.

    ``decision``/``choice`` index into ``space.decisions``; ``layer`` says which instance of the
    decision this is (a cell-based space repeats each decision once per cell).
    """

    decision: int
    choice: int
    name: str
    c_in: int
    c_out: int
    stride: int
    layer: int
    bn_affine: bool
    bn_track: bool
    extra: tuple = ()  # space-specific (key, value) pairs, e.g. kernel size, expansion


# A candidate operator is an nn.Module called as ``op(x, ctx)``; ``ctx`` is the method's opaque
# per-call object (None for plain single-path training). A factory returns such a module.
OpFactory = Callable[[OpSpec], nn.Module]


class Supernet(nn.Module):
    """One module serves as supernet and as standalone network (built with only one path)."""

    head: nn.Module

    def features(self, x, arch: Arch, ctx=None):  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, x, arch: Arch, ctx=None):
        return self.head(self.features(x, arch, ctx))


class SearchSpace(ABC):
    """Decisions, sampling, encoding, string format and network construction for one space."""

    name: str
    decisions: Sequence[Decision]

    # --- architectures -------------------------------------------------------------------
    @property
    def size(self) -> int:
        return int(np.prod([len(d.choices) for d in self.decisions], dtype=object))

    def sample(self, rng: np.random.Generator) -> Arch:
        return tuple(int(rng.integers(len(d.choices))) for d in self.decisions)

    def validate(self, arch: Sequence[int]) -> Arch:
        arch = tuple(int(a) for a in arch)
        if len(arch) != len(self.decisions):
            raise ArchError(f"architecture {arch} has {len(arch)} decisions; {self.name} has {len(self.decisions)}")
        for a, d in zip(arch, self.decisions):
            if not 0 <= a < len(d.choices):
                raise ArchError(f"choice {a} out of range for decision '{d.name}' (0..{len(d.choices) - 1})")
        return arch

    def encode(self, arch: Arch) -> np.ndarray:
        """One-hot encoding, decisions concatenated in order."""
        out = np.zeros(sum(len(d.choices) for d in self.decisions), dtype=np.float32)
        offset = 0
        for a, d in zip(arch, self.decisions):
            out[offset + a] = 1.0
            offset += len(d.choices)
        return out

    def arch_id(self, arch: Arch) -> int:
        """Mixed-radix id over the decisions (first decision most significant)."""
        idx = 0
        for a, d in zip(arch, self.decisions):
            idx = idx * len(d.choices) + a
        return idx

    def from_id(self, idx: int) -> Arch:
        out = []
        for d in reversed(self.decisions):
            idx, a = divmod(idx, len(d.choices))
            out.append(a)
        return tuple(reversed(out))

    def arch_index(self, arch: Arch) -> int:
        """The index reported in estimates.csv (a benchmark index where the space has one)."""
        return self.arch_id(arch)

    def enumerate(self) -> Iterator[Arch]:
        return itertools.product(*[range(len(d.choices)) for d in self.decisions])

    def allowed_choices(self, decision: int) -> tuple[int, ...]:
        """Choices allowed at one decision whatever the others are (constrained spaces override,
        e.g. no identity in a stage's first layer); methods that enumerate choices use this."""
        return tuple(range(len(self.decisions[decision].choices)))

    def is_allowed(self, arch: Arch) -> bool:
        """Spaces with constraints (e.g. no identity in a stage's first layer) override this."""
        return True

    def dead_decisions(self, arch: Arch) -> tuple[int, ...]:
        """Decisions whose chosen operator takes no part in ``arch``'s computation: on a DAG with a
        zero operator, an operator with no non-zero route from the input or to the output (its
        weights get no gradient and do not change the output). Chain spaces: none (the default)."""
        return ()

    def computes_from_input(self, arch: Arch) -> bool:
        """Whether ``arch``'s output depends on its input at all. On a DAG with a zero operator a
        cell can have no non-zero route from input to output (NB201: about 2 % of the space); such
        a network outputs the same vector for every image, which says nothing about training
        (e.g. a collapse check must not read it). Chain spaces: always (the default)."""
        return True

    def named_subsets(self) -> dict[str, Callable[[Arch], bool]]:
        """Extra named architecture filters usable as ``--archs NAME``."""
        return {}

    def isomorphism_key(self, arch: Arch) -> str | None:
        """Canonical key of the computed function, where the space defines one."""
        return None

    @abstractmethod
    def parse(self, text: str) -> Arch: ...

    def parse_joined_names(self, text: str, names: Sequence[str], unit: str, choice: str, example: str) -> list[int]:
        """Choice indices of ``text``, one name of ``names`` per decision joined by '-' (the probe
        spaces' format); the one-line errors call the decisions ``unit`` ("layers") and a name a
        ``choice`` ("block")."""
        if not isinstance(text, str):
            raise ArchError(f"architecture must be a string, got {type(text).__name__}")
        parts = text.strip().split("-")
        if len(parts) != len(self.decisions):
            raise ArchError(f"malformed {self.name} architecture '{text}': {len(parts)} {unit}, need "
                            f"{len(self.decisions)} names joined by '-', e.g. '{example}'")
        out = []
        for i, p in enumerate(parts):
            if p not in names:
                raise ArchError(f"unknown {choice} '{p}' at layer {i} of '{text}'; {choice}s are {', '.join(names)}")
            out.append(list(names).index(p))
        return out

    @abstractmethod
    def format(self, arch: Arch) -> str: ...

    # --- networks ------------------------------------------------------------------------
    @abstractmethod
    def default_op(self, spec: OpSpec) -> nn.Module:
        """The space's own candidate operator (what ``op_factory=None`` builds)."""

    @abstractmethod
    def build_supernet(self, cfg: NetConfig, op_factory: OpFactory | None = None) -> Supernet: ...

    @abstractmethod
    def build_standalone(self, arch: Arch, cfg: NetConfig, op_factory: OpFactory | None = None) -> Supernet:
        """A network holding only ``arch``'s operators, with the supernet's parameter names."""

    def layer_specs(self, cfg: NetConfig) -> list[OpSpec]:
        """Every OpSpec the supernet builds (used by methods that keep per-operator state)."""
        specs: list[OpSpec] = []
        self.build_supernet(cfg, op_factory=lambda s: (specs.append(s), self.default_op(s))[1])
        return specs
