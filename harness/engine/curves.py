"""Ranking fidelity over training: a supernet job scores a fixed architecture subset at several
points of its own image budget (issue 15).

How the numbers stay honest:

* A point never changes training. The scoring runs under ``torch.random.fork_rng`` and
  ``no_grad``; the model's train/eval mode, ``job.counters`` and ``job.state`` are restored
  afterwards (a method's scorer may count the passes of its own scoring, e.g. Pi-NAS's linear
  evaluation), so weights, checkpoints and final scores are bit-identical with and without a
  curve (tests/harness/engine/test_curves.py checks every supernet method).
* The points are fractions of the job's image budget (``budget.epochs`` x the train half), read
  from ``job.counters.images_seen``, so multi-stage methods (SE-NAS) and methods with a warm-up
  (K-shot) get the same points as SPOS.
* The 100 % point is the job's final scores on the same subset: the curve ends exactly where the
  run's own metrics are.
* Jobs know no ground truth (Ray workers have none): a job appends its scores to
  ``curve_scores.csv`` (rewritten atomically, one point at a time, skipping points already there, so
  a killed job resumes without duplicates); aggregation computes the metrics (``curves.csv``).
"""
from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from harness import metrics as M
from harness.engine.job import JobContext, TrainingHooks
from harness.core.seeding import numpy_rng
from harness.spaces.base import Arch
from harness.core.io import write_csv

CURVE_SCORES = "curve_scores.csv"
CURVES = "curves.csv"
CURVE_SUBSET = "curve"
SCORE_COLUMNS = ["point", "fraction", "step", "images_seen", "source", "arch_index", "arch", "score"]
CURVE_COLUMNS = ["method", "seed", "point", "fraction", "step", "images_seen", "source", "gt", "subset", "metric",
                 "k", "value"]


def curve_fractions(n_points: int) -> tuple[float, ...]:
    """``n_points`` log-spaced fractions of the image budget from 1 % to 100 % (the last is the end)."""
    if n_points <= 0:
        return ()
    if n_points == 1:
        return (1.0,)
    return tuple(float(f) for f in np.geomspace(0.01, 1.0, n_points))


def curve_archs(archs: Sequence[Arch], size: int, seed: int = 0) -> list[Arch]:
    """The curve's subset: all scored architectures (``size`` 0 or >= their number), else a seeded
    sample, the same for every method and seed of a run, in the scored order."""
    archs = list(archs)
    if size <= 0 or size >= len(archs):
        return archs
    keep = np.sort(numpy_rng("curve-archs", seed).choice(len(archs), size=size, replace=False))
    return [archs[i] for i in keep]


def read_curve_scores(job_dir: Path) -> pd.DataFrame:
    path = Path(job_dir) / CURVE_SCORES
    if not path.is_file():
        return pd.DataFrame(columns=SCORE_COLUMNS)
    return pd.read_csv(path)


def append_point(job_dir: Path, rows: pd.DataFrame) -> None:
    """Add one point's rows, replacing any earlier rows of the same point (idempotent on resume)."""
    old = read_curve_scores(job_dir)
    points = set(rows["point"].unique())
    old = old[~old["point"].isin(points)]
    new = pd.concat([old, rows[SCORE_COLUMNS]], ignore_index=True) if len(old) else rows[SCORE_COLUMNS]
    write_csv(Path(job_dir) / CURVE_SCORES, new.sort_values(["point", "arch_index"], kind="stable"))


def _rows(job: JobContext, archs: Sequence[Arch], scores: np.ndarray, point: int, fraction: float,
          step: int, source: str) -> pd.DataFrame:
    space = job.space
    return pd.DataFrame({"point": point, "fraction": fraction, "step": step,
                         "images_seen": job.counters.images_seen, "source": source,
                         "arch_index": [space.arch_index(a) for a in archs],
                         "arch": [space.format(a) for a in archs], "score": np.asarray(scores, dtype=float)})


