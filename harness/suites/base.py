"""A suite: a search space, its dataset, its ground truth and its per-budget shapes, registered by name.

Suites are data: one TOML file per suite. Every ``*.toml`` in ``harness/suites_data/`` is a
built-in suite, so a new suite is a file, not an edit::

    name = "my-suite"                      # the name `--suite` takes
    description = "what it is"             # optional
    space = "resnet-probe"                 # a name in harness.spaces.registry.SPACES
    dataset = "cifar10"                    # a name in harness.data.datasets.DATASETS: the default `--dataset`
    gt_provider = "standalone-probe"       # a name in harness.groundtruth.providers.GT_PROVIDERS
    default_gt = ["standalone"]            # the GT columns a run ranks against unless --gt says
    archs = "file:my-suite.txt"            # optional: the scored set the suite fixes (file: relative to this TOML)
    gt_table = "my-suite-gt.csv"           # optional: the committed GT table (relative to this TOML)
    standalone_gt = true                   # optional (false): the harness trains this suite's GT
    [default_gt_by_dataset]                # optional: the data sets `--dataset` may name (besides
    cifar100 = ["cifar100_test_200ep"]     # `dataset`) and the default GT columns of each
    [budgets.smoke]                        # optional, one table per named budget: its shapes for this
    channels = 4                           # suite, put on the budget before `--set` overrides
    resolution = 16

Every file is validated completely when the registry is first used: an unknown or missing key,
a wrong type, an unknown space, provider or budget name, a bad budget field: one line naming the
file, the key and the fix (``ConfigError``).

A third-party suite registers through the ``supernet_harness.suites`` entry-point group; the value
names a ``Suite`` object, a path (``str`` or ``Path``) to a suite TOML, or a TOML file inside a
package (``"my_pkg.data:my-suite.toml"``); a module value that calls ``register_suite`` works too.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from harness.budgets import BUDGETS, Budget, get_budget
from harness.core.errors import ConfigError, did_you_mean, unknown_name
from harness.core.paths import SUITES_DATA
from harness.core.registry import Registry
from harness.data.datasets import DATASETS
from harness.groundtruth.base import GroundTruth
from harness.groundtruth.providers import GT_PROVIDERS
from harness.groundtruth.standalone import (NB201_STANDALONE_SEEDS, CompositeGroundTruth, StandaloneCache,
                                            StandaloneGroundTruth)
from harness.groundtruth.table import STANDALONE
from harness.spaces.base import SearchSpace
from harness.spaces.registry import SPACES


@dataclass(frozen=True)
class Suite:
    name: str
    space: str  # a SPACES name
    gt_provider: str  # a GT_PROVIDERS name
    default_gt: tuple[str, ...]
    dataset: str = "cifar10"
    description: str = ""
    # the scored set the suite fixes (probe suites: "file:<abs path>"), put on every budget; None:
    # the budget's own
    archs: str | None = None
    # the suite's own GT is trained by the harness at the run's budget (probe suites)
    standalone_gt: bool = False
    # budget name -> this suite's shapes for it (its TOML's [budgets.<name>]), applied before `--set`
    shapes: Mapping[str, Mapping[str, object]] = field(default_factory=dict, hash=False)
    # the committed GT table (standalone-probe), absent until `harness gt --commit` writes it
    gt_table: Path | None = None
    source: str = ""  # where the suite was defined (its TOML)
    # other data sets `--dataset` may name -> their default GT columns (its TOML's [default_gt_by_dataset])
    default_gt_by_dataset: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    @property
    def datasets(self) -> tuple[str, ...]:
        """The data sets a run of this suite may train on (``dataset`` first)."""
        return (self.dataset, *(d for d in self.default_gt_by_dataset if d != self.dataset))

    def default_gt_for(self, dataset: str) -> tuple[str, ...]:
        """The GT columns a run on ``dataset`` ranks against unless ``--gt`` says."""
        return tuple(self.default_gt_by_dataset.get(dataset, self.default_gt))

    def check_dataset(self, dataset: str) -> None:
        """One ConfigError line unless this suite runs on ``dataset``."""
        if dataset not in self.datasets:
            raise ConfigError(f"--dataset {dataset}: suite {self.name} runs on {' or '.join(self.datasets)} only "
                              f"(its ground truth is for {'those' if len(self.datasets) > 1 else 'that'}); "
                              f"drop --dataset or use --suite nb201")

    def make_space(self) -> SearchSpace:
        return SPACES.get(self.space)()

    def load_gt(self, space: SearchSpace, *, data_dir: Path | None = None, gt_file: Path | None = None,
                budget: Budget | None = None, cache_dir: Path | None = None, device: str = "cpu",
                say: Callable[[str], None] = print) -> GroundTruth:
        """The suite's ground truth from its provider; ``budget`` None (a report): train nothing."""
        provider = GT_PROVIDERS.get(self.gt_provider)
        return provider(self, space, data_dir=data_dir, gt_file=gt_file, budget=budget, cache_dir=cache_dir,
                        device=device, say=say)

    def shape_budget(self, budget: Budget) -> Budget:
        """The budget with this suite's shapes for its name and the suite's fixed architecture list;
        a suite with neither leaves the budget as it is."""
        shape = dict(self.shapes.get(budget.name, {}))
        if not shape and self.archs is None:
            return budget
        b = dataclasses.replace(budget, **shape)
        # the note (regenerated by `replace`) describes the shaped budget; the purpose names the suite
        changes: dict[str, object] = {"purpose": f"{self.name} at {b.name}"}
        if self.archs is not None:
            changes["archs"] = self.archs
        return b.replace(**changes)

    def budget(self, name: str, overrides: Sequence[tuple[str, object]] = ()) -> Budget:
        """The named budget with this suite's shapes, then ``--set`` overrides (validated)."""
        b = self.shape_budget(get_budget(name))
        return b.replace(**dict(overrides)) if overrides else b

    def run_ground_truth(self, space: SearchSpace, budget: Budget, data_dir: Path | None, gt_file: Path | None,
                         cache_dir: Path, columns: Sequence[str], device: str = "cpu",
                         say: Callable[[str], None] = print, dataset: str = "cifar10") -> GroundTruth:
        """A run's GT: the suite's own, plus standalone-at-budget (trained and measured on ``dataset``)
        when a `standalone` column is asked for and the suite's GT lacks it (NB201 `--gt standalone`)."""
        base = self.load_gt(space, data_dir=data_dir, gt_file=gt_file, budget=budget, cache_dir=cache_dir,
                            device=device, say=say)
        wants = [c for c in columns if c.startswith(STANDALONE) and c not in base.columns]
        if not wants:
            return base
        seeds = tuple(sorted({*NB201_STANDALONE_SEEDS, *(int(c.rsplit("_s", 1)[1]) for c in wants if "_s" in c)}))
        cache = StandaloneCache(space, budget, cache_dir, str(data_dir) if data_dir else None, device, say,
                                dataset=dataset)
        bench = [c for c in columns if c in base.columns] or list(self.default_gt_for(dataset)[:1])
        return CompositeGroundTruth([base, StandaloneGroundTruth(cache, seeds)], fidelity_columns=bench)


