"""The method contract: a registered name, a frozen config, ``fit(job) -> Scorer``.

A new method is one file in ``methods/`` that subclasses :class:`Method` and registers itself with
``@register_method("name")`` (or through the ``supernet_harness.methods`` entry-point group); variants are extra registrations of the same class with config
overrides (``@register_method("pinas-no-cp", cross_path=False)``). Nothing else changes.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from harness.core.errors import ConfigError, HarnessError, did_you_mean
from harness.core.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from harness.engine.job import JobContext
    from harness.spaces.base import Arch


class JobFailed(HarnessError):
    """A job that cannot produce scores (NaN loss, bad option for this space); others go on."""

    status = "failed"

    def __init__(self, reason: str, step: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.step = step


class Collapsed(JobFailed):
    """Constant outputs: the job is marked `collapsed` and given no tau."""

    status = "collapsed"


class Scorer(ABC):
    """Scores architectures; higher = predicted better."""

    @abstractmethod
    def score(self, archs: Sequence["Arch"]) -> np.ndarray: ...

    def subsets(self) -> dict[str, list["Arch"]]:
        """Method-specific architecture subsets scored and reported besides the run's set
        (e.g. SE-NAS `survivors`)."""
        return {}

    def picked(self) -> "Arch | None":
        """The architecture the method itself derives, where it derives one (e.g. argmax alpha)."""
        return None

    def extra(self) -> dict:
        """Per-job values to record in the manifest (learned codes' spread, shrink history...)."""
        return {}


@dataclass(frozen=True)
class MethodConfig:
    """Base config; methods subclass it with their own fields."""


def rng_state_hooks(rng: np.random.Generator, key: str = "path_rng") -> dict:
    """``get_state`` / ``set_state`` for ``SupernetTrainer.run`` when a method's only training state
    besides the weights is one numpy path RNG (checkpointed so a resumed run samples the same paths)."""
    return {"get_state": lambda: {key: rng.bit_generator.state},
            "set_state": lambda s: setattr(rng.bit_generator, "state", s[key])}


class Method(ABC):
    Config: ClassVar[type] = MethodConfig
    trains_supernet: ClassVar[bool] = True  # reference rows set False (no training budget)

    def __init__(self, name: str, config):
        self.name = name
        self.config = config

    @abstractmethod
    def fit(self, job: "JobContext") -> Scorer: ...

    def describe(self) -> dict:
        return {"class": type(self).__name__, "config": dataclasses.asdict(self.config)}


@dataclass(frozen=True)
class MethodEntry:
    """A registered method name: its class and the config overrides that make the variant."""

    cls: type
    overrides: tuple = ()

    def create(self, name: str) -> "Method":
        fields = {f.name for f in dataclasses.fields(self.cls.Config)}
        bad = [k for k in dict(self.overrides) if k not in fields]
        if bad:  # a variant registered with a field its config does not have
            raise ConfigError(f"method '{name}' overrides unknown {self.cls.Config.__name__} field(s) "
                              f"{', '.join(bad)}{did_you_mean(bad[0], fields)}; fix its register_method(...)")
        return self.cls(name, self.cls.Config(**dict(self.overrides)))


def _method_entry(name: str, obj) -> MethodEntry:
    """An entry point may name a ``Method`` subclass (registered without overrides)."""
    if isinstance(obj, MethodEntry):
        return obj
    if isinstance(obj, type) and issubclass(obj, Method):
        return MethodEntry(obj)
    raise TypeError(f"method entry point '{name}' names {obj!r}, not a Method subclass")


# built-in methods are the modules of the top-level `methods` package (found, not imported, here)
METHODS: Registry[MethodEntry] = Registry("method", builtin_packages=("methods",), coerce=_method_entry)


def register_method(name: str, **overrides):
    """Class decorator; stack it to register variants with config overrides."""

    def deco(cls):
        METHODS.add(name, MethodEntry(cls, tuple(sorted(overrides.items()))))
        return cls

    return deco


def create_method(name: str) -> Method:
    return METHODS.get(name).create(name)


def method_names() -> list[str]:
    return METHODS.names()
