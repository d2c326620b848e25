"""`harness merge RUN [SRC ...]`: bring finished jobs of other run folders of the same study into RUN
and recompute its run-level files.

Why: a study's jobs are independent, so they may run as shards (two processes on one machine, one
per machine, a different seed list each); the run folder they belong to is the one to report and
commit. A shard's job joins RUN only when the shard ran the same study: every config field that
changes numbers (suite, budget, ``--set`` overrides, architectures, ground truth, precision, ...)
equal, methods and seeds aside, and the same resolved budget record (a budget whose defaults
changed between the two runs is refused too). Only finished jobs move (``result.json`` with status
``done``); a job RUN already finished is kept when its scores are the same and refused when they
differ. Copies go to a temporary folder first and are renamed into place, so RUN never holds half
a job. RUN's lock is taken: a run folder whose ``harness run`` is still going is refused.

With no SRC, RUN's files are recomputed from its own job folders (e.g. after copying job folders
by hand). Validation of every source happens before anything is copied.
"""
from __future__ import annotations

import dataclasses
import filecmp
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from harness.core.errors import ConfigError, DataError
from harness.core.io import RunLock, read_json, write_json
from harness.core.provenance import utc_now
from harness.study.aggregate import aggregate_job_folders
from harness.study.jobs import job_name
from harness.study.plan import resolve
from harness.study.spec import EXECUTION_FIELDS, RunConfig, config_differences, config_from_study

# fields a shard may differ in: which jobs it ran, and how
SHARD_FIELDS = frozenset({"methods", "seeds"}) | EXECUTION_FIELDS
# files of a finished job that nothing reads again (resume state)
RESUME_SUFFIXES = (".pt", ".pt.sha256")


def manifest_of(run_dir: Path) -> dict:
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        raise DataError(f"{run_dir} is not a run folder (no manifest.json); give the --out folder of a harness run")
    return read_json(path)


def run_config(manifest: dict, run_dir: Path | None, data_dir: str | None = None) -> RunConfig:
    """The run's config from its manifest (``out`` = ``run_dir``), reading data from this machine
    (``data_dir`` or HARNESS_DATA_DIR), without progress bars or a report."""
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    values = {k: v for k, v in manifest.get("config", {}).items() if k in fields and v is not None}
    return config_from_study(values, {"out": str(run_dir) if run_dir is not None else None, "data_dir": data_dir,
                                      "cache_dir": None, "progress": False, "report": False})


def shard_differences(run_manifest: dict, src_manifest: dict, run_cfg: RunConfig) -> list[str]:
    """What keeps ``src``'s jobs out of the run: differing config fields (methods, seeds and
    execution fields aside) and a differing resolved budget."""
    diff = [k for k in config_differences(src_manifest.get("config", {}), run_cfg) if k not in SHARD_FIELDS]
    if src_manifest.get("budget") != run_manifest.get("budget"):
        ours, theirs = run_manifest.get("budget", {}), src_manifest.get("budget", {})
        diff += [f"budget.{k}" for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k)]
    return diff


def _finished(job_dir: Path) -> bool:
    path = job_dir / "result.json"
    return path.is_file() and (job_dir / "scores.csv").is_file() and read_json(path).get("status") == "done"


def _copy_job(src: Path, dest: Path, platform: dict | None = None) -> None:
    """``src`` job (or diagnostics) folder to ``dest`` via a temporary sibling and a rename. A job
    whose result.json predates per-job platforms gets ``platform`` (its source run's) there, so the
    row keeps the CPU it ran on inside a run whose own manifest names another."""
    tmp = dest.with_name(f".{dest.name}.merge-tmp")
    old = dest.with_name(f".{dest.name}.merge-old")
    for stale in (tmp, old):
        if stale.exists():
            shutil.rmtree(stale)
    shutil.copytree(src, tmp, ignore=lambda _d, names: [n for n in names if n.endswith(RESUME_SUFFIXES)])
    result = tmp / "result.json"
    if platform is not None and result.is_file():
        record = read_json(result)
        if "platform" not in record:
            write_json(result, {**record, "platform": platform})
    if dest.exists():
        dest.rename(old)  # an unfinished attempt of the same job (checkpoints of a resume)
    tmp.rename(dest)
    if old.exists():
        shutil.rmtree(old)


