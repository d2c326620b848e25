"""Ground-truth providers, found by name through ``GT_PROVIDERS``: a suite's TOML names one
(``gt_provider = "standalone-probe"``).

Every provider is a callable with one signature::

    load(suite, space, *, data_dir, gt_file, budget, cache_dir, device, say) -> GroundTruth

``budget`` is ``None`` where the caller knows none (a report): then the provider must not train
anything. ``suite`` is the ``harness.suites.Suite`` asking (its name, its fixed architecture list
``archs``, its committed table ``gt_table``, its ``shape_budget``); this module does not import
the suites, which sit beside it and use it.

Built-in providers:
- ``benchmark``: the NB201 table (our CSV) or the official NATS-Bench file (``--gt-file``: the
  ``-simple`` folder or the single archive; a partial one answers the architectures it holds);
  budget and device do not change it.
- ``standalone-probe``: ``--gt-file`` if given; else the suite's committed table; else the
  standalone cache at the run's budget (training what is missing, and saying so).

A third-party provider registers through the ``supernet_harness.gt_providers`` entry-point group
(value: the callable).
"""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from harness.archsets import resolve_archs
from harness.budgets import BUDGETS, Budget
from harness.core.errors import DataError
from harness.core.paths import REPO_ROOT, default_cache_dir
from harness.core.registry import Registry
from harness.groundtruth.base import CsvGroundTruth, GroundTruth, load_ground_truth
from harness.groundtruth.standalone import PROBE_SEEDS, StandaloneCache
from harness.groundtruth.table import TableGroundTruth, format_noise, gt_table
from harness.spaces.base import Arch, SearchSpace

PROVIDER_PARAMS = ("data_dir", "gt_file", "budget", "cache_dir", "device", "say")
SIGNATURE = "load(suite, space, *, data_dir, gt_file, budget, cache_dir, device, say) -> GroundTruth"

GtProvider = Callable[..., GroundTruth]


class ProviderSuite(Protocol):
    """What a provider may ask of the suite it loads for."""

    name: str
    archs: str | None
    gt_table: Path | None

    def shape_budget(self, budget: Budget) -> Budget: ...


def check_provider(name: str, obj) -> GtProvider:
    """``obj`` if it is a callable that accepts the one provider signature, else TypeError."""
    if not callable(obj):
        raise TypeError(f"ground-truth provider '{name}' names {obj!r}, not a callable {SIGNATURE}")
    try:
        inspect.signature(obj).bind(None, None, **dict.fromkeys(PROVIDER_PARAMS))
    except TypeError:
        raise TypeError(f"ground-truth provider '{name}' ({obj!r}) does not accept {SIGNATURE}") from None
    except ValueError:  # pragma: no cover - a builtin without a signature: take it on trust
        pass
    return obj


GT_PROVIDERS: Registry[GtProvider] = Registry("ground-truth provider",
                                              entry_point_group="supernet_harness.gt_providers", coerce=check_provider)


def register_gt_provider(name: str) -> Callable[[GtProvider], GtProvider]:
    def deco(fn: GtProvider) -> GtProvider:
        return GT_PROVIDERS.add(name, check_provider(name, fn))

    return deco


# --- benchmark --------------------------------------------------------------------------
@register_gt_provider("benchmark")
def benchmark(suite: ProviderSuite, space: SearchSpace, *, data_dir, gt_file, budget, cache_dir, device,
              say) -> GroundTruth:
    """The benchmark table (NB201 CSV or NATS-Bench file); budget and device do not change it (the
    cache dir keeps a complete NATS-Bench folder's space optimum)."""
    gt = load_ground_truth(space, data_dir, gt_file, cache_dir=cache_dir, say=say)
    if gt_file is not None and not isinstance(gt, CsvGroundTruth):
        say(f"ground truth: {gt.source}")
    return gt


