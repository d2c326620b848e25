"""Standalone ground truth: train each architecture from scratch at a budget's shapes, cached.

One result = one architecture trained with one seed: ``space.build_standalone(arch, net_cfg)``,
initialised from the seed's ``init`` stream, SGD + cosine for ``budget.standalone_epochs`` over the
protocol's ``train`` half (the shared :class:`SupernetTrainer` loop, the seed's data order and
augmentation), then top-1 accuracy (%) on the official CIFAR-10 test set (BN in eval mode).

Results are cached as JSON under ``HARNESS_CACHE_DIR/standalone/<space>/<key>.json``, where the key
hashes everything that decides the number: space, architecture, the space's ``model_version``,
seed, the budget's shapes and optimiser, this module's :data:`PROTOCOL_VERSION` and the eval set.

Ground-truth providers built on it:

- :class:`TableGroundTruth`: a fixed table (probe suites' 13 architectures), columns
  ``standalone`` (mean over GT seeds) and ``standalone_s<seed>``; NaN for other architectures.
- :class:`StandaloneGroundTruth`: trains what it is asked for on demand (NB201 ``--gt standalone``).
- :class:`CompositeGroundTruth`: several providers behind one ``values(archs, column)``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from harness import metrics as M
from harness.budgets import Budget
from harness.errors import ConfigError, DataError, unknown_name
from harness.groundtruth import GroundTruth
from harness.spaces.base import Arch, SearchSpace
from harness.store import _pid_alive, atomic_write_text, write_csv, write_json

log = logging.getLogger("harness.standalone")

PROTOCOL_VERSION = 1  # bump when the standalone training/eval protocol changes
STANDALONE = "standalone"
SUITES_DATA = Path(__file__).resolve().parent / "suites_data"
PROBE_SEEDS = (0, 1)  # GT seeds of the probe suites
NB201_STANDALONE_SEEDS = (0,)  # `--gt standalone` on NB201 trains one seed per scored arch (cost)


_SEED_COL = re.compile(rf"{STANDALONE}_s(\d+)")


def seed_column(seed: int) -> str:
    return f"{STANDALONE}_s{seed}"


# --- one standalone training -------------------------------------------------------------
@dataclass(frozen=True)
class StandaloneKey:
    """Everything that decides one standalone result (hashed into the cache file name)."""

    space: str
    arch: str
    model_version: int
    seed: int
    channels: int
    cells: int
    resolution: int
    epochs: float
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    nesterov: bool
    net_config: str  # repr of the NetConfig (width_mult, share_downsample, BN flags, classes)
    eval_set: str = "cifar10-test"
    protocol: int = PROTOCOL_VERSION

    def digest(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]


def make_key(space: SearchSpace, arch: Arch, budget: Budget, seed: int, num_classes: int = 10) -> StandaloneKey:
    cfg = budget.net_config(num_classes=num_classes)
    return StandaloneKey(
        space=space.name, arch=space.format(arch), model_version=int(getattr(space, "model_version", 1)),
        seed=int(seed), channels=budget.channels, cells=budget.cells, resolution=budget.resolution,
        epochs=float(budget.standalone_epochs), batch_size=budget.batch_size, lr=budget.lr,
        momentum=budget.momentum, weight_decay=budget.weight_decay, nesterov=budget.nesterov,
        net_config=repr(cfg))


def cache_path(cache_dir: Path, key: StandaloneKey) -> Path:
    return Path(cache_dir) / "standalone" / key.space / f"{key.digest()}.json"


def read_cached(cache_dir: Path, key: StandaloneKey) -> dict | None:
    path = cache_path(cache_dir, key)
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        log.warning("standalone cache entry %s is unreadable; retraining", path)
        return None
    return entry if entry.get("key") == dataclasses.asdict(key) else None


@dataclass
class GtData:
    """The training half (as a TaskData for the shared loop) and the CIFAR-10 test set."""

    task: object  # harness.job.TaskData
    test_x: torch.Tensor
    test_y: torch.Tensor


def load_gt_data(data_dir: str | None, cache_dir: str, resolution: int, score_size: int,
                 device: str = "cpu", progress: bool = False) -> GtData:
    from harness.data.cifar import load_cifar10
    from harness.data.tensors import to_float
    from harness.runner import prepare_data

    task, _ = prepare_data(data_dir, cache_dir, resolution, score_size, device, progress)
    raw = load_cifar10(Path(data_dir) if data_dir else None, Path(cache_dir), download=data_dir is None,
                       progress=progress)
    return GtData(task, to_float(raw.x_test, resolution).to(device), raw.y_test.to(device))


@torch.no_grad()
def evaluate_accuracy(model, arch: Arch, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> tuple[float, float]:
    """(top-1 accuracy in %, mean cross-entropy) with BN in eval mode (running statistics)."""
    model.eval()
    correct, ce = 0, 0.0
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        logits = model(xb, arch).float()
        correct += int((logits.argmax(1) == yb).sum())
        ce += float(F.cross_entropy(logits, yb, reduction="sum"))
    return 100.0 * correct / len(y), ce / len(y)


def train_standalone(space: SearchSpace, arch: Arch, budget: Budget, seed: int, data: GtData, work_dir: Path,
                     device: str = "cpu") -> dict:
    """Train ``arch`` from scratch for ``budget.standalone_epochs``; returns the result record."""
    from harness.job import JobContext
    from harness.train import SupernetTrainer

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    b = budget.replace(checkpoint_every=0)  # minutes-long trainings: a crash just retrains one entry
    net_cfg = b.net_config(num_classes=data.task.num_classes)
    job = JobContext(space=space, budget=b, net_cfg=net_cfg, data=data.task, seed=seed, job_dir=work_dir,
                     device=torch.device(device), log=log, progress=False)
    t0 = time.perf_counter()
    job.seed_torch("init")
    model = space.build_standalone(arch, net_cfg).to(job.device)

    def step(x, y, _step):
        loss = F.cross_entropy(model(x, arch), y)
        loss.backward()
        job.counters.add_path(len(x))
        return loss

    trainer = SupernetTrainer(job, model, epochs=b.standalone_epochs, name="standalone")
    trainer.run(step)
    t_train = time.perf_counter() - t0
    acc, ce = evaluate_accuracy(model, arch, data.test_x, data.test_y, b.eval_batch_size)
    return {"accuracy": acc, "test_loss": ce, "train_s": t_train, "wall_s": time.perf_counter() - t0,
            "steps": job.counters.steps, "images": job.counters.images_seen,
            "params": int(sum(p.numel() for p in model.parameters())),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


class StandaloneCache:
    """Looks up and fills standalone results for one (space, budget) in the cache dir."""

    def __init__(self, space: SearchSpace, budget: Budget, cache_dir: Path, data_dir: str | None,
                 device: str = "cpu", say: Callable[[str], None] = print, num_classes: int = 10):
        self.space, self.budget, self.cache_dir = space, budget, Path(cache_dir)
        self.data_dir, self.device, self.say, self.num_classes = data_dir, device, say, num_classes
        self._data: GtData | None = None
        self.trained = 0

    def key(self, arch: Arch, seed: int) -> StandaloneKey:
        return make_key(self.space, arch, self.budget, seed, self.num_classes)

    def cached(self, arch: Arch, seed: int) -> dict | None:
        return read_cached(self.cache_dir, self.key(arch, seed))

    def missing(self, archs: Sequence[Arch], seeds: Sequence[int]) -> list[tuple[Arch, int]]:
        return [(a, s) for s in seeds for a in archs if self.cached(a, s) is None]

    def data(self) -> GtData:
        if self._data is None:
            self._data = load_gt_data(self.data_dir, str(self.cache_dir), self.budget.resolution,
                                      self.budget.score_size, self.device)
        return self._data

    def _lock(self, key: StandaloneKey) -> Path:
        return cache_path(self.cache_dir, key).with_suffix(".lock")

    def try_lock(self, key: StandaloneKey) -> bool:
        """Claim an entry (O_EXCL lock file holding our PID); a lock whose process is gone is taken over.
        Lets several processes (a `harness gt` and a `harness run`) build one GT without duplicate work."""
        lock = self._lock(key)
        lock.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(lock.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _pid_alive(pid):
                    return False
                lock.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return True
        return False

    def get(self, arch: Arch, seed: int, wait: bool = True) -> dict | None:
        """The cached result, training (and caching) it when missing; when another live process is
        training it, wait for its result (or return None with ``wait=False``)."""
        key = self.key(arch, seed)
        while True:
            entry = read_cached(self.cache_dir, key)
            if entry is not None:
                return entry
            if self.try_lock(key):
                break
            if not wait:
                return None
            time.sleep(5)
        try:
            entry = read_cached(self.cache_dir, key)  # finished between our look and our lock
            if entry is not None:
                return entry
            torch.set_num_threads(self.budget.threads)
            work = self.cache_dir / "standalone" / "work" / f"{key.digest()}-pid{os.getpid()}"
            cpu0 = time.process_time()
            result = train_standalone(self.space, arch, self.budget, seed, self.data(), work, self.device)
            # process CPU time: on a shared, oversubscribed machine it estimates the uncontended cost
            result["cpu_s"] = time.process_time() - cpu0
            result["load_avg_1min"] = os.getloadavg()[0]
            entry = {"key": dataclasses.asdict(key), "budget": self.budget.name, **result,
                     "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            path = cache_path(self.cache_dir, key)
            atomic_write_text(path, json.dumps(entry, indent=1) + "\n")
            shutil.rmtree(work, ignore_errors=True)
            self.trained += 1
            return entry
        finally:
            self._lock(key).unlink(missing_ok=True)

    def build(self, archs: Sequence[Arch], seeds: Sequence[int]) -> pd.DataFrame:
        """Every (arch, seed) result, training the missing ones (and saying so)."""
        todo = self.missing(archs, seeds)
        if todo:
            self.say(f"standalone GT: training {len(todo)} of {len(archs) * len(seeds)} (arch, seed) results "
                     f"for {self.space.name} at budget {self.budget.name} ({self.budget.standalone_epochs:g} epochs, "
                     f"C={self.budget.channels}, {self.budget.resolution}px); cache: {self.cache_dir / 'standalone'}")
        t0, done = time.perf_counter(), 0
        # first pass: train what nobody else is training; second pass: wait for the rest
        for wait in (False, True):
            for a, s in todo:
                before = self.trained
                e = self.get(a, s, wait=wait)
                if e is not None and self.trained > before:
                    done += 1
                    self.say(f"  [{done}] seed {s} {self.space.format(a)}: {e['accuracy']:.2f}% "
                             f"({e['wall_s']:.0f} s wall, {e.get('cpu_s', float('nan')):.0f} s CPU; "
                             f"{time.perf_counter() - t0:.0f} s so far)")
        rows = []
        for s in seeds:
            for a in archs:
                e = self.get(a, s)
                rows.append({"arch": self.space.format(a), "seed": s, "accuracy": e["accuracy"],
                             "wall_s": e["wall_s"], "cpu_s": e.get("cpu_s", np.nan), "params": e["params"]})
        return pd.DataFrame(rows)


# --- tables and their noise -------------------------------------------------------------
def gt_table(results: pd.DataFrame) -> pd.DataFrame:
    """Long (arch, seed, accuracy) -> wide: arch, standalone (mean), standalone_std, standalone_s<seed>."""
    wide = results.pivot_table(index="arch", columns="seed", values="accuracy", sort=False)
    wide.columns = [seed_column(int(s)) for s in wide.columns]
    out = pd.DataFrame({"arch": wide.index})
    out[STANDALONE] = wide.mean(axis=1).to_numpy()
    out[f"{STANDALONE}_std"] = wide.std(axis=1, ddof=1).to_numpy() if wide.shape[1] > 1 else np.nan
    for c in wide.columns:
        out[c] = wide[c].to_numpy()
    if "params" in results:
        out["params"] = results.groupby("arch", sort=False)["params"].first().reindex(wide.index).to_numpy()
    return out


def gt_noise(table: pd.DataFrame) -> dict:
    """The GT's own noise: Kendall tau between every pair of GT seeds (the ceiling any estimator
    can reach on these archs) and the per-architecture std over seeds."""
    cols = [c for c in table.columns if _SEED_COL.fullmatch(c)]
    taus = {f"{a}~{b}": M.kendall_tau(table[a].to_numpy(), table[b].to_numpy())
            for i, a in enumerate(cols) for b in cols[i + 1:]}
    std = table[cols].std(axis=1, ddof=1).to_numpy() if len(cols) > 1 else np.full(len(table), np.nan)
    return {"seeds": [int(c.rsplit("_s", 1)[1]) for c in cols], "n_archs": int(len(table)),
            "seed_pair_tau": taus, "tau_between_seeds_mean": float(np.mean(list(taus.values()))) if taus else None,
            "per_arch_std_mean": float(np.nanmean(std)) if len(cols) > 1 else None,
            "per_arch_std_max": float(np.nanmax(std)) if len(cols) > 1 else None,
            "accuracy_range": [float(table[STANDALONE].min()), float(table[STANDALONE].max())]}


# a GT whose seeds agree less than this (Kendall tau) does not order its architectures reproducibly
LOW_CEILING = 0.3


def low_ceiling_warning(noise: dict) -> str:
    """A plain sentence when the GT's tau between its own seeds is near 0 (else '')."""
    tau = noise.get("tau_between_seeds_mean")
    if not noise.get("seed_pair_tau") or (tau is not None and np.isfinite(tau) and tau >= LOW_CEILING):
        return ""
    return (f"The ceiling is below {LOW_CEILING}: this ground truth does not reproducibly order these "
            f"architectures, so method taus against it mostly measure GT noise; do not rank methods by them.")