class FidelityCurveHook(TrainingHooks):
    """Scores ``archs`` with the method's current scorer (``job.curve_scorer``) whenever the job's
    images seen first reach one of the budget's curve fractions (except the last: the final scores)."""

    def __init__(self, job: JobContext, archs: Sequence[Arch], fractions: Sequence[float]):
        self.job, self.archs = job, list(archs)
        self.fractions = tuple(fractions)
        n_train = len(job.data.train_y)
        self.target_images = float(job.budget.epochs) * n_train
        done = read_curve_scores(job.job_dir)
        self.done = set(int(p) for p in done["point"].unique())
        self.seconds = 0.0
        self.points_scored = 0

    def pending(self) -> list[int]:
        """Intermediate points (all but the last) not yet recorded whose threshold has been reached."""
        seen = self.job.counters.images_seen
        last = len(self.fractions) - 1
        return [i for i, f in enumerate(self.fractions)
                if i < last and i not in self.done and seen >= f * self.target_images]

    def on_step(self, model, step, total):
        todo = self.pending()
        if not todo:
            return
        if self.job.curve_scorer is None:  # a method without a curve scorer: say so once
            self.job.log.warning("curve: method set no curve scorer; no intermediate points")
            self.done.update(todo)
            return
        point = max(todo)  # several thresholds crossed at once (a resumed job): one scoring, the latest
        t0 = time.perf_counter()
        scores = self.score_now(model)
        self.seconds += time.perf_counter() - t0
        self.points_scored += 1
        append_point(self.job.job_dir, _rows(self.job, self.archs, scores, point, self.fractions[point],
                                             self.job.counters.steps, "curve"))
        self.done.update(todo)
        self.job.log.info("curve point %d (%.1f %% of the image budget, %d images): %.1f s", point,
                          100 * self.fractions[point], self.job.counters.images_seen, time.perf_counter() - t0)

    def score_now(self, model: torch.nn.Module) -> np.ndarray:
        """The method's current scores, leaving every RNG stream, mode, counter and state untouched."""
        job = self.job
        counters = dict(job.counters.__dict__)
        state = copy.deepcopy(job.state)
        progress, job.progress = job.progress, False  # scorers read it when built: no nested progress bar
        modes = [(m, m.training) for m in model.modules()]
        try:
            with torch.random.fork_rng(devices=[torch.cuda.current_device()] if job.device.type == "cuda" else []), \
                    torch.no_grad():
                scorer = job.curve_scorer()
                scores = np.asarray(scorer.score(self.archs), dtype=float)
        finally:
            job.progress = progress
            job.counters.__dict__.update(counters)
            _restore_in_place(job.state, state)
            for m, training in modes:
                m.training = training
        return scores

    def record(self) -> dict:
        return {"points": list(self.fractions), "archs": len(self.archs), "seconds": self.seconds,
                "points_scored_this_attempt": self.points_scored, "scorer_note": self.job.curve_note}


def _restore_in_place(target: dict, snapshot: dict) -> None:
    """Put ``target`` back to ``snapshot`` keeping its nested dicts' identities (a method may hold
    a reference to ``job.state[...]`` and keep updating it)."""
    for key in [k for k in target if k not in snapshot]:
        del target[key]
    for key, value in snapshot.items():
        if isinstance(target.get(key), dict) and isinstance(value, dict):
            _restore_in_place(target[key], value)
        else:
            target[key] = value


def write_final_point(job: JobContext, archs: Sequence[Arch], scores_by_arch: dict[str, float],
                      n_points: int) -> None:
    """The 100 % point: the job's final scores on the curve subset."""
    space = job.space
    scores = np.array([scores_by_arch[space.format(a)] for a in archs], dtype=float)
    append_point(job.job_dir, _rows(job, archs, scores, n_points - 1, 1.0, job.counters.steps, "final"))


def job_curve_metrics(curve_scores: pd.DataFrame, gt, space, columns: Sequence[str]) -> list[dict]:
    """Every registered metric at every recorded point, against each GT column."""
    rows = []
    if curve_scores.empty:
        return rows
    for column in columns:
        truth_by_arch = dict(zip(curve_scores["arch"].unique(),
                                 gt.values([space.parse(a) for a in curve_scores["arch"].unique()], column)))
        for point, df in curve_scores.groupby("point", sort=True):
            first = df.iloc[0]
            truth = np.array([truth_by_arch[a] for a in df["arch"]], dtype=float)
            for r in M.compute_all(df["score"].to_numpy(dtype=float), truth):
                rows.append({"point": int(point), "fraction": float(first["fraction"]), "step": int(first["step"]),
                             "images_seen": int(first["images_seen"]), "source": first["source"], "gt": column,
                             "subset": CURVE_SUBSET, **r})
    return rows
