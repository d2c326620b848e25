"""Standalone ground truth: train each architecture from scratch at a budget's shapes, cached.

One result = one architecture trained with one seed: ``space.build_standalone(arch, net_cfg)``,
initialised from the seed's ``init`` stream, SGD + cosine for ``budget.standalone_epochs`` over the
protocol's ``train`` half (the shared :class:`SupernetTrainer` loop, the seed's data order and
augmentation), then top-1 accuracy (%) on the official CIFAR-10 test set (BN in eval mode); a run
with ``--dataset cifar100`` / ``imagenet16-120`` trains on that data set and measures on its test
half (``harness.data.datasets.final_test_set``).

Results are cached as JSON under ``HARNESS_CACHE_DIR/standalone/<space>/<key>.json``, where the key
hashes everything that decides the number: space, architecture, the space's ``model_version``,
seed, the budget's shapes and optimiser (gradient clip included), this module's :data:`PROTOCOL_VERSION` and the eval set.

Ground-truth providers built on it:

- :class:`StandaloneGroundTruth`: trains what it is asked for on demand (NB201 ``--gt standalone``).
- :class:`CompositeGroundTruth`: several providers behind one ``values(archs, column)``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
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
from harness.budgets import ADDED_FIELDS, Budget
from harness.core.allocator import tune_malloc
from harness.core.errors import unknown_name
from harness.core.io import atomic_write_text, pid_alive
from harness.data.cifar import load_cifar10
from harness.data.datasets import DEFAULT_DATASET, final_test_set, get_dataset, load_dataset
from harness.data.tensors import to_float
from harness.engine.job import JobContext
from harness.engine.taskdata import prepare_data
from harness.engine.trainer import SupernetTrainer
from harness.groundtruth.base import GroundTruth
from harness.groundtruth.table import STANDALONE, gt_noise, gt_table, seed_column
from harness.spaces.base import Arch, SearchSpace

log = logging.getLogger("harness.groundtruth.standalone")

PROTOCOL_VERSION = 1  # bump when the standalone training/eval protocol changes
PROBE_SEEDS = (0, 1)  # GT seeds of the probe suites
NB201_STANDALONE_SEEDS = (0,)  # `--gt standalone` on NB201 trains one seed per scored arch (cost)


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
    grad_clip: float | None = 5.0  # the budget's (issue 19); left out of the record at 5.0

    def record(self) -> dict:
        """The key as stored and hashed. Budget fields added later (``ADDED_FIELDS``) are left out
        at their old value, so every entry cached before they existed keeps its file and matches."""
        d = dataclasses.asdict(self)
        for name, old in ADDED_FIELDS.items():
            if name in d and d[name] == old:
                del d[name]
        return d

    def digest(self) -> str:
        blob = json.dumps(self.record(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]


def make_key(space: SearchSpace, arch: Arch, budget: Budget, seed: int, num_classes: int = 10,
             dataset: str = DEFAULT_DATASET) -> StandaloneKey:
    cfg = budget.net_config(num_classes=num_classes)
    return StandaloneKey(
        space=space.name, arch=space.format(arch), model_version=int(getattr(space, "model_version", 1)),
        seed=int(seed), channels=budget.channels, cells=budget.cells, resolution=budget.resolution,
        epochs=float(budget.standalone_epochs), batch_size=budget.batch_size, lr=budget.lr,
        momentum=budget.momentum, weight_decay=budget.weight_decay, nesterov=budget.nesterov,
        grad_clip=budget.clip_threshold(),
        net_config=repr(cfg), eval_set="cifar10-test" if dataset == DEFAULT_DATASET else f"{dataset}-test-half")


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
    return entry if entry.get("key") == key.record() else None


@dataclass
class GtData:
    """The training half (as a TaskData for the shared loop) and the test set (CIFAR-10's; other
    data sets: their test half)."""

    task: object  # harness.engine.job.TaskData
    test_x: torch.Tensor
    test_y: torch.Tensor


def load_gt_data(data_dir: str | None, cache_dir: str, resolution: int, score_size: int,
                 device: str = "cpu", progress: bool = False, dataset: str = DEFAULT_DATASET) -> GtData:

    task, _ = prepare_data(data_dir, cache_dir, resolution, score_size, device, progress, dataset=dataset)
    if dataset == DEFAULT_DATASET:
        raw = load_cifar10(Path(data_dir) if data_dir else None, Path(cache_dir), download=data_dir is None,
                           progress=progress)
        return GtData(task, to_float(raw.x_test, resolution).to(device), raw.y_test.to(device))
    spec = get_dataset(dataset)
    raw = load_dataset(dataset, Path(data_dir) if data_dir else None, Path(cache_dir), download=data_dir is None,
                       progress=progress)
    x, y = final_test_set(dataset, raw)
    return GtData(task, to_float(x, resolution, spec.mean, spec.std).to(device), y.to(device))


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
                 device: str = "cpu", say: Callable[[str], None] = print, num_classes: int | None = None,
                 dataset: str = DEFAULT_DATASET):
        self.space, self.budget, self.cache_dir = space, budget, Path(cache_dir)
        self.data_dir, self.device, self.say, self.dataset = data_dir, device, say, dataset
        self.num_classes = num_classes if num_classes is not None else get_dataset(dataset).num_classes
        self._data: GtData | None = None
        self.trained = 0

    def key(self, arch: Arch, seed: int) -> StandaloneKey:
        return make_key(self.space, arch, self.budget, seed, self.num_classes, self.dataset)

    def cached(self, arch: Arch, seed: int) -> dict | None:
        return read_cached(self.cache_dir, self.key(arch, seed))

    def missing(self, archs: Sequence[Arch], seeds: Sequence[int]) -> list[tuple[Arch, int]]:
        return [(a, s) for s in seeds for a in archs if self.cached(a, s) is None]

    def data(self) -> GtData:
        if self._data is None:
            self._data = load_gt_data(self.data_dir, str(self.cache_dir), self.budget.resolution,
                                      self.budget.score_size, self.device, dataset=self.dataset)
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
                if pid and pid != os.getpid() and pid_alive(pid):
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
            tune_malloc()
            torch.set_num_threads(self.budget.threads)
            work = self.cache_dir / "standalone" / "work" / f"{key.digest()}-pid{os.getpid()}"
            cpu0 = time.process_time()
            result = train_standalone(self.space, arch, self.budget, seed, self.data(), work, self.device)
            # process CPU time: on a shared, oversubscribed machine it estimates the uncontended cost
            result["cpu_s"] = time.process_time() - cpu0
            result["load_avg_1min"] = os.getloadavg()[0]
            entry = {"key": key.record(), "budget": self.budget.name, **result,
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



class StandaloneGroundTruth(GroundTruth):
    """Trains the architectures it is asked about (cached); ``prepare`` builds a set up front."""

    def __init__(self, cache: StandaloneCache, seeds: Sequence[int] = NB201_STANDALONE_SEEDS):
        self.cache, self.seeds = cache, tuple(seeds)
        self.columns = (STANDALONE, *(seed_column(s) for s in self.seeds))
        on = "" if cache.dataset == DEFAULT_DATASET else f" on {cache.dataset}"
        self.source = f"standalone training{on} at budget {cache.budget.name} (cache {cache.cache_dir / 'standalone'})"
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

    def optimum_unavailable(self, column):
        return self._part(column).optimum_unavailable(column)

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