def format_noise(noise: dict) -> str:
    if not noise.get("seed_pair_tau"):
        return f"GT noise: one seed only (no ceiling); accuracy range {noise['accuracy_range']}"
    taus = ", ".join(f"{k}: {v:+.3f}" for k, v in noise["seed_pair_tau"].items())
    text = (f"GT noise over {noise['n_archs']} archs: Kendall tau between GT seeds {taus} (ceiling); per-arch std "
            f"mean {noise['per_arch_std_mean']:.2f} / max {noise['per_arch_std_max']:.2f} points; accuracy "
            f"{noise['accuracy_range'][0]:.2f}..{noise['accuracy_range'][1]:.2f}%")
    warning = low_ceiling_warning(noise)
    return f"{text}\n{warning}" if warning else text


class TableGroundTruth(GroundTruth):
    """A standalone GT table over a fixed architecture set; NaN (dropped by the metrics) elsewhere."""

    def __init__(self, table: pd.DataFrame, space: SearchSpace, source: str, meta: dict | None = None):
        self.space, self.source, self.meta = space, source, dict(meta or {})
        self.columns = tuple(c for c in table.columns if c.startswith(STANDALONE) and c != f"{STANDALONE}_std")
        self._row = {space.parse(a): i for i, a in enumerate(table["arch"])}
        self._values = {c: table[c].to_numpy(dtype=float) for c in self.columns}
        self.table = table
        self.noise = gt_noise(table)

    @classmethod
    def from_csv(cls, path: Path, space: SearchSpace) -> "TableGroundTruth":
        path = Path(path)
        if not path.is_file():
            raise DataError(f"standalone GT table {path} not found; build one with `harness gt --suite ...`")
        try:
            table = pd.read_csv(path, comment="#")
        except Exception as exc:  # pandas raises many types for unreadable files
            raise DataError(f"cannot read standalone GT table {path}: {exc}") from None
        if "arch" not in table or STANDALONE not in table:
            raise DataError(f"standalone GT table {path} needs columns arch and {STANDALONE} (written by `harness gt`)")
        meta_path = path.with_suffix(".manifest.json")
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        return cls(table, space, str(path), meta)

    def values(self, archs: Sequence[Arch], column: str) -> np.ndarray:
        self.check_column(column)
        vals = self._values[column]
        return np.array([vals[self._row[tuple(a)]] if tuple(a) in self._row else np.nan for a in archs])

    def best(self, column: str) -> float:
        """Best over the table's architectures (regret is within the probe set)."""
        self.check_column(column)
        return float(np.nanmax(self._values[column]))

    def quality(self, archs: Sequence[Arch]) -> dict:
        return {"gt_noise": self.noise, "gt_source": self.source, "gt_meta": self.meta}


