"""One registry per extension kind (methods, suites, ground-truth providers, executors).

A ``Registry`` maps names to objects. Entries arrive three ways, and all resolve on first lookup:
- ``register(name)`` as a decorator, or ``add(name, obj)``, from the module that defines the object;
- ``add_lazy(name, "module:attr")``: the module is imported when the name is first used;
- discovery: the registry's built-in packages (every module of them is imported, so each can
  register itself) and the Python entry points of its group, so a third-party distribution
  registers a method with ``[project.entry-points."supernet_harness.methods"] mymethod = "pkg.mod:MyMethod"``.
  An entry point whose value is a module (``"pkg.mod"``) is imported and registers itself.

Built-in packages are named, not imported here: the registry sits in the bottom layer and must not
import the plugins it finds.
"""
from __future__ import annotations

import importlib
import pkgutil
import types
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from harness.core.errors import ConfigError, unknown_name

T = TypeVar("T")

ENTRY_POINT_PREFIX = "supernet_harness."
_MISSING = object()


def load_object(spec: str):
    """``"package.module:attr"`` -> the attribute; ``"package.module"`` -> the module."""
    module, _, attr = spec.partition(":")
    obj = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    def __init__(self, kind: str, *, builtin_packages: tuple[str, ...] = (), entry_point_group: str | None = None,
                 coerce: Callable[[str, object], T] | None = None):
        self.kind = kind
        self.builtin_packages = builtin_packages
        self.entry_point_group = entry_point_group or f"{ENTRY_POINT_PREFIX}{kind}s"
        self._coerce = coerce or (lambda name, obj: obj)
        self._entries: dict[str, T] = {}
        self._lazy: dict[str, str] = {}
        self._discovered = False
        self.origins: dict[str, str] = {}  # name -> where it came from ("builtin", "entry point dist==ver")

    # --- adding ------------------------------------------------------------------------
    def add(self, name: str, obj: T, *, replace: bool = False) -> T:
        old = self._entries.get(name)
        if old is not None and old is not obj and not replace and not self._same(old, obj):
            raise ConfigError(f"{self.kind} name '{name}' is registered twice; rename one of them")
        self._entries[name] = obj
        self._lazy.pop(name, None)
        self.origins.setdefault(name, "builtin")
        return obj

    @staticmethod
    def _same(a, b) -> bool:
        # a module re-imported under the same name registers an equal object again
        return a == b

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add_lazy(self, name: str, spec: str) -> None:
        if name not in self._entries:
            self._lazy[name] = spec

    # --- finding ------------------------------------------------------------------------
    def discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for package in self.builtin_packages:
            pkg = importlib.import_module(package)
            for info in pkgutil.iter_modules(pkg.__path__):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{package}.{info.name}")
        for ep in metadata.entry_points(group=self.entry_point_group):
            before = set(self._entries)
            obj = self.load_entry_point(ep)
            dist = f"entry point {ep.dist.name if ep.dist else '?'} ({ep.value})"
            if isinstance(obj, types.ModuleType):  # the module registered itself on import
                for name in set(self._entries) - before:
                    self.origins[name] = dist
                continue
            self.add(ep.name, self._coerce(ep.name, obj))
            self.origins[ep.name] = dist

    def load_entry_point(self, ep: metadata.EntryPoint):
        """The object an entry point names (a registry whose group allows other values, such as
        the suites' TOML files, overrides this)."""
        return ep.load()

    def _resolve(self, name: str) -> None:
        if name in self._lazy:
            spec = self._lazy.pop(name)
            obj = load_object(spec)
            if name not in self._entries:  # a module spec registers itself; an attr spec is the object
                self.add(name, self._coerce(name, obj))

    def get(self, name: str, default=_MISSING) -> T:
        """The object registered as ``name``; unknown names raise a did-you-mean ``ConfigError``
        unless a ``default`` is given."""
        if name not in self._entries and name not in self._lazy:
            self.discover()
        self._resolve(name)
        if name not in self._entries:
            if default is not _MISSING:
                return default
            raise unknown_name(self.kind, name, self.names())
        return self._entries[name]

    def names(self) -> list[str]:
        self.discover()
        return sorted({*self._entries, *self._lazy})

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(n, self.get(n)) for n in self.names()]

    def values(self) -> list[T]:
        return [self.get(n) for n in self.names()]

    def __len__(self) -> int:
        return len(self.names())

    # mapping access, so a test can put an entry in for its duration (monkeypatch.setitem)
    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __setitem__(self, name: str, obj: T) -> None:
        self.add(name, obj, replace=True)

    def __delitem__(self, name: str) -> None:
        self._entries.pop(name, None)
        self._lazy.pop(name, None)
        self.origins.pop(name, None)
