"""SupernetEvaluator: accuracy of many architectures on the reserved `score` subset.

One place owns the BN protocol, batching and the score definition, so every supernet method is
measured the same way. The score is accuracy with ties broken by lower cross-entropy: near-chance
accuracies tie massively, which would distort tau-b.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import multiprocessing.connection
import os
import traceback
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from harness.budgets import BN_MODES
from harness.spaces.base import Arch
from harness.engine.method import Collapsed, Scorer



def _bns(model: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@contextlib.contextmanager
def batch_stat_bn(model: torch.nn.Module):
    """Inference with BN normalising by the current batch, without touching running buffers."""
    bns = _bns(model)
    saved = [(bn.training, bn.track_running_stats) for bn in bns]
    for bn in bns:
        bn.train()
        bn.track_running_stats = False  # F.batch_norm gets no buffers -> batch stats, no update
    try:
        yield
    finally:
        for bn, (training, track) in zip(bns, saved):
            bn.training, bn.track_running_stats = training, track


@contextlib.contextmanager
def recalibrated_bn(model: torch.nn.Module, forward: Callable[[torch.Tensor], torch.Tensor],
                    batches: Sequence[torch.Tensor]):
    """Re-estimate BN running statistics for one path on fixed batches, then restore them.

    Needs BN layers that track running stats (``bn_track=True``); the cumulative average
    (momentum=None) makes the estimate independent of the batch order.
    """
    bns = _bns(model)
    if any(bn.running_mean is None for bn in bns):
        raise ValueError("BN re-estimation needs a supernet built with bn_track=True")
    saved = [(bn.training, bn.momentum, bn.running_mean.clone(), bn.running_var.clone(),
              bn.num_batches_tracked.clone()) for bn in bns]
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        for xb in batches:
            forward(xb)
        for bn in bns:
            bn.eval()
        yield
    finally:
        for bn, (training, momentum, mean, var, nbt) in zip(bns, saved):
            bn.training, bn.momentum = training, momentum
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.num_batches_tracked.copy_(nbt)


def tie_broken_score(correct: int, n: int, mean_ce: float) -> float:
    """accuracy + a tie-breaker in (0, 1/n): equal accuracies are ordered by lower cross-entropy,
    and the tie-breaker never outweighs one more correct image."""
    ce = mean_ce if np.isfinite(mean_ce) else np.inf
    return correct / n + (1.0 / n) * 0.999 / (1.0 + ce)


class SupernetEvaluator:
    """Scores architectures of a trained supernet on held-out images (inference only).

    Fast paths, none of which changes a score's bits: the score batches (and BN re-estimation
    batches) are split once and kept in memory; BN/eval modes are set once per ``score`` call, not
    per architecture; per-architecture results stay on the device and are read back in chunks
    (no host sync per architecture on a GPU); and, where the model offers a ``prefix_cache``
    (NB201) and scores depend on the weights and the batch alone (``bn_mode="batch"``, no
    ``ctx_fn``/``forward_fn``), architectures run in lexicographic order so tensors fixed by a
    prefix of the choices (stem, first cell) are computed once and reused.

    ``workers=W > 1`` (CPU only, where the platform can fork) scores in W forked processes at one
    torch thread each. The order is cut into up to ``CHUNKS_PER_WORKER * W`` contiguous runs that
    the processes take one at a time as they finish the last (architectures differ in cost and a
    shared machine slows one core more than another, so fixed halves leave a process idle while
    the other still works; each run starts its own prefix cache): an architecture's score does not
    depend on which others are scored or in which process, and a forward pass at one thread gives
    the same bits as at two on this CPU (checked by the tests against a single process), so the
    scores are those of ``workers=1`` at one thread. Measured on the 2-core CPU at `study` shapes
    (all 6,466 unique NB201 cells, 256 images, idle machine): 2 processes x 1 thread 137 s, one
    process x 2 threads 171 s, one process x 1 thread 242 s, the same scores in all three.
    """

    READBACK_EVERY = 64  # architectures per device->host read-back

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, bn_mode: str = "batch",
                 recal_x: torch.Tensor | None = None, recal_batches: int = 4, batch_size: int = 512,
                 ctx_fn: Callable[[Arch], object] | None = None, progress: bool = True,
                 forward_fn: Callable | None = None, prefix_cache: bool = True, cache_bytes: int | None = None,
                 autocast: Callable[[], contextlib.AbstractContextManager] | None = None, workers: int = 1):
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
        self.model, self.x, self.y = model, x, y
        self.bn_mode = bn_mode
        self.batch_size = batch_size
        self.ctx_fn = ctx_fn
        self.progress = progress
        # forward_fn(model, x, arch, ctx) lets a method score through another head (Pi-NAS linear eval)
        self.forward_fn = forward_fn or (lambda m, xb, arch, ctx: m(xb, arch, ctx))
        self.batches = list(zip(x.split(batch_size), y.split(batch_size)))
        self.recal = []
        if bn_mode == "recal":
            if recal_x is None:
                raise ValueError("bn_mode='recal' needs recal_x")
            self.recal = list(recal_x[: recal_batches * batch_size].split(batch_size))
        self.use_prefix_cache = (prefix_cache and bn_mode == "batch" and ctx_fn is None and forward_fn is None
                                 and hasattr(model, "prefix_cache"))
        self.cache_bytes = cache_bytes if cache_bytes is not None else _default_cache_bytes(x.device)
        self.last_accuracy: np.ndarray | None = None
        self.last_loss: np.ndarray | None = None
        self.last_cache_stats: dict | None = None
        self.autocast = autocast or contextlib.nullcontext  # job.autocast: bf16 forwards with --precision bf16
        self.workers = max(1, int(workers)) if x.device.type == "cpu" and can_fork() else 1

    @contextlib.contextmanager
    def _inference(self):
        """model.eval(), with batch-statistics BN in ``batch`` mode; restored afterwards."""
        was_training = self.model.training
        self.model.eval()
        try:
            with batch_stat_bn(self.model) if self.bn_mode == "batch" else contextlib.nullcontext():
                yield
        finally:
            self.model.train(was_training)

    def _run(self, arch: Arch) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per score batch: (number correct, summed cross-entropy) as device scalars."""
        ctx = self.ctx_fn(arch) if self.ctx_fn else None
        fwd = lambda xb: self.forward_fn(self.model, xb, arch, ctx)  # noqa: E731
        guard = recalibrated_bn(self.model, fwd, self.recal) if self.bn_mode == "recal" else contextlib.nullcontext()
        out = []
        with guard, self.autocast():
            for xb, yb in self.batches:
                logits = fwd(xb).float()
                out.append(((logits.argmax(1) == yb).sum(), F.cross_entropy(logits, yb, reduction="sum")))
        return out

    def _read_back(self, runs: list[list[tuple[torch.Tensor, torch.Tensor]]]) -> list[tuple[int, float]]:
        """One host sync for many architectures; sums in the order (and precision) of a per-batch
        ``int()``/``float()`` read, so results do not depend on the chunking."""
        if not runs:
            return []
        corrects = torch.stack([c for r in runs for c, _ in r]).tolist()
        ces = torch.stack([ce for r in runs for _, ce in r]).tolist()
        out, j, n = [], 0, len(self.y)
        for r in runs:
            correct, ce_sum = 0, 0.0
            for _ in r:
                correct += int(corrects[j])
                ce_sum += float(ces[j])
                j += 1
            out.append((correct, ce_sum / n))
        return out

    @torch.no_grad()
    def evaluate(self, arch: Arch) -> tuple[int, float]:
        """(number correct, mean cross-entropy) of one architecture on the score images."""
        with self._inference():
            return self._read_back([self._run(arch)])[0]

    @torch.no_grad()
    def score(self, archs: Sequence[Arch]) -> np.ndarray:
        order = list(range(len(archs)))
        if self.use_prefix_cache:
            order.sort(key=lambda i: tuple(archs[i]))  # neighbours share prefixes
        workers = min(self.workers, len(order) // self.MIN_PER_WORKER)
        if workers > 1:
            n_chunks = max(workers, min(workers * self.CHUNKS_PER_WORKER, len(order) // self.MIN_PER_WORKER))
            chunks = np.array_split(np.asarray(order, dtype=np.int64), n_chunks)
            parts = self._score_forked([[archs[i] for i in c] for c in chunks], workers)
        else:
            chunks, parts = [np.asarray(order, dtype=np.int64)], [self._score_ordered([archs[i] for i in order])]
        scores, acc, loss = np.empty(len(archs)), np.empty(len(archs)), np.empty(len(archs))
        stats = None
        for idx, (s, a, lo, st) in zip(chunks, parts):
            scores[idx], acc[idx], loss[idx] = s, a, lo
            if st is not None:
                # hits and misses add up; bytes and entries: the largest chunk's cache (memory held at once)
                stats = st if stats is None else {k: (max if k in ("bytes", "entries") else sum)((stats[k], st[k]))
                                                  for k in stats}
        self.last_accuracy, self.last_loss, self.last_cache_stats = acc, loss, stats
        return scores

    MIN_PER_WORKER = 16  # fewer architectures per process than this: forking costs more than it saves
    CHUNKS_PER_WORKER = 8  # runs of the order per process, taken as processes come free

    def _score_ordered(self, archs: Sequence[Arch], progress=None) -> tuple:
        """(scores, accuracies, mean losses, cache stats) of ``archs`` in the given order, here."""
        n = len(self.y)
        scores, acc, loss = np.empty(len(archs)), np.empty(len(archs)), np.empty(len(archs))
        cache_cm = self.model.prefix_cache(self.cache_bytes) if self.use_prefix_cache else contextlib.nullcontext()
        pending: list[int] = []
        runs: list = []

        def flush():
            for i, (correct, ce) in zip(pending, self._read_back(runs)):
                acc[i], loss[i] = correct / n, ce
                scores[i] = tie_broken_score(correct, n, ce)
            if progress is not None:
                progress(len(pending))
            pending.clear()
            runs.clear()

        with self._inference(), cache_cm as cache:
            bar = tqdm(range(len(archs)), desc="score", disable=not self.progress or progress is not None, leave=False)
            for i in bar:
                runs.append(self._run(archs[i]))
                pending.append(i)
                if len(pending) >= self.READBACK_EVERY:
                    flush()
            flush()
            stats = cache.stats() if cache is not None else None
        return scores, acc, loss, stats

    def _score_forked(self, chunks: list[list[Arch]], workers: int) -> list[tuple]:
        """``_score_ordered`` of every chunk, in ``workers`` forked processes at one torch thread
        that take the next unscored chunk when they finish one. The children share the model
        copy-on-write; a child's failure is raised here with its traceback (no partial result is
        used)."""
        ctx = mp.get_context("fork")
        done = ctx.Value("l", 0)  # architectures scored (progress)
        next_chunk = ctx.Value("l", 0)  # the next chunk a free process takes
        procs, conns = [], []
        for _ in range(workers):
            recv, send = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_score_child, args=(self, chunks, next_chunk, send, done), daemon=True)
            p.start()
            send.close()
            procs.append(p)
            conns.append(recv)
        results: dict[int, tuple] = {}
        errors: list[str] = []
        bar = tqdm(total=sum(map(len, chunks)), desc=f"score ({workers} processes)", disable=not self.progress,
                   leave=False)
        try:
            waiting = dict(enumerate(conns))
            while waiting:
                for conn in mp.connection.wait(list(waiting.values()), timeout=0.5):
                    w = next(w for w, c in waiting.items() if c is conn)
                    try:
                        status, k, payload = conn.recv()
                    except EOFError:  # the process has sent everything it will send
                        del waiting[w]
                        continue
                    if status == "error":
                        errors.append(payload)
                    else:
                        results[k] = payload
                bar.n = done.value
                bar.refresh()
        finally:
            bar.close()
            for p in procs:
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()
            for c in conns:
                c.close()
        if errors:
            raise RuntimeError(f"scoring in a worker process failed:\n{errors[0]}")
        missing = [k for k in range(len(chunks)) if k not in results]
        if missing:
            codes = ", ".join(f"{p.pid}: {p.exitcode}" for p in procs)
            raise RuntimeError(f"scoring processes ended without the results of {len(missing)} of {len(chunks)} "
                               f"chunks (exit codes {codes})")
        return [results[k] for k in range(len(chunks))]


def can_fork() -> bool:
    return "fork" in mp.get_all_start_methods()


def _score_child(evaluator: SupernetEvaluator, chunks: list[list[Arch]], next_chunk, conn, done) -> None:
    """A forked scoring process: one torch thread, no progress bar; takes chunks until none is
    left, sends each result (or the error) to the parent, then exits without running the
    parent's atexit handlers."""
    try:
        torch.set_num_threads(1)
        evaluator.progress = False

        def progress(k: int) -> None:
            with done.get_lock():
                done.value += k

        while True:
            with next_chunk.get_lock():
                k = next_chunk.value
                next_chunk.value += 1
            if k >= len(chunks):
                break
            conn.send(("ok", k, evaluator._score_ordered(chunks[k], progress)))
    except BaseException:  # noqa: BLE001 - everything goes back to the parent
        conn.send(("error", -1, traceback.format_exc()))
    finally:
        conn.close()
        os._exit(0)


def _default_cache_bytes(device: torch.device) -> int:
    """Prefix-cache budget: 512 MiB on the CPU; a quarter of the free memory (at most 16 GiB) on a GPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(min(free // 4, 16 << 30))
    return 512 << 20  # smoke shapes: a 256-image tensor is 2 MiB; the sorted order's working set is ~30 of them


def check_not_collapsed(model: torch.nn.Module, x: torch.Tensor, archs: Sequence[Arch], *, ctx_fn=None,
                        forward_fn=None, threshold: float = 1e-8) -> float:
    """Raise ``Collapsed`` when outputs are (nearly) constant across a batch for every path.

    Checked on raw outputs before anything is normalised, so all-zero outputs are reported as a
    collapse rather than turning into NaN later. Returns the smallest per-path variance seen.
    """
    forward_fn = forward_fn or (lambda m, xb, arch, ctx: m(xb, arch, ctx))
    was_training = model.training
    model.eval()
    variances = []
    try:
        with torch.no_grad(), batch_stat_bn(model):
            for arch in archs:
                out = forward_fn(model, x, arch, ctx_fn(arch) if ctx_fn else None).float()
                variances.append(float(out.var(dim=0).mean()))
    finally:
        model.train(was_training)
    worst = max(variances) if variances else 0.0
    if not np.isfinite(worst) or worst < threshold:
        raise Collapsed(f"outputs are constant across the batch (max variance over {len(archs)} paths = {worst:.3g} "
                        f"< {threshold:g})")
    return min(variances)


class SupernetScorer(Scorer):
    """The Scorer of every supernet method: the shared evaluator on the `score` subset."""

    def __init__(self, job, model: torch.nn.Module, ctx_fn=None, forward_fn=None, model_for_eval=None):
        b = job.budget
        self.evaluator = SupernetEvaluator(
            model_for_eval or model, job.data.score_x, job.data.score_y, bn_mode=b.bn_mode,
            recal_x=job.data.recal_x(b.recal_batches * b.eval_batch_size), recal_batches=b.recal_batches,
            batch_size=b.eval_batch_size, ctx_fn=ctx_fn, progress=job.progress, forward_fn=forward_fn,
            autocast=getattr(job, "autocast", None), workers=score_workers(job))

    def score(self, archs: Sequence[Arch]) -> np.ndarray:
        return self.evaluator.score(archs)


def score_workers(job) -> int:
    """Scoring processes for a job: one per torch thread of its budget on the CPU (the same cores,
    the same scores; see ``SupernetEvaluator``), one on a GPU."""
    return int(job.budget.threads) if torch.device(job.device).type == "cpu" else 1