class StandaloneGroundTruth(GroundTruth):
    """Trains the architectures it is asked about (cached); ``prepare`` builds a set up front."""

    def __init__(self, cache: StandaloneCache, seeds: Sequence[int] = NB201_STANDALONE_SEEDS):
        self.cache, self.seeds = cache, tuple(seeds)
        self.columns = (STANDALONE, *(seed_column(s) for s in self.seeds))
        self.source = f"standalone training at budget {cache.budget.name} (cache {cache.cache_dir / 'standalone'})"
        self._known: dict[Arch, dict[int, float]] = {}

    def prepare(self, archs: Sequence[Arch]) -> None:
        df = self.cache.build(archs, self.seeds)
        for a, s, acc in zip(df["arch"], df["seed"], df["accuracy"]):
            self._known.setdefault(self.cache.space.parse(a), {})[int(s)] = float(acc)

    def _acc(self, arch: Arch, seed: int) -> float:
        arch = tuple(arch)
        if seed not in self._known.get(arch, {}):
            if self.cache.cached(arch, seed) is None:
                self.cache.say(f"standalone GT: training {self.cache.space.format(arch)} seed {seed} (not prepared)")
            self._known.setdefault(arch, {})[seed] = float(self.cache.get(arch, seed)["accuracy"])
        return self._known[arch][seed]

    def values(self, archs: Sequence[Arch], column: str) -> np.ndarray:
        self.check_column(column)
        seeds = self.seeds if column == STANDALONE else (int(column.rsplit("_s", 1)[1]),)
        return np.array([np.mean([self._acc(a, s) for s in seeds]) for a in archs])

    def best(self, column: str) -> float:
        """Best over the architectures trained so far (the space's optimum is unknown)."""
        self.check_column(column)
        return float(np.nanmax(self.values(list(self._known), column))) if self._known else np.nan

    def table(self, archs: Sequence[Arch]) -> pd.DataFrame:
        rows = [{"arch": self.cache.space.format(a), "seed": s, "accuracy": self._acc(a, s)}
                for s in self.seeds for a in archs]
        return gt_table(pd.DataFrame(rows))


