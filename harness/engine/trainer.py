"""The shared training loop: SGD + cosine, budget accounting, autocast, checkpoints, NaN checks.

Methods supply a ``step_fn(x, y, step)`` that runs their forward passes (and records path passes)
and returns the step's loss; the loop owns zero_grad/clip/step, the learning-rate schedule, the data
order, autocast (``--precision bf16``), progress, diagnostics hooks, the finite-loss check and atomic
checkpoints with resume. Gradients are clipped to the budget's ``grad_clip`` norm (times a
method's ``grad_clip_scale``, or a fixed ``grad_clip`` a loop passes itself); how often the clip
fired is recorded per trainer in the job's ``extra["grad_clip"]`` (steps whose total gradient norm
exceeded the threshold, their fraction, the mean and largest norm). With ``backward=True`` the loop
also runs ``loss.backward()`` (outside autocast) for steps that return one loss; steps that need
several backward passes or gradients of a parameter subset (FairNAS's m paths, K-shot's simplex
step, STC-NAS's alpha step) run their own backward and return the loss for the check.

The same loop trains heads on frozen features (Pi-NAS's linear evaluation): its own schedule
(``lr_schedule``), no clipping, no training hooks, and steps that are not the job's supernet budget
(``counts_toward_budget=False``), with its own checkpoint file in the job folder.
"""
from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from harness.engine.job import JobContext, TrainingHooks
from harness.engine.method import JobFailed

