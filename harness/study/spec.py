"""A study's config (``RunConfig``) and the study file that holds it (``study.toml``).

``harness run --study FILE`` reads a study file (``read_study``), lays the flags given on the command
line over it (``config_from_study``) and records which values came from where (``study_source``);
every run folder gets the ``study.toml`` that reproduces it (``study_toml``). The file holds the
fields that change numbers at its top level (``[budget_overrides]`` as a table) and, optionally, how
the run is executed in an ``[execution]`` table. TOML has no null: a field left out takes its default.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import numbers
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness.budgets import Budget
from harness.core.errors import ConfigError, did_you_mean
from harness.suites import get_suite

DEFAULT_METHODS = ("spos", "params", "flops", "random")
STUDY_FILE = "study.toml"
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class RunConfig:
    suite: str = "nb201"
    dataset: str = "cifar10"  # what the supernet trains on (NB201: cifar10, cifar100, imagenet16-120)
    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: tuple[int, ...] = (0, 1, 2)
    budget: str = "smoke"
    archs: str | None = None  # None: the budget's default set
    gt: tuple[str, ...] | None = None  # None: the suite's default columns
    out: str | None = None
    data_dir: str | None = None
    gt_file: str | None = None
    cache_dir: str | None = None
    arch_seed: int = 0  # the scored set is the same for every method and seed
    device: str = "cpu"
    precision: str = "fp32"
    executor: str = "local"
    jobs: int = 1
    ray_address: str | None = None  # --executor ray: an existing cluster ("auto", "ray://host:10001"); None starts one
    max_retries: int = 2  # --executor ray: resubmissions of a crashed/preempted job (resumes from its checkpoint)
    copy_isomorphic: bool = False  # score one representative per isomorphism class, copy its score to the class
    progress: bool = True
    report: bool = True
    budget_overrides: tuple[tuple[str, object], ...] = ()
    compare: tuple[str, ...] = ()  # extra "A:B" pairs for the paired tau test (beside X vs spos / params)

    def resolved_budget(self) -> Budget:
        return get_suite(self.suite).budget(self.budget, self.budget_overrides)


# how a run is executed, never what it computes: resuming with other values continues the run
EXECUTION_FIELDS = frozenset({"out", "progress", "jobs", "executor", "ray_address", "max_retries", "report", "compare",
                              "data_dir", "cache_dir"})


def config_differences(old: dict, cfg: RunConfig) -> list[str]:
    """The fields (execution fields aside) in which a manifest's ``config`` differs from ``cfg``'s.
    A field the manifest lacks (it predates the field) counts as its default (e.g. ``dataset``:
    cifar10), so older run folders resume."""
    mine, default = json_config(cfg), json_config(RunConfig())
    return sorted(k for k in mine if k not in EXECUTION_FIELDS and old.get(k, default[k]) != mine[k])


def json_config(cfg: RunConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d["methods"], d["seeds"] = list(cfg.methods), list(cfg.seeds)
    d["gt"] = list(cfg.gt) if cfg.gt else None
    d["budget_overrides"] = {k: v for k, v in cfg.budget_overrides}
    return d


# --- a small TOML writer: str, int, float, bool, lists of those, one level of tables ---------
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_string(key)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        v = float(value)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)  # shortest text that reads back as the same float; valid TOML
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} to TOML")


def toml_dumps(data: dict, header: str = "") -> str:
    """``data``'s plain values first, then each dict value as a ``[table]`` (one level)."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    plain = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in plain.items()]
    for name, table in tables.items():
        lines += ["", f"[{toml_key(name)}]"]
        for k, v in table.items():
            if isinstance(v, dict):
                raise TypeError(f"table [{name}].{k}: only one level of tables is written")
            lines.append(f"{toml_key(k)} = {toml_value(v)}")
    return "\n".join(lines).lstrip("\n") + "\n"


# --- the study file ---------------------------------------------------------------------
# key -> (type, what is allowed): top level (what a run computes) and [execution] (how it runs)
STUDY_KEYS = {
    "suite": ("str", "a suite name (see `harness list`)"),
    "dataset": ("str", 'a data set, e.g. "cifar10", "cifar100" or "imagenet16-120"'),
    "methods": ("list[str]", 'a list of method names, e.g. ["spos", "params"]'),
    "seeds": ("list[int]", "a list of integers, e.g. [0, 1, 2]"),
    "budget": ("str", "a budget name (see `harness list`)"),
    "archs": ("str", 'an architecture set, e.g. "sample:1000" or "all"'),
    "arch_seed": ("int", "an integer"),
    "gt": ("list[str]", 'a list of ground-truth columns, e.g. ["cifar10_test_200ep"]'),
    "gt_file": ("str", "a path"),
    "device": ("str", 'a device, e.g. "cpu" or "cuda"'),
    "precision": ("precision", " or ".join(f'"{p}"' for p in PRECISIONS)),
    "copy_isomorphic": ("bool", "true or false"),
    "compare": ("list[str]", 'a list of "A:B" method pairs'),
    "budget_overrides": ("table", "a table of budget fields, e.g. [budget_overrides] epochs = 10"),
}
EXECUTION_KEYS = {
    "executor": ("str", 'an executor, e.g. "local" or "ray"'),
    "jobs": ("int", "an integer >= 1"),
    "ray_address": ("str", 'a Ray address, e.g. "auto"'),
    "max_retries": ("int", "an integer >= 0"),
    "progress": ("bool", "true or false"),
    "report": ("bool", "true or false"),
    "out": ("str", "a path"),
    "data_dir": ("str", "a path"),
    "cache_dir": ("str", "a path"),
}
EXECUTION_TABLE = "execution"
TUPLE_FIELDS = ("methods", "seeds", "gt", "compare")