class CompositeGroundTruth(GroundTruth):
    """Several providers as one: each column is answered by the first provider that has it."""

    def __init__(self, parts: Sequence[GroundTruth], fidelity_columns: Sequence[str] | None = None):
        self.parts = list(parts)
        self.fidelity_columns = tuple(fidelity_columns) if fidelity_columns else None
        self.columns = tuple(dict.fromkeys(c for p in self.parts for c in p.columns))
        self.source = " + ".join(p.source for p in self.parts)

    def _part(self, column: str) -> GroundTruth:
        for p in self.parts:
            if column in p.columns:
                return p
        raise unknown_name("ground-truth column", column, self.columns)

    def values(self, archs, column):
        return self._part(column).values(archs, column)

    def best(self, column):
        return self._part(column).best(column)

    def prepare(self, archs) -> None:
        for p in self.parts:
            if hasattr(p, "prepare"):
                p.prepare(archs)

    def quality(self, archs: Sequence[Arch]) -> dict:
        """Standalone-at-budget vs each benchmark column (the proxy's fidelity) over ``archs``."""
        out: dict = {}
        sa = next((p for p in self.parts if isinstance(p, StandaloneGroundTruth)), None)
        if sa is None:
            return out
        s_vals = sa.values(archs, STANDALONE)
        fid = {}
        for p in self.parts:
            if p is sa:
                continue
            for c in p.columns:
                if self.fidelity_columns is not None and c not in self.fidelity_columns:
                    continue
                fid[c] = {"kendall_tau": M.kendall_tau(s_vals, p.values(archs, c)),
                          "spearman_rho": M.spearman_rho(s_vals, p.values(archs, c))}
        out["standalone_fidelity"] = {"n_archs": len(archs), "vs": fid}
        if len(sa.seeds) > 1:
            out["gt_noise"] = gt_noise(sa.table(archs))
        return out


