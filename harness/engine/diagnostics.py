"""Diagnostics recorded while a supernet trains: parameter drift and feature consistency.

Both follow Pi-NAS (Peng et al., ICCV 2021), which names two symptoms of weight sharing:

* *parameter shift* (Pi-NAS Sec. 3.1): a shared weight is pulled in different directions by the
  different paths that use it. We keep a fixed number of snapshots of a few shared conv weights
  (histograms of their values over training) and the per-step relative update norm
  ``||W_t - W_{t-1}|| / ||W_{t-1}||`` of each of them.
* *feature shift* (Pi-NAS Sec. 3.1): paths that differ in one operator should still produce
  similar features. After training we feed one fixed batch through 4 architectures that differ
  only at the last decision and record the 4x4 matrix of mean per-image cosine similarities of
  the penultimate features, ``C_ij = mean_b cos(f_i(x_b), f_j(x_b))``, and its mean off-diagonal.

The hooks only observe: they never change the model, the data order or any RNG stream a method
uses (their own architectures come from ``job.rng("diag-cosine")``). A failure inside a hook is
logged and recorded, never allowed to fail the job. Everything is written to
``run_dir/diagnostics/<method>-s<seed>/``:

* ``drift.npz``: ``layers``, per-phase ``snap_steps_p<i>``, ``snap_<layer>_p<i>`` (n_snap x numel),
  ``norm_steps_p<i>`` and ``norms_p<i>`` (steps x layers).
* ``diagnostics.json``: layers, snapshot steps, update-norm summaries, the cosine matrix, and the
  hooks' own cost (``overhead``: seconds inside hooks vs. training wall time).
"""
from __future__ import annotations

import fnmatch
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from harness.engine.evaluator import batch_stat_bn
from harness.engine.job import JobContext, TrainingHooks, spread_rows
from harness.core.io import atomic_write_text

DIAG_DIR = "diagnostics"
MAX_NORM_POINTS = 200_000  # per phase; update norms beyond this are thinned (bounded memory)


@dataclass(frozen=True)
class DiagnosticsConfig:
    """What the hooks record.

    ``layers``: fnmatch patterns over ``model.named_parameters()`` names; None picks one conv
    weight in the first, middle and last searchable cell (see :func:`pick_layers`).
    """

    layers: tuple[str, ...] | None = None
    n_snapshots: int = 6  # including the one before training: bounded memory whatever the budget
    cosine_batch: int = 64
    cosine_archs: int = 4
    update_norms: bool = True
    feature_cosine: bool = True


# --- which weights -------------------------------------------------------------------------
def _backbone_names(job: JobContext, model: torch.nn.Module) -> set[str] | None:
    """Parameter names every standalone network has: the parts of the supernet not searched.

    Two standalone networks whose choices differ at every decision share only the backbone
    (stem, reductions, head); whatever the supernet holds beyond that belongs to candidate ops.
    None when the space cannot build them (the caller then falls back to all conv weights).
    """
    decisions = job.space.decisions
    if any(len(d.choices) < 2 for d in decisions):
        return None
    try:
        a = tuple(0 for _ in decisions)
        b = tuple(1 for _ in decisions)
        na = {n for n, _ in job.space.build_standalone(a, job.net_cfg).named_parameters()}
        nb = {n for n, _ in job.space.build_standalone(b, job.net_cfg).named_parameters()}
    except Exception:  # a space whose arch (0,..,0) is not allowed, or any build error
        return None
    return na & nb


def _cell_key(name: str) -> str:
    """The module path up to its first numeric component (``layers.3``), i.e. the cell."""
    parts = name.split(".")
    for i, p in enumerate(parts):
        if p.isdigit():
            return ".".join(parts[: i + 1])
    return parts[0]