CKPT = "ckpt.pt"
FROM_BUDGET = "budget"  # SupernetTrainer(grad_clip=...): the budget's grad_clip (times grad_clip_scale)
CKPT_PREV = "ckpt.prev.pt"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_torch_save(obj, path: Path) -> str:
    """torch.save to ``path.tmp``, fsync, rename; returns the file's sha256 (also written beside it)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    digest = sha256_file(tmp)
    os.replace(tmp, path)
    sidecar = path.with_name(path.name + ".sha256")
    sidecar.with_name(sidecar.name + ".tmp").write_text(digest)
    os.replace(sidecar.with_name(sidecar.name + ".tmp"), sidecar)
    return digest


def load_verified(path: Path):
    """Load a checkpoint we wrote, after checking its sha256; None when missing or corrupt."""
    sidecar = path.with_name(path.name + ".sha256")
    if not path.is_file() or not sidecar.is_file():
        return None
    if sha256_file(path) != sidecar.read_text().strip():
        return None
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception:  # a checkpoint that passed the checksum but does not load is still corrupt
        return None


def cosine_lr(base: float, step: int, total: int, final: float = 0.0) -> float:
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * step / max(total, 1)))


class SupernetTrainer:
    """Runs ``budget.epochs`` worth of training-split batches through ``step_fn``.

    Options for loops other than supernet training (defaults: supernet training):
    ``steps`` fixes the number of steps (instead of ``epochs`` x batches per epoch); ``augment``
    turns the stream's crop/flip off; ``lr_schedule(step, total_steps)`` replaces the cosine
    schedule; ``backward`` makes the loop call ``loss.backward()``; ``hooks`` replaces
    ``job.hooks`` (``TrainingHooks()``: none, e.g. a loop run inside a fidelity-curve point);
    ``checkpoints=False`` neither resumes nor writes checkpoints; ``counts_toward_budget=False``
    leaves ``job.counters.steps``/``images_seen`` (the supernet's image budget) alone; the path
    passes a step records still count, and checkpoints still restore every counter.
    """

    def __init__(self, job: JobContext, model: torch.nn.Module, params=None, *, lr: float | None = None,
                 momentum: float | None = None, weight_decay: float | None = None,
                 nesterov: bool | None = None, final_lr: float = 0.0,
                 grad_clip: float | str | None = FROM_BUDGET, grad_clip_scale: float = 1.0,
                 epochs: float | None = None, batch_size: int | None = None, name: str = "train",
                 data_offset: int = 0, steps: int | None = None, augment: bool = True,
                 lr_schedule: Callable[[int, int], float] | None = None, backward: bool = False,
                 hooks: TrainingHooks | None = None, checkpoints: bool = True,
                 counts_toward_budget: bool = True):
        b = job.budget
        self.job, self.model, self.name = job, model, name
        self.stream = job.train_stream(batch_size, augment=augment)
        if steps is not None:
            self.total_steps = max(1, int(steps))
        else:
            self.total_steps = max(1, int(round((epochs if epochs is not None else b.epochs) * self.stream.len_epoch)))
        self.base_lr = b.lr if lr is None else lr
        self.final_lr = final_lr
        self.lr_schedule = lr_schedule or (lambda step, total: cosine_lr(self.base_lr, step, total, self.final_lr))
        self.grad_clip = b.clip_threshold(grad_clip_scale) if grad_clip == FROM_BUDGET else grad_clip
        self.grad_clip_rule = (f"budget grad_clip {b.grad_clip} x {grad_clip_scale:g}" if grad_clip == FROM_BUDGET
                               else "set by the method")
        # clip statistics (on the device: no host sync per step): steps clipped, norm sum, norm max
        self.clip_steps = 0
        self._clip_stats = torch.zeros(3, dtype=torch.float64, device=job.device)
        self.backward = bool(backward)
        self.hooks = hooks  # None: job.hooks, read when the loop starts
        self.checkpoints = bool(checkpoints)
        self.counts_toward_budget = bool(counts_toward_budget)
        self.params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
        self.optimizer = torch.optim.SGD(
            self.params, lr=self.base_lr, momentum=b.momentum if momentum is None else momentum,
            weight_decay=b.weight_decay if weight_decay is None else weight_decay,
            nesterov=b.nesterov if nesterov is None else nesterov)
        self.step = 0
        self.ckpt_path = job.job_dir / f"{name}-{CKPT}"
        # batches already consumed by earlier trainers of the same job (multi-stage methods such as
        # SE-NAS): stage i continues the run's data order instead of replaying epoch 0
        self.data_offset = int(data_offset)

    # --- checkpoints ---------------------------------------------------------------------
    def _state(self, extra: dict) -> dict:
        return {"step": self.step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(), "counters": dict(self.job.counters.__dict__), "extra": extra,
                "clip": {"steps": self.clip_steps, "stats": self._clip_stats.cpu()}}

    def save(self, extra: dict) -> None:
        if self.ckpt_path.exists():
            prev = self.ckpt_path.with_name(self.ckpt_path.name.replace(CKPT, CKPT_PREV))
            os.replace(self.ckpt_path, prev)
            side = self.ckpt_path.with_name(self.ckpt_path.name + ".sha256")
            if side.exists():
                os.replace(side, prev.with_name(prev.name + ".sha256"))
        digest = atomic_torch_save(self._state(extra), self.ckpt_path)
        self.job.state.setdefault("checkpoints", {})[self.name] = {"step": self.step, "sha256": digest}

    def try_resume(self) -> dict | None:
        """Restore the newest good checkpoint; returns its ``extra`` or None."""
        prev = self.ckpt_path.with_name(self.ckpt_path.name.replace(CKPT, CKPT_PREV))
        for path in (self.ckpt_path, prev):
            state = load_verified(path)
            if state is None:
                if path.exists():
                    self.job.log.warning("checkpoint %s is corrupt (checksum/load failed); trying an older one", path)
                continue
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            self.job.counters.__dict__.update(state["counters"])
            self.step = int(state["step"])
            clip = state.get("clip")  # absent in checkpoints written before the clip was recorded
            if clip is not None:
                self.clip_steps = int(clip["steps"])
                self._clip_stats = clip["stats"].to(self._clip_stats)
            self.job.state.setdefault("resumed", {})[self.name] = self.step
            if self.counts_toward_budget:  # the manifest's field: where supernet training resumed
                self.job.state["resumed_from_step"] = self.step
            self.job.log.info("resumed %s from %s at step %d", self.name, path.name, self.step)
            return state["extra"]
        return None

    # --- loop ----------------------------------------------------------------------------
    def run(self, step_fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
            get_state: Callable[[], dict] = dict, set_state: Callable[[dict], None] = lambda s: None,
            after_step: Callable[[int], None] | None = None, images_per_step: int | None = None) -> None:
        job = self.job
        hooks = job.hooks if self.hooks is None else self.hooks
        extra = self.try_resume() if self.checkpoints else None
        if extra is not None:
            set_state(extra)
        every = job.budget.checkpoint_every if self.checkpoints else 0
        n_epoch = self.stream.len_epoch
        self.model.train()
        hooks.on_train_start(self.model, job)
        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"{job.job_dir.name} {self.name}",
                   disable=not job.progress, leave=False, dynamic_ncols=True)
        loss_sum = torch.zeros((), device=job.device)
        window = 0
        while self.step < self.total_steps:
            epoch, start = divmod(self.step + self.data_offset, n_epoch)
            for x, y in self.stream.batches(epoch, start):
                lr = self.lr_schedule(self.step, self.total_steps)
                for g in self.optimizer.param_groups:
                    g["lr"] = lr
                self.optimizer.zero_grad(set_to_none=True)
                with job.autocast():  # bf16 forward (and its backward) with --precision bf16; no-op for fp32
                    loss = step_fn(x, y, self.step)
                if self.backward:  # outside autocast (PyTorch's advice); its ops follow the forward's dtypes
                    loss.backward()
                if self.grad_clip:
                    norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip).detach().double()
                    self._clip_stats += torch.stack([(norm > self.grad_clip).double(), norm, torch.zeros_like(norm)])
                    torch.maximum(self._clip_stats[2], norm, out=self._clip_stats[2])
                    self.clip_steps += 1
                self.optimizer.step()
                if after_step is not None:
                    after_step(self.step)
                if self.counts_toward_budget:
                    job.counters.steps += 1
                    job.counters.images_seen += images_per_step or len(x)
                loss_sum += loss.detach().float()
                window += 1
                self.step += 1
                hooks.on_step(self.model, self.step, self.total_steps)
                # a host sync only every few steps (and at the end): finite-loss check + progress
                if window >= 20 or self.step == self.total_steps:
                    mean = float(loss_sum) / window
                    if not math.isfinite(mean):
                        where = "" if self.name == "train" else f" ({self.name})"
                        raise JobFailed(f"non-finite training loss ({mean}) near step {self.step}{where}", self.step)
                    bar.set_postfix(loss=f"{mean:.3f}", lr=f"{lr:.4f}")
                    job.log.info("%s step %d/%d loss %.4f lr %.5f", self.name, self.step, self.total_steps, mean, lr)
                    loss_sum.zero_()
                    window = 0
                bar.update(1)
                if every and self.step % every == 0 and self.step < self.total_steps:
                    self.save(get_state())
                if self.step >= self.total_steps:
                    break
        bar.close()
        self.record_clip()
        hooks.on_train_end(self.model, job)

    def clip_record(self) -> dict:
        """How often the gradient clip fired in this trainer's steps (one host sync)."""
        clipped, norm_sum, norm_max = (float(v) for v in self._clip_stats.cpu())
        n = self.clip_steps if self.grad_clip else self.step
        return {"threshold": self.grad_clip, "rule": self.grad_clip_rule if self.grad_clip else "off",
                "steps": n, "clipped_steps": int(clipped), "clipped_fraction": clipped / n if n else None,
                "grad_norm_mean": norm_sum / n if n and self.grad_clip else None,
                "grad_norm_max": norm_max if n and self.grad_clip else None}

    def record_clip(self) -> None:
        """Put :meth:`clip_record` under the job's ``extra["grad_clip"][<trainer name>]``."""
        self.job.record("grad_clip", {**self.job.extra.get("grad_clip", {}), self.name: self.clip_record()})