# --- the probe suites -------------------------------------------------------------------
def probe_list_path(suite: str, ext: str = "csv") -> Path:
    return SUITES_DATA / f"{suite}.{ext}"


def committed_gt_path(suite: str) -> Path:
    return SUITES_DATA / f"{suite}-gt.csv"


def load_probe_archs(suite: str, space: SearchSpace) -> list[Arch]:
    path = probe_list_path(suite)
    if not path.is_file():
        raise DataError(f"probe architecture list {path} is missing (write it with "
                        f"`python -m harness.standalone --write-lists`)")
    table = pd.read_csv(path, comment="#")
    return [space.parse(a) for a in table["arch"]]


def load_committed_gt(suite: str, space: SearchSpace) -> TableGroundTruth:
    """The suite's committed GT table (the harness's own output, versioned with the probe list)."""
    path = committed_gt_path(suite)
    gt = TableGroundTruth.from_csv(path, space)
    b = gt.meta.get("budget", {})
    gt.source = (f"committed table harness/suites_data/{path.name} (standalone, budget {b.get('name', '?')}: "
                 f"C={b.get('channels', '?')}, {b.get('resolution', '?')}px, {b.get('standalone_epochs', '?')} "
                 f"epochs; seeds {gt.noise['seeds']})")
    return gt