def pick_layers(model: torch.nn.Module, job: JobContext | None = None,
                patterns: tuple[str, ...] | None = None) -> list[str]:
    """Names of the weights to track.

    With ``patterns``: every parameter matching one of them (in model order). Otherwise conv
    weights (ndim >= 4; K-shot style stacked copies have 5) inside the searchable cells, grouped
    by cell; one per cell for the first, middle and last cell, the largest weight of each
    (a 3x3 conv in NB201), so the choice is generic and needs no space-specific names.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if patterns:
        return [n for n, _ in named if any(fnmatch.fnmatchcase(n, pat) for pat in patterns)]
    backbone = _backbone_names(job, model) if job is not None else None
    convs = [(n, p) for n, p in named if p.ndim >= 4 and (backbone is None or n not in backbone)]
    if not convs:
        convs = [(n, p) for n, p in named if p.ndim >= 4]
    cells: dict[str, list[tuple[str, torch.Tensor]]] = {}
    for n, p in convs:
        cells.setdefault(_cell_key(n), []).append((n, p))
    keys = list(cells)
    if not keys:
        return []
    chosen = dict.fromkeys(keys[i] for i in (0, (len(keys) - 1) // 2, len(keys) - 1))
    out = []
    for key in chosen:
        best = max(cells[key], key=lambda np_: np_[1].numel())  # max keeps the first on ties
        out.append(best[0])
    return out


def cosine_archs(space, rng: np.random.Generator, n: int = 4, tries: int = 200) -> tuple[list, str]:
    """``n`` architectures differing only at the last decision, else ``n`` random ones.

    The shared prefix is resampled until all ``n`` variants are allowed and compute distinct
    functions (distinct isomorphism keys where the space has them), so the matrix compares
    genuinely different paths.
    """
    last = len(space.decisions) - 1
    n_last = len(space.decisions[last].choices)
    if n_last >= n:
        for _ in range(tries):
            base = space.sample(rng)
            choices = sorted(rng.choice(n_last, size=n, replace=False).tolist())
            archs = [tuple(base[:last]) + (int(c),) for c in choices]
            if not all(space.is_allowed(a) for a in archs):
                continue
            keys = [space.isomorphism_key(a) for a in archs]
            if None in keys or len(set(keys)) == n:
                return archs, "last-decision"
    archs: list = []
    while len(archs) < n:
        a = space.sample(rng)
        if space.is_allowed(a) and a not in archs:
            archs.append(a)
    return archs, "random"


@torch.no_grad()
def feature_cosine_matrix(model, x: torch.Tensor, archs, ctx_fn=None) -> np.ndarray:
    """``C_ij = mean_b cos(f_i(x_b), f_j(x_b))`` of ``model.features`` with batch-statistics BN."""
    was_training = model.training
    model.eval()
    try:
        with batch_stat_bn(model):
            feats = [model.features(x, a, ctx_fn(a) if ctx_fn else None).float().flatten(1) for a in archs]
    finally:
        model.train(was_training)
    f = torch.stack([torch.nn.functional.normalize(t, dim=1) for t in feats])  # (A, B, D)
    return torch.einsum("ibd,jbd->ijb", f, f).mean(-1).cpu().numpy()


def mean_off_diagonal(m: np.ndarray) -> float:
    n = m.shape[0]
    if n < 2:
        return math.nan
    return float((m.sum() - np.trace(m)) / (n * n - n))


def snapshot_steps(total: int, n: int) -> list[int]:
    """``n`` steps evenly spread over [0, total] (0 = before the first update)."""
    return sorted({int(round(s)) for s in np.linspace(0, total, max(n, 2))})


# --- the hooks -----------------------------------------------------------------------------
class _Phase:
    """One ``SupernetTrainer.run`` (a method may train in several phases)."""

    def __init__(self, layers: list[str], params: list[torch.Tensor]):
        self.layers, self.params = layers, params
        self.prev = [p.detach().clone() for p in params]
        self.snap_steps: list[int] = []
        self.snaps: list[list[np.ndarray]] = [[] for _ in layers]
        self.schedule: set[int] = set()
        self.norm_buf: torch.Tensor | None = None
        self.norm_steps: list[int] = []
        self.n_norms = 0
        self.stride = 1
        self.start_snapshot = [p.detach().float().cpu().numpy().ravel().copy() for p in params]
        self.started = time.perf_counter()
        self.wall_s = 0.0

    def snapshot(self, step: int) -> None:
        self.snap_steps.append(step)
        for i, p in enumerate(self.params):
            self.snaps[i].append(p.detach().float().cpu().numpy().ravel().copy())


class DiagnosticHooks(TrainingHooks):
    """Parameter-drift snapshots, update norms and the feature-cosine matrix for one job."""

    def __init__(self, out_dir: Path, config: DiagnosticsConfig = DiagnosticsConfig()):
        self.out_dir = Path(out_dir)
        self.config = config
        self.phases: list[_Phase] = []
        self.hook_s = 0.0  # wall time spent inside the hooks during training
        self.cosine: dict = {}
        self.errors: list[str] = []
        self.layers: list[str] = []

    # TrainingHooks -------------------------------------------------------------------------
    def on_train_start(self, model, job) -> None:
        t0 = time.perf_counter()
        try:
            names = pick_layers(model, job, self.config.layers)
            params = dict(model.named_parameters())
            self.layers = names
            self.phases.append(_Phase(names, [params[n] for n in names]))
        except Exception as exc:  # diagnostics must never fail a job
            self._error("on_train_start", exc, job)
        self.hook_s += time.perf_counter() - t0

    def on_step(self, model, step: int, total: int) -> None:
        if not self.phases:
            return
        t0 = time.perf_counter()
        ph = self.phases[-1]
        if not ph.schedule:  # first step of this phase: now the total is known
            ph.schedule = set(snapshot_steps(total, self.config.n_snapshots))
            ph.snap_steps.append(step - 1)  # the weights seen at on_train_start
            for i, w in enumerate(ph.start_snapshot):
                ph.snaps[i].append(w)
            ph.start_snapshot = []
            ph.stride = max(1, math.ceil(total / MAX_NORM_POINTS))
            if self.config.update_norms and ph.params:
                ph.norm_buf = torch.zeros(total // ph.stride + 2, len(ph.params), device=ph.params[0].device)
        if self.config.update_norms and ph.norm_buf is not None and step % ph.stride == 0 \
                and ph.n_norms < ph.norm_buf.shape[0]:
            with torch.no_grad():
                for i, (p, prev) in enumerate(zip(ph.params, ph.prev)):
                    # stays on the device: no host sync per step
                    ph.norm_buf[ph.n_norms, i] = torch.linalg.vector_norm(p - prev) / \
                        torch.linalg.vector_norm(prev).clamp_min(1e-12)
            ph.norm_steps.append(step)
            ph.n_norms += 1
        if self.config.update_norms:
            with torch.no_grad():
                for p, prev in zip(ph.params, ph.prev):
                    prev.copy_(p)
        if step in ph.schedule and step > ph.snap_steps[0]:
            ph.snapshot(step)
        self.hook_s += time.perf_counter() - t0

    def on_train_end(self, model, job) -> None:
        t0 = time.perf_counter()
        if self.phases:
            self.phases[-1].wall_s = time.perf_counter() - self.phases[-1].started
        train_hook_s = self.hook_s
        if self.config.feature_cosine:
            try:
                self.cosine = self._feature_cosine(model, job)
            except Exception as exc:
                self._error("feature_cosine", exc, job)
        cos_s = time.perf_counter() - t0
        try:
            self.write(train_hook_s, cos_s)
        except Exception as exc:
            self._error("write", exc, job)

    # ------------------------------------------------------------------------------------
    def _error(self, where: str, exc: Exception, job) -> None:
        msg = f"{where}: {type(exc).__name__}: {exc}"
        self.errors.append(msg)
        try:
            job.log.warning("diagnostics %s", msg)
        except Exception:
            pass

    def _feature_cosine(self, model, job) -> dict:
        # ctx=None: methods whose operators need a ctx (K-shot codes, STC alphas) get their plain
        # path; the matrix then describes the shared weights without the method's modulation.
        archs, how = cosine_archs(job.space, job.rng("diag-cosine"), self.config.cosine_archs)
        x = spread_rows(job.data.search_x, self.config.cosine_batch)  # a prefix would be one class
        m = feature_cosine_matrix(model, x, archs)
        return {"archs": [job.space.format(a) for a in archs], "selection": how, "matrix": m.tolist(),
                "mean_off_diagonal": mean_off_diagonal(m), "batch": int(len(x)), "split": "search"}

    def write(self, train_hook_s: float, cosine_s: float) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"layers": np.array(self.layers)}
        phases = []
        for k, ph in enumerate(self.phases):
            arrays[f"snap_steps_p{k}"] = np.asarray(ph.snap_steps, dtype=np.int64)
            for i, _name in enumerate(ph.layers):
                if ph.snaps[i]:
                    arrays[f"snap_{i}_p{k}"] = np.stack(ph.snaps[i]).astype(np.float32)
            norms = ph.norm_buf[: ph.n_norms].cpu().numpy() if ph.norm_buf is not None else np.zeros((0, len(ph.layers)))
            arrays[f"norm_steps_p{k}"] = np.asarray(ph.norm_steps, dtype=np.int64)
            arrays[f"norms_p{k}"] = norms.astype(np.float32)
            nz = norms > 0
            phases.append({
                "layers": ph.layers, "snapshot_steps": ph.snap_steps, "norm_stride": ph.stride,
                "n_norms": int(ph.n_norms), "wall_s": ph.wall_s,
                "update_norm_median_nonzero": [float(np.median(norms[nz[:, i], i])) if nz[:, i].any() else None
                                               for i in range(norms.shape[1])],
                "updated_fraction": [float(nz[:, i].mean()) if len(norms) else None for i in range(norms.shape[1])],
            })
        tmp = self.out_dir / "drift.tmp.npz"
        np.savez_compressed(tmp, **arrays)
        tmp.replace(self.out_dir / "drift.npz")
        train_wall = sum(ph.wall_s for ph in self.phases)
        summary = {
            "config": asdict(self.config), "layers": self.layers, "phases": phases,
            "feature_cosine": self.cosine,
            "overhead": {"hooks_during_training_s": train_hook_s, "feature_cosine_s": cosine_s,
                         "training_wall_s": train_wall,
                         "fraction_of_training": (train_hook_s / (train_wall - train_hook_s)
                                                  if train_wall > train_hook_s else None)},
            "errors": self.errors,
        }
        atomic_write_text(self.out_dir / "diagnostics.json", json.dumps(summary, indent=2, default=str) + "\n")


def default_hooks_factory(job: JobContext, run_dir: Path, config: DiagnosticsConfig = DiagnosticsConfig()
                          ) -> DiagnosticHooks:
    """What ``harness run`` attaches to every supernet job (see runner.run)."""
    return DiagnosticHooks(Path(run_dir) / DIAG_DIR / job.job_dir.name, config)


def make_hooks_factory(config: DiagnosticsConfig):
    """A hooks factory with a non-default config, for ``runner.run(cfg, hooks_factory=...)``."""
    return lambda job, run_dir: default_hooks_factory(job, run_dir, config)


def load_diagnostics(diag_dir: Path) -> dict | None:
    """``diagnostics.json`` plus the arrays of ``drift.npz`` (None when the folder is missing)."""
    diag_dir = Path(diag_dir)
    meta_path = diag_dir / "diagnostics.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    npz = diag_dir / "drift.npz"
    meta["arrays"] = dict(np.load(npz, allow_pickle=False)) if npz.is_file() else {}
    return meta
