"""Search spaces by name: a suite's TOML names its space (``space = "resnet-probe"``).

Built-in spaces are lazy entries (the module is imported when the name is first used); a
third-party space registers through the ``supernet_harness.spaces`` entry-point group, whose value
is a ``SearchSpace`` subclass (or any callable that returns a ``SearchSpace``)::

    [project.entry-points."supernet_harness.spaces"]
    my-space = "my_pkg.space:MySpace"
"""
from __future__ import annotations

from collections.abc import Callable

from harness.core.registry import Registry
from harness.spaces.base import SearchSpace

SpaceFactory = Callable[[], SearchSpace]


def _space_entry(name: str, obj) -> SpaceFactory:
    if isinstance(obj, type) and issubclass(obj, SearchSpace):
        return obj
    if isinstance(obj, type) or not callable(obj):
        raise TypeError(f"search space '{name}' names {obj!r}, not a harness.spaces.base.SearchSpace subclass")
    return obj


SPACES: Registry[SpaceFactory] = Registry("search space", entry_point_group="supernet_harness.spaces",
                                          coerce=_space_entry)
SPACES.add_lazy("nb201", "harness.spaces.nb201:Nb201Space")
SPACES.add_lazy("resnet-probe", "harness.spaces.resnet_probe:ResNetProbeSpace")
SPACES.add_lazy("mobilenet-probe", "harness.spaces.mobilenet_probe:MobileNetProbeSpace")


def make_space(name: str) -> SearchSpace:
    """A fresh instance of the space registered as ``name`` (did-you-mean on unknown names)."""
    return SPACES.get(name)()