@dataclasses.dataclass(frozen=True)
class MergePlan:
    copy: tuple[tuple[Path, str], ...]  # (source run folder, job name)
    same: tuple[tuple[Path, str], ...]  # finished in both with identical scores: kept
    outside: tuple[tuple[Path, str], ...]  # finished in a source, not a job of the run: left out


def plan_merge(run_dir: Path, sources: Sequence[Path], run_manifest: dict, run_cfg: RunConfig) -> MergePlan:
    """Validate every source and decide, job by job, what moves; raises before anything is copied."""
    wanted = {job_name(m, s) for m in run_cfg.methods for s in run_cfg.seeds}
    copy, same, outside, claimed = [], [], [], {}
    for src in sources:
        src = Path(src)
        if src.resolve() == Path(run_dir).resolve():
            raise ConfigError(f"merge source {src} is the run folder itself; give other run folders")
        diff = shard_differences(run_manifest, manifest_of(src), run_cfg)
        if diff:
            raise ConfigError(f"{src} ran another study than {run_dir} ({', '.join(diff)} differ); only runs of "
                              f"the same study (methods and seeds aside) can be merged")
        for job_dir in sorted(p for p in (src / "jobs").glob("*") if p.is_dir() and _finished(p)):
            name = job_dir.name
            if name not in wanted:
                outside.append((src, name))
                continue
            ours = Path(run_dir) / "jobs" / name
            earlier = claimed.get(name, ours if _finished(ours) else None)
            if earlier is not None:
                if not filecmp.cmp(earlier / "scores.csv", job_dir / "scores.csv", shallow=False):
                    raise DataError(f"job {name} is finished in {earlier.parent.parent} and in {src} with different "
                                    f"scores; remove the one that is wrong before merging")
                same.append((src, name))
                continue
            claimed[name] = job_dir
            copy.append((src, name))
    return MergePlan(tuple(copy), tuple(same), tuple(outside))


def merge_runs(run_dir: Path, sources: Sequence[Path] = (), data_dir: str | None = None,
               say: Callable[[str], None] = print) -> MergePlan:
    """Copy the sources' finished jobs of this study into ``run_dir`` (job and diagnostics folders,
    without resume checkpoints) and recompute its estimates, metrics, summary, curves, paired tests
    and manifest. The manifest records each merge (source, jobs, time). Returns what was done."""
    run_dir = Path(run_dir)
    manifest = manifest_of(run_dir)
    cfg = run_config(manifest, run_dir, data_dir)
    with RunLock(run_dir):
        merge = plan_merge(run_dir, sources, manifest, cfg)
        plan = resolve(cfg, say=lambda m: None)
        platforms = {src: manifest_of(src).get("platform", {}) for src in {src for src, _ in merge.copy}}
        for src, name in merge.copy:
            _copy_job(src / "jobs" / name, run_dir / "jobs" / name, platforms[src])
            diag = src / "diagnostics" / name
            if diag.is_dir():
                (run_dir / "diagnostics").mkdir(exist_ok=True)
                _copy_job(diag, run_dir / "diagnostics" / name)
            say(f"merged {name} from {src}")
        for src, name in merge.same:
            say(f"kept {name}: finished here and in {src} with the same scores")
        for src, name in merge.outside:
            say(f"left out {name} from {src}: not a job of this run (its methods x seeds)")
        if merge.copy:
            by_source: dict[str, list[str]] = {}
            for src, name in merge.copy:
                by_source.setdefault(str(src), []).append(name)
            manifest["merges"] = [*manifest.get("merges", []),
                                  *({"from": s, "jobs": names, "at": utc_now(), "platform": platforms[Path(s)]}
                                    for s, names in by_source.items())]
        results = aggregate_job_folders(run_dir, plan, manifest)
        if all(r["status"] == "done" for r in results) and manifest.get("status") != "done":
            manifest["status"] = "done"
            write_json(run_dir / "manifest.json", manifest)
        done = sum(r["status"] == "done" for r in results)
        say(f"{run_dir}: {done} of {len(results)} jobs done; run-level files recomputed")
    return merge