def _type_ok(kind: str, value) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "precision":
        return value in PRECISIONS
    if kind == "list[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "list[int]":
        return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if kind == "table":
        return isinstance(value, dict) and all(isinstance(v, (str, int, float, bool)) for v in value.values())
    raise AssertionError(kind)


def _shown(value) -> str:
    """A value as the file spells it, on one line."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {_shown(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    try:
        return toml_value(value)
    except TypeError:  # dates and times
        return str(value)


def _check(path: Path, where: str, data: dict, schema: dict, other: dict, other_where: str,
           extra: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if key not in schema:
            if key in other:
                raise ConfigError(f"study file {path}: '{key}' belongs in {other_where}, not {where}")
            raise ConfigError(f"study file {path}: unknown key '{key}' in {where}{did_you_mean(key, schema)}; "
                              f"allowed: {', '.join(schema)}{extra}")
        kind, allowed = schema[key]
        if not _type_ok(kind, value):
            raise ConfigError(f"study file {path}: {key} = {_shown(value)}: give {allowed}")
        out[key] = value
    return out


def read_study(path) -> dict:
    """The study file's values, checked, as RunConfig field names (``[execution]`` flattened,
    ``budget_overrides`` a dict); keys left out of the file are absent."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"study file {path} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"study file {path} is a folder; name a .toml file (e.g. RUN/{STUDY_FILE})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"study file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"study file {path} is not valid TOML: {exc}") from None
    execution = raw.pop(EXECUTION_TABLE, {})
    if not isinstance(execution, dict):
        raise ConfigError(f"study file {path}: {EXECUTION_TABLE} = {_shown(execution)}: give a table "
                          f"([{EXECUTION_TABLE}] with executor, jobs, ...)")
    values = _check(path, "the top level", raw, STUDY_KEYS, EXECUTION_KEYS, f"[{EXECUTION_TABLE}]",
                    extra=f", [{EXECUTION_TABLE}]")
    values.update(_check(path, f"[{EXECUTION_TABLE}]", execution, EXECUTION_KEYS, STUDY_KEYS, "the top level"))
    return values


def config_from_study(values: dict, overrides: dict, defaults: dict | None = None) -> RunConfig:
    """RunConfig from, lowest first: its own defaults, ``defaults``, the study file's ``values``,
    ``overrides`` (flags given on the command line). ``budget_overrides`` are merged key by key."""
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    layers = [defaults or {}, values, overrides]
    for layer in layers:
        unknown = sorted(set(layer) - fields)
        if unknown:
            raise ConfigError(f"unknown config field '{unknown[0]}'{did_you_mean(unknown[0], fields)}")
    merged: dict = {}
    budget_overrides: dict = {}
    for layer in layers:
        merged.update(layer)
        budget_overrides.update(dict(layer.get("budget_overrides", ())))
    merged["budget_overrides"] = tuple(budget_overrides.items())
    for key in TUPLE_FIELDS:
        if merged.get(key) is not None:
            merged[key] = tuple(merged[key])
    return RunConfig(**merged)


def flag_name(field: str) -> str:
    return "--set" if field == "budget_overrides" else "--" + field.replace("_", "-")


def study_source(path, values: dict, overrides: dict) -> dict:
    """The manifest's record of a ``--study`` run: the file (path, sha256), which fields it gave,
    and which flags replaced one of its values (``--set KEY`` per budget field)."""
    path = Path(path)
    file_bo = dict(values.get("budget_overrides", {}))
    flag_bo = dict(overrides.get("budget_overrides", ()))
    from_file = [k for k in values if k != "budget_overrides" and k not in overrides]
    from_file += [f"budget_overrides.{k}" for k in file_bo if k not in flag_bo]
    overridden = [flag_name(k) for k in overrides if k != "budget_overrides" and k in values]
    overridden += [f"--set {k}" for k in flag_bo if k in file_bo]
    return {"path": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "from_file": from_file, "overridden_by_flags": overridden}


def study_toml(cfg: RunConfig) -> str:
    """The study file that reproduces ``cfg``'s numbers: ``harness run --study FILE --out NEW``.
    Paths of the machine (out, data and cache dirs) are left out; ``None`` fields are left out."""
    top: dict = {"suite": cfg.suite, "dataset": cfg.dataset, "budget": cfg.budget, "methods": list(cfg.methods),
                 "seeds": list(cfg.seeds)}
    if cfg.archs is not None:
        top["archs"] = cfg.archs
    top["arch_seed"] = cfg.arch_seed
    if cfg.gt is not None:
        top["gt"] = list(cfg.gt)
    if cfg.gt_file is not None:
        top["gt_file"] = cfg.gt_file
    top.update(device=cfg.device, precision=cfg.precision, copy_isomorphic=cfg.copy_isomorphic,
               compare=list(cfg.compare))
    if cfg.budget_overrides:
        top["budget_overrides"] = dict(cfg.budget_overrides)
    execution = {"executor": cfg.executor, "jobs": cfg.jobs, "max_retries": cfg.max_retries}
    if cfg.ray_address is not None:
        execution["ray_address"] = cfg.ray_address
    top[EXECUTION_TABLE] = execution
    header = ("A harness study. `harness run --study study.toml --out NEW` reruns it: the same numbers;\n"
              "flags given beside --study override the file. [execution] changes how it runs, never its numbers.")
    return toml_dumps(top, header)