# --- standalone-probe -------------------------------------------------------------------
def suite_archs(suite: ProviderSuite, space: SearchSpace) -> list[Arch]:
    """The suite's fixed architecture list (its TOML's ``archs``)."""
    if not suite.archs:
        raise DataError(f"suite {suite.name} fixes no architecture list; its ground truth is trained on one "
                        f"(add archs = \"file:{suite.name}.txt\" to the suite's TOML)")
    return resolve_archs(space, suite.archs)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def load_committed_gt(suite: ProviderSuite, space: SearchSpace) -> TableGroundTruth:
    """The suite's committed GT table (the harness's own output, versioned with the probe list)."""
    path = Path(suite.gt_table)
    gt = TableGroundTruth.from_csv(path, space)
    b = gt.meta.get("budget", {})
    gt.source = (f"committed table {_shown(path)} (standalone, budget {b.get('name', '?')}: "
                 f"C={b.get('channels', '?')}, {b.get('resolution', '?')}px, {b.get('standalone_epochs', '?')} "
                 f"epochs; seeds {gt.noise['seeds']})")
    return gt


def _has_committed(suite: ProviderSuite) -> bool:
    return suite.gt_table is not None and Path(suite.gt_table).is_file()


def standalone_gt_at_budget(suite: ProviderSuite, space: SearchSpace, budget: Budget, data_dir: Path | None,
                            gt_file: Path | None, cache_dir: Path, device: str = "cpu",
                            say: Callable[[str], None] = print) -> TableGroundTruth:
    """``--gt-file`` if given; else the committed GT table; else the standalone cache at ``budget``
    (training the missing results, and saying so)."""
    if gt_file is not None:
        return TableGroundTruth.from_csv(Path(gt_file), space)
    if _has_committed(suite):
        gt = load_committed_gt(suite, space)
        say(f"ground truth: {gt.source}; {format_noise(gt.noise)}")
        return gt
    archs = suite_archs(suite, space)
    cache = StandaloneCache(space, budget, cache_dir, str(data_dir) if data_dir else None, device, say)
    if cache.missing(archs, PROBE_SEEDS):
        say(f"ground truth: no committed GT for {suite.name}; building the standalone GT at budget {budget.name} "
            f"(cached; `harness gt --suite {suite.name} --budget {budget.name}` builds it ahead)")
    table = gt_table(cache.build(archs, PROBE_SEEDS))
    return TableGroundTruth(table, space, f"standalone cache ({budget.name}, seeds {list(PROBE_SEEDS)})",
                            {"budget": dataclasses.asdict(budget)})


def cached_standalone_gt(suite: ProviderSuite, space: SearchSpace, gt_file: Path | None,
                         cache_dir: Path | None) -> TableGroundTruth:
    """A probe GT without a budget: ``--gt-file``, the committed table, else the first of the named
    budgets (at the suite's shapes) whose GT is fully cached. Never trains."""
    if gt_file is not None:
        return TableGroundTruth.from_csv(Path(gt_file), space)
    if _has_committed(suite):
        return load_committed_gt(suite, space)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    archs = suite_archs(suite, space)
    for b in BUDGETS.values():
        budget = suite.shape_budget(b)
        cache = StandaloneCache(space, budget, cache_dir, None, say=lambda m: None)
        if not cache.missing(archs, PROBE_SEEDS):
            return TableGroundTruth(gt_table(cache.build(archs, PROBE_SEEDS)), space,
                                    f"standalone cache ({budget.name}, seeds {list(PROBE_SEEDS)})")
    raise DataError(f"no committed or cached standalone GT for {suite.name} in {cache_dir / 'standalone'}; "
                    f"build it with `harness gt --suite {suite.name} --budget smoke`")


@register_gt_provider("standalone-probe")
def standalone_probe(suite: ProviderSuite, space: SearchSpace, *, data_dir, gt_file, budget, cache_dir, device,
                     say) -> GroundTruth:
    """With a budget: that budget's GT (built when missing). Without (callers that know no budget,
    e.g. a report): the committed GT, else the first fully cached budget; never trains."""
    if budget is None:
        return cached_standalone_gt(suite, space, gt_file, cache_dir)
    return standalone_gt_at_budget(suite, space, budget, data_dir, gt_file, cache_dir, device, say)
