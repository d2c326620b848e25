"""Architecture sets to score: all, unique, sample:N, file:PATH, or a space's named subset."""
from __future__ import annotations

from pathlib import Path

from harness.core.errors import ArchError, ConfigError
from harness.core.seeding import numpy_rng
from harness.spaces.base import Arch, SearchSpace

MAX_ENUMERATE = 200_000


def _all(space: SearchSpace) -> list[Arch]:
    if space.size > MAX_ENUMERATE:
        raise ConfigError(f"--archs all: {space.name} has {space.size:.3g} architectures; use sample:N or file:PATH")
    return [a for a in space.enumerate() if space.is_allowed(a)]


def resolve_archs(space: SearchSpace, spec: str, seed: int = 0) -> list[Arch]:
    """The run's architecture list; the same for every method and seed of a run."""
    spec = spec.strip()
    kind, _, arg = spec.partition(":")
    if kind == "all" and not arg:
        return _all(space)
    if kind == "unique" and not arg:
        seen, out = set(), []
        for a in _all(space):
            key = space.isomorphism_key(a)
            if key is None:
                raise ConfigError(f"--archs unique: space {space.name} defines no isomorphism key; use all or sample:N")
            if key not in seen:
                seen.add(key)
                out.append(a)
        return out
    if kind == "sample":
        try:
            n = int(arg)
            if n < 1:
                raise ValueError
        except ValueError:
            raise ConfigError(f"--archs '{spec}': N must be a positive integer, e.g. sample:1000") from None
        rng = numpy_rng("archs", seed)
        if space.size <= MAX_ENUMERATE:
            pool = _all(space)
            if n > len(pool):
                raise ConfigError(f"--archs '{spec}': the space has only {len(pool)} architectures; use all")
            return [pool[i] for i in sorted(rng.choice(len(pool), size=n, replace=False))]
        out, seen = [], set()
        while len(out) < n:  # huge spaces: rejection-sample distinct allowed architectures
            a = space.sample(rng)
            if a not in seen and space.is_allowed(a):
                seen.add(a)
                out.append(a)
        return out
    if kind == "file":
        path = Path(arg)
        if not path.is_file():
            raise ConfigError(f"--archs file: '{path}' does not exist; give a text file with one architecture per line")
        out = []
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                out.append(space.parse(line))
            except ArchError as exc:
                raise ArchError(f"{path}:{lineno}: {exc}") from None
        if not out:
            raise ConfigError(f"--archs file: '{path}' lists no architectures")
        return list(dict.fromkeys(out))
    subsets = space.named_subsets()
    if spec in subsets:
        return [a for a in _all(space) if subsets[spec](a)]
    options = ["all", "unique", "sample:N", "file:PATH", *subsets]
    raise ConfigError(f"unknown architecture set '{spec}'; choose one of: {', '.join(options)}")