def probe_ground_truth(suite: str, space: SearchSpace, budget: Budget, data_dir: Path | None,
                       gt_file: Path | None, cache_dir: Path, device: str = "cpu",
                       say: Callable[[str], None] = print) -> TableGroundTruth:
    """``--gt-file`` if given; else the committed GT table; else the standalone cache at ``budget``
    (training the missing results, and saying so)."""
    if gt_file is not None:
        return TableGroundTruth.from_csv(Path(gt_file), space)
    committed = committed_gt_path(suite)
    if committed.is_file():
        gt = load_committed_gt(suite, space)
        say(f"ground truth: {gt.source}; {format_noise(gt.noise)}")
        return gt
    archs = load_probe_archs(suite, space)
    cache = StandaloneCache(space, budget, cache_dir, str(data_dir) if data_dir else None, device, say)
    if cache.missing(archs, PROBE_SEEDS):
        say(f"ground truth: no committed GT for {suite}; building the standalone GT at budget {budget.name} "
            f"(cached; `harness gt --suite {suite} --budget {budget.name}` builds it ahead)")
    table = gt_table(cache.build(archs, PROBE_SEEDS))
    return TableGroundTruth(table, space, f"standalone cache ({budget.name}, seeds {list(PROBE_SEEDS)})",
                            {"budget": dataclasses.asdict(budget)})