# --- suite files ----------------------------------------------------------------------------
# key -> (required, what it holds, an example for the fix)
SUITE_KEYS: dict[str, tuple[bool, str, str]] = {
    "name": (True, "a string", 'name = "my-suite"'),
    "description": (False, "a string", 'description = "what the suite is"'),
    "space": (True, "a string", 'space = "nb201"'),
    "dataset": (True, "a data set name", 'dataset = "cifar10"'),
    "gt_provider": (True, "a string", 'gt_provider = "benchmark"'),
    "default_gt": (True, "a non-empty list of strings", 'default_gt = ["standalone"]'),
    "archs": (False, "a string", 'archs = "file:my-suite.txt"'),
    "gt_table": (False, "a string", 'gt_table = "my-suite-gt.csv"'),
    "standalone_gt": (False, "true or false", "standalone_gt = true"),
    "budgets": (False, "tables [budgets.<name>]", "[budgets.smoke] channels = 4"),
    "default_gt_by_dataset": (False, "a table of data set -> non-empty list of GT columns",
                              '[default_gt_by_dataset] cifar100 = ["cifar100_test_200ep"]'),
}
# budget fields a suite may not shape: the name is the table's, the scored set is the top-level
# `archs`, purpose and note are written by the suite
UNSHAPED = {"name": "it is the table's name", "archs": "set the top-level archs key",
            "purpose": "the suite writes it", "note": "the suite writes it"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _fail(path: Path, msg: str) -> ConfigError:
    return ConfigError(f"suite file {path}: {msg}")


def _check_type(path: Path, key: str, value) -> None:
    _required, what, example = SUITE_KEYS[key]
    if key == "default_gt":
        ok = isinstance(value, list) and value and all(isinstance(v, str) and v for v in value)
    elif key == "standalone_gt":
        ok = isinstance(value, bool)
    elif key in ("budgets", "default_gt_by_dataset"):
        ok = isinstance(value, dict)
    else:
        ok = isinstance(value, str) and (value.strip() != "" or key == "description")
    if not ok:
        raise _fail(path, f"{key} = {value!r}: must be {what} (e.g. {example})")


def _dataset(path: Path, key: str, name) -> str:
    if name not in DATASETS:
        raise _fail(path, f"{key} = {name!r}: {unknown_name('data set', str(name), DATASETS)}")
    return name


def _gt_by_dataset(path: Path, table: dict) -> dict[str, tuple[str, ...]]:
    out = {}
    for name, columns in table.items():
        _dataset(path, f"[default_gt_by_dataset] {name}", name)
        if not (isinstance(columns, list) and columns and all(isinstance(c, str) and c for c in columns)):
            raise _fail(path, f"[default_gt_by_dataset] {name} = {columns!r}: must be a non-empty list of GT columns "
                              f"(e.g. {name} = [\"{name}_test_200ep\"])")
        out[name] = tuple(columns)
    return out


def _relative(path: Path, text: str) -> Path:
    p = Path(text).expanduser()
    return p if p.is_absolute() else path.parent / p


def _archs(path: Path, spec: str) -> str:
    kind, _, arg = spec.strip().partition(":")
    if kind != "file":
        return spec.strip()
    target = _relative(path, arg)
    if not target.is_file():
        raise _fail(path, f"archs = {spec!r}: {target} does not exist; give a file of architectures (one per line), "
                          f"relative to the suite file, e.g. archs = \"file:{path.stem}.txt\"")
    return f"file:{target}"


def _shapes(path: Path, budgets: dict) -> dict[str, dict[str, object]]:
    out = {}
    for bname, shape in budgets.items():
        if bname not in BUDGETS:
            raise _fail(path, f"[budgets.{bname}]: unknown budget '{bname}'{did_you_mean(bname, BUDGETS)}; "
                              f"name one of: {', '.join(BUDGETS)}")
        if not isinstance(shape, dict):
            raise _fail(path, f"budgets.{bname} = {shape!r}: must be a table of budget fields "
                              f"(e.g. [budgets.{bname}] channels = 4)")
        for key in shape:
            if key in UNSHAPED:
                raise _fail(path, f"[budgets.{bname}] {key}: a suite does not shape the budget's {key} "
                                  f"({UNSHAPED[key]}); remove it")
        try:
            get_budget(bname).replace(**shape)
        except ConfigError as exc:  # Budget's message, its `--set` example written as TOML
            msg = re.sub(r"\(e\.g\. --set (\w+)=([^)]*)\)", r"(e.g. \1 = \2)", str(exc))
            raise _fail(path, f"[budgets.{bname}]: {msg}") from None
        out[bname] = dict(shape)
    return out


def load_suite_toml(path: str | os.PathLike) -> Suite:
    """The suite a TOML file describes, validated completely (one-line ``ConfigError`` naming the
    file, the key and the fix)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"suite file {path}: cannot read it ({exc.strerror or exc}); give a suite TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise _fail(path, f"not valid TOML ({exc}); fix the syntax") from None
    except UnicodeDecodeError:
        raise _fail(path, "not UTF-8 text; save it as UTF-8") from None
    for key in raw:
        if key not in SUITE_KEYS:
            raise _fail(path, f"unknown key '{key}'{did_you_mean(key, SUITE_KEYS)}; "
                              f"keys are: {', '.join(SUITE_KEYS)}")
    for key, (required, _what, example) in SUITE_KEYS.items():
        if required and key not in raw:
            raise _fail(path, f"missing key '{key}'; add it (e.g. {example})")
        if key in raw:
            _check_type(path, key, raw[key])
    name = raw["name"]
    if not _NAME.fullmatch(name):
        raise _fail(path, f"name = {name!r}: use letters, digits, '.', '_' and '-' (e.g. name = \"{path.stem}\")")
    spaces, providers = SPACES.names(), GT_PROVIDERS.names()
    if raw["space"] not in spaces:
        raise _fail(path, f"space = {raw['space']!r}: {unknown_name('search space', raw['space'], spaces)}")
    if raw["gt_provider"] not in providers:
        raise _fail(path, f"gt_provider = {raw['gt_provider']!r}: "
                          f"{unknown_name('ground-truth provider', raw['gt_provider'], providers)}")
    _dataset(path, "dataset", raw["dataset"])
    archs = _archs(path, raw["archs"]) if "archs" in raw else None
    standalone = raw.get("standalone_gt", False)
    if standalone and archs is None:
        raise _fail(path, f"standalone_gt = true needs the fixed list the harness trains; add archs = "
                          f"\"file:{path.stem}.txt\"")
    return Suite(name=name, space=raw["space"], gt_provider=raw["gt_provider"], default_gt=tuple(raw["default_gt"]),
                 dataset=raw["dataset"], description=raw.get("description", ""), archs=archs,
                 standalone_gt=standalone, shapes=_shapes(path, raw.get("budgets", {})),
                 gt_table=_relative(path, raw["gt_table"]) if "gt_table" in raw else None, source=str(path),
                 default_gt_by_dataset=_gt_by_dataset(path, raw.get("default_gt_by_dataset", {})))


def _suite_entry(name: str, obj) -> Suite:
    if isinstance(obj, (str, os.PathLike)):
        obj = load_suite_toml(obj)
    if not isinstance(obj, Suite):
        raise TypeError(f"suite entry point '{name}' names {obj!r}, not a harness.suites.Suite or a suite TOML path")
    if obj.name != name:
        where = f" ({obj.source})" if obj.source else ""
        raise ConfigError(f"suite entry point '{name}' names suite '{obj.name}'{where}; give the entry point the "
                          f"suite's name")
    return obj


class SuiteRegistry(Registry[Suite]):
    """The suites: every TOML in ``harness/suites_data/`` (built-in), then the entry points."""

    def __init__(self, folder: Path = SUITES_DATA):
        super().__init__("suite", entry_point_group="supernet_harness.suites", coerce=_suite_entry)
        self.folder = folder

    def discover(self) -> None:
        if self._discovered:
            return
        for path in sorted(self.folder.glob("*.toml")):
            suite = load_suite_toml(path)
            self.add(suite.name, suite)
        super().discover()

    def load_entry_point(self, ep: metadata.EntryPoint):
        """``"pkg.module:attr"`` as any registry; ``"pkg:folder/file.toml"``: that file in the package."""
        module, _, rel = ep.value.partition(":")
        if rel.strip().endswith(".toml"):
            return Path(str(importlib.resources.files(module.strip()).joinpath(rel.strip())))
        return ep.load()


SUITES: SuiteRegistry = SuiteRegistry()


def register_suite(suite: Suite) -> Suite:
    return SUITES.add(suite.name, suite)


def register_suite_file(path: str | os.PathLike) -> Suite:
    """Load a suite TOML and register it (a suite outside the package, e.g. in a test)."""
    return register_suite(load_suite_toml(path))


def get_suite(name: str) -> Suite:
    return SUITES.get(name)