def cached_probe_ground_truth(suite: str, space: SearchSpace, gt_file: Path | None, cache_dir: Path | None,
                              shape_budget: Callable[[Budget], Budget]) -> TableGroundTruth:
    """A probe GT without a budget: ``--gt-file``, the committed table, else the first of the named
    budgets whose GT is fully cached. Never trains."""
    from harness.budgets import BUDGETS
    from harness.runner import default_cache_dir

    if gt_file is not None:
        return TableGroundTruth.from_csv(Path(gt_file), space)
    if committed_gt_path(suite).is_file():
        return load_committed_gt(suite, space)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    archs = load_probe_archs(suite, space)
    for b in BUDGETS.values():
        budget = shape_budget(b)
        cache = StandaloneCache(space, budget, cache_dir, None, say=lambda m: None)
        if not cache.missing(archs, PROBE_SEEDS):
            return TableGroundTruth(gt_table(cache.build(archs, PROBE_SEEDS)), space,
                                    f"standalone cache ({budget.name}, seeds {list(PROBE_SEEDS)})")
    raise DataError(f"no committed or cached standalone GT for {suite} in {cache_dir / 'standalone'}; "
                    f"build it with `harness gt --suite {suite} --budget smoke`")


def load_run_ground_truth(suite, space: SearchSpace, budget: Budget, data_dir: Path | None, gt_file: Path | None,
                          cache_dir: Path, columns: Sequence[str], device: str = "cpu",
                          say: Callable[[str], None] = print) -> GroundTruth:
    """The runner's GT: the suite's own, plus standalone-at-budget when a `standalone` column is asked for
    and the suite's GT lacks it (NB201)."""
    if getattr(suite, "standalone_gt", False):
        return suite.load_gt(space, data_dir, gt_file, budget=budget, cache_dir=cache_dir, device=device, say=say)
    base = suite.load_gt(space, data_dir, gt_file)
    wants = [c for c in columns if c.startswith(STANDALONE) and c not in base.columns]
    if not wants:
        return base
    seeds = tuple(sorted({*NB201_STANDALONE_SEEDS, *(int(c.rsplit("_s", 1)[1]) for c in wants if "_s" in c)}))
    cache = StandaloneCache(space, budget, cache_dir, str(data_dir) if data_dir else None, device, say)
    bench = [c for c in columns if c in base.columns] or list(getattr(suite, "default_gt", ())[:1])
    return CompositeGroundTruth([base, StandaloneGroundTruth(cache, seeds)], fidelity_columns=bench)


def write_gt_csv(path: Path, table: pd.DataFrame, manifest: dict) -> None:
    write_csv(path, table)
    write_json(Path(path).with_suffix(".manifest.json"), manifest)


# --- choosing the 13 probe architectures ------------------------------------------------
def op_param_counts(space: SearchSpace, cfg) -> tuple[int, dict[tuple[int, int], int]]:
    """(parameters outside candidate ops, {(decision, choice): parameters of that candidate})."""
    per: dict[tuple[int, int], int] = {}

    def factory(spec):
        op = space.default_op(spec)
        per[(spec.decision, spec.choice)] = sum(p.numel() for p in op.parameters())
        return op

    net = space.build_supernet(cfg, factory)
    total = sum(p.numel() for p in net.parameters())
    return total - sum(per.values()), per


def arch_params(fixed: int, per: dict, arch: Arch) -> int:
    return fixed + sum(per.get((i, a), 0) for i, a in enumerate(arch))


def choose_probe_archs(space: SearchSpace, uniform: Sequence[tuple[str, Arch]], n_total: int = 13,
                       seed: int = 0, draws: int = 2000) -> pd.DataFrame:
    """The fixed probe set: the given "all the same block" archs, then random archs spread over
    parameter count (at the paper's widths): ``draws`` seeded uniform samples, sorted by parameters,
    one taken at each of ``n_total - len(uniform)`` evenly spaced quantiles."""
    from harness.seeding import numpy_rng
    from harness.spaces.base import NetConfig

    shapes = getattr(space, "budget_shapes", {})
    paper = NetConfig(channels=shapes.get("paper", {}).get("channels", 16))
    smoke = NetConfig(channels=shapes.get("smoke", {}).get("channels", 8))
    fixed_p, per_p = op_param_counts(space, paper)
    fixed_s, per_s = op_param_counts(space, smoke)
    rows = [{"arch": space.format(a), "chosen_by": how} for how, a in uniform]
    rng = numpy_rng("probe13", space.name, seed)
    pool = list(dict.fromkeys(space.sample(rng) for _ in range(draws)))
    pool = [a for a in pool if space.format(a) not in {r["arch"] for r in rows}]
    pool.sort(key=lambda a: arch_params(fixed_p, per_p, a))
    k = n_total - len(rows)
    for j in range(k):
        q = (j + 0.5) / k
        a = pool[min(len(pool) - 1, int(q * len(pool)))]
        rows.append({"arch": space.format(a), "chosen_by": f"random: params quantile {q:.3f} of {len(pool)} "
                                                            f"seeded draws (numpy_rng('probe13', '{space.name}', {seed}))"})
    for r in rows:
        a = space.parse(r["arch"])
        r["params_paper"] = arch_params(fixed_p, per_p, a)
        r["params_smoke"] = arch_params(fixed_s, per_s, a)
    df = pd.DataFrame(rows)
    df.insert(0, "idx", range(len(df)))
    return df[["idx", "arch", "params_paper", "params_smoke", "chosen_by"]]


def write_probe_lists() -> None:
    from harness.spaces.mobilenet_probe import CHOICES, IDENTITY, MobileNetProbeSpace
    from harness.spaces.resnet_probe import BLOCK_NAMES, ResNetProbeSpace

    rs = ResNetProbeSpace()
    r_uniform = [(f"uniform: all {name}", (i,) * len(rs.decisions)) for i, name in enumerate(BLOCK_NAMES)]
    ms = MobileNetProbeSpace()
    n = len(ms.decisions)
    m_uniform = [(f"uniform: all {c.name}", (i,) * n) for i, c in enumerate(CHOICES) if i != IDENTITY]
    m_uniform.append(("uniform: identity wherever allowed (k3e3 in each stage's first layer)",
                      tuple(IDENTITY if IDENTITY in ms.allowed_choices(d) else 0 for d in range(n))))
    for suite, space, uniform in (("resnet-probe13", rs, r_uniform), ("mobilenet-probe13", ms, m_uniform)):
        df = choose_probe_archs(space, uniform)
        header = (f"# {suite}: the 13 probe architectures (version 1; changing this list is a versioned change).\n"
                  f"# Chosen by harness.standalone.choose_probe_archs: the 'all the same block' architectures,\n"
                  f"# then seeded random architectures spread over parameter count (paper widths).\n")
        atomic_write_text(probe_list_path(suite), header + df.to_csv(index=False))
        atomic_write_text(probe_list_path(suite, "txt"), header + "\n".join(df["arch"]) + "\n")


def resolve_suite_budget(suite: str, budget: str, overrides=()) -> Budget:
    from harness.runner import RunConfig

    return RunConfig(suite=suite, budget=budget, budget_overrides=tuple(overrides)).resolved_budget()


def check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    seeds = tuple(int(s) for s in seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {seeds}: give distinct seeds, e.g. --seeds 0,1")
    return seeds


if __name__ == "__main__":  # pragma: no cover
    import sys

    if sys.argv[1:] == ["--write-lists"]:
        write_probe_lists()
        print(f"wrote {probe_list_path('resnet-probe13')} and {probe_list_path('mobilenet-probe13')}")
    else:
        print("usage: python -m harness.standalone --write-lists")


def format_quality(q: dict) -> str:
    """Lines for the run summary: the GT's noise ceiling and the standalone proxy's fidelity."""
    lines = []
    if q.get("gt_noise"):
        lines.append(format_noise(q["gt_noise"]))
    fid = q.get("standalone_fidelity")
    if fid:
        for col, v in fid["vs"].items():
            lines.append(f"fidelity of standalone-at-budget vs {col} over {fid['n_archs']} archs: "
                         f"Kendall tau {v['kendall_tau']:+.3f}, Spearman {v['spearman_rho']:+.3f}")
    return "\n".join(lines)
