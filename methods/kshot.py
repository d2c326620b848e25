"""K-shot NAS: K-shot supernets merged by a learned simplex code (Su et al., ICML 2021).

Mechanism (paper Sec. 3):

- Every parametric candidate operator keeps a dictionary of K weight copies
  Theta = [theta_1 .. theta_K]. For an architecture a with code lambda on the simplex
  Delta^{K-1}, the operator computes with ``theta~ = sum_k lambda_k theta_k`` (Eq. 4). The merge
  happens BEFORE the forward pass (``torch.func.functional_call`` of the space's own operator with
  the merged tensors), so a training step stores the activations of one path, not K (Sec. 3,
  "Analysis on Training Cost"; measured in ``tests/bench/test_bench_kshot.py``).
- A simplex-net pi (Eq. 6): a 2-layer MLP from ``space.encode(a)`` (one-hot) to softmax over K,
  one code per architecture, shared by every operator of the path.
- Warm-up (Algorithm 1): lambda = 1/K exactly for every path during the first ``warmup_share`` of
  the training steps (paper: 5 of 120 epochs).
- Then, per batch (the same batch for both steps, so K-shot consumes the same images as SPOS):
  (a) Eq. 8: update the simplex-net with the supernets frozen, on m sampled paths, each taking
  b/m images of the batch (paper b_s = m = 16); (b) Eq. 9: update the supernets with the
  simplex-net frozen, on one sampled path. With K = 1 step (a) is skipped and the method is
  exactly ``spos`` (same path stream, same initialisation, same numbers).
- Estimation (Eq. 10): an architecture is scored through the shared evaluator with
  theta~(a) = Theta pi(a).

Choices the paper leaves open (recorded in the config and the job state):

- What gets K copies: every *parameter* of a searched candidate operator (the operators built
  through ``op_factory``): convolution weights and, when the space builds affine BN
  (``bn_affine=True``), the BN scale and shift, merged with the same code. BN running statistics
  are buffers, not weights: one set per operator, shared by all codes (the harness scores with
  batch statistics by default, so they do not enter the scores). The non-searched layers (stem,
  reduction blocks, final BN, head) are single-copy, shared as in SPOS: the wrapper is
  space-agnostic and only sees candidate operators.
- Copies 2..K are initialised independently by the space's own operator initialiser, from a
  separate seed stream (``kshot-copies``) drawn AFTER the supernet is built, so copy 1 is the
  SPOS initialisation bit for bit. (Identical copies would stay identical: under a uniform code
  every copy receives the same gradient.)
- Simplex-net: Linear(D, hidden) - ReLU - Linear(hidden, K) - softmax, trained with Adam
  (``simplex_lr``); its last layer starts at zero, so the learned code starts at exactly 1/K when
  it takes over from the warm-up (no jump in the merged weights).
- During the simplex step BN uses batch statistics without updating running buffers (the
  supernets are frozen in Eq. 8, their running statistics included). Each half of the
  alternation leaves the other side alone (tested): the simplex step writes no gradient into Theta
  and no BN buffer, the supernet step and its optimizer never touch the simplex-net.
- The simplex-net's learning rate (Adam) is not in the paper's main text. ``simplex_lr`` None
  (default) is ``1e-3 x max(1, paper_step_ratio)``: 1e-3 at `paper` and `study` (the same number
  of steps per image), ~0.033 at `smoke`, which takes ~33x fewer steps, so the code gets the same
  total Adam travel (lr x simplex steps, ~19 at every budget; the rule STC-NAS's alpha lr follows).
  Measured max |code - 1/K| (K = 8, 1/K = 0.125) on tiny runs (tests' job: C=4, 8px, batch 32,
  synthetic data): 32 steps: 0.010 at lr 1e-3 (the old default, warned as near uniform), 0.151 at
  the rule's 6.3e-3, 0.51 at 3e-2; 128 steps: 0.026 at 1e-3, 0.062 at the rule's 1.6e-3, 0.875 at
  3e-2 (one-hot codes). The codes move with the travel, so a budget with few steps and the paper's
  lr is the fixed-1/K baseline in all but name. At smoke shapes on NB201 (seed 0, 98 steps =
  1/6 of `smoke`): 0.030 at 1e-3 (warned), 0.874 at the rule's 0.033 (codes near one-hot already:
  at full travel the codes may rather collapse than stay uniform; ``kshot_codes.argmax_counts``
  shows it, and a report warning fires when the mean largest code exceeds ``onehot_warn``). This
  changes K-shot's `smoke` numbers on purpose
  (the probe suites' smoke baselines); `study` and `paper` keep 1e-3.
- m and the images per path: the paper's b_s = m = 16 paths split one batch, b/m images each.
  At the harness's batch 128 that is 8 images per path; at `paper` (batch 64) it would be 4,
  i.e. BN batch statistics from 4 images. ``min_images_per_path`` (8) caps m at
  ``batch // min_images_per_path``: m = 16 at batch 128 (unchanged), 8 at batch 64. The m used is
  recorded (``job.state["kshot"]["m"]``).
- The fallback to the paper's "fixed 1/K" baseline is made visible: after training the codes of
  ``spread_archs`` sampled architectures are compared with 1/K (min, max, max |code - 1/K|,
  ``extra["kshot_code_deviation"]``), with a report warning when max |code - 1/K| is below
  ``uniform_warn_rel`` x 1/K.

Out of scope: the channel-width search and its "channel branch" of the simplex-net (Sec. 4,
Eq. 11-12) and the non-parametric regulariser r_c (Eq. 13-17); only the operator search of
Sec. 3 is implemented.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from harness.budgets import paper_step_ratio
from harness.core.errors import ConfigError
from harness.engine.evaluator import SupernetScorer, batch_stat_bn, check_not_collapsed
from harness.core.seeding import derive_seed
from harness.spaces.base import Arch, OpFactory, OpSpec, SearchSpace
from harness.core.io import write_csv
from harness.engine.trainer import SupernetTrainer
from harness.engine.method import Method, MethodConfig, register_method

CODES_CSV = "kshot_codes.csv"


@dataclass(frozen=True)
class KShotConfig(MethodConfig):
    k: int = 8  # K supernets (paper: 8)
    paths_per_simplex_step: int = 16  # m paths, b/m images each, per simplex-net update (paper b_s=16)
    warmup_share: float = 5 / 120  # share of the training steps with lambda = 1/K (paper: 5 of 120 epochs)
    simplex_hidden: int = 64
    # Adam; None: SIMPLEX_LR x max(1, paper_step_ratio(budget)) (see the module docstring)
    simplex_lr: float | None = None
    simplex_grad_clip: float | None = 5.0
    label_smoothing: float = 0.0
    min_images_per_path: int = 8  # caps m at batch // this (BN statistics from >= 8 images)
    spread_archs: int = 500  # architectures whose codes are compared with 1/K after training
    uniform_warn_rel: float = 0.25  # warn when every code is within this x 1/K of 1/K
    onehot_warn: float = 0.9  # warn when the mean over architectures of the largest code is above this
    # warn when at least this share of architectures weight one copy highest and that copy's mean
    # code is above 1/2: K-shot then trains and scores close to one supernet (the K = 1 case)
    single_supernet_warn: float = 0.9

    def validate(self) -> None:
        if self.k < 1:
            raise ConfigError(f"kshot k={self.k} must be >= 1 (number of supernet copies; paper uses 8)")
        if self.paths_per_simplex_step < 1:
            raise ConfigError(f"kshot paths_per_simplex_step={self.paths_per_simplex_step} must be >= 1 (paper: 16)")
        if not 0.0 <= self.warmup_share <= 1.0:
            raise ConfigError(f"kshot warmup_share={self.warmup_share} must lie in [0, 1] (paper: 5/120)")
        if self.simplex_hidden < 1:
            raise ConfigError(f"kshot simplex_hidden={self.simplex_hidden} must be >= 1")
        if self.min_images_per_path < 1:
            raise ConfigError(f"kshot min_images_per_path={self.min_images_per_path} must be >= 1")
        if self.simplex_lr is not None and not self.simplex_lr > 0:
            raise ConfigError(f"kshot simplex_lr={self.simplex_lr} must be > 0 (or None: budget-scaled)")


SIMPLEX_LR = 1e-3  # the simplex-net's Adam lr at the paper's number of steps


def simplex_lr(config: KShotConfig, budget) -> float:
    """The simplex-net's lr: the config's, else SIMPLEX_LR x max(1, paper_step_ratio)."""
    return config.simplex_lr if config.simplex_lr is not None else SIMPLEX_LR * max(1.0, paper_step_ratio(budget))


def simplex_paths(config: KShotConfig, batch_size: int) -> int:
    """m for a batch: the config's, capped so that every path gets min_images_per_path images."""
    return max(1, min(config.paths_per_simplex_step, batch_size // config.min_images_per_path))


# --- K-shot operators -----------------------------------------------------------------------
@dataclass
class KShotCtx:
    """The per-call ``ctx`` of a K-shot supernet: the path's code lambda (shape K, on the simplex)."""

    lam: torch.Tensor


def merge_weights(stack: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """theta~ = sum_k lambda_k theta_k (Eq. 4) for a stack of shape (K, *weight_shape).

    Multiply-then-sum (not a matmul) so that K = 1 with lambda = (1,) returns the copy bit for bit.
    """
    return (lam.to(stack.dtype).view(-1, *([1] * (stack.dim() - 1))) * stack).sum(0)


def _slot(name: str) -> str:
    return "theta_" + name.replace(".", "_")


class KShotOp(nn.Module):
    """A candidate operator whose parameters are K stacked copies, merged by the code in ``ctx``.

    ``base`` is the space's own operator with its parameters removed; each forward calls it
    functionally with the merged tensors, so it computes exactly one operator's activations.
    The stacks are registered in the base operator's parameter order, at the operator's place in
    the module tree, so ``model.parameters()`` lists tensors in the same order as the plain supernet.
    """

    def __init__(self, base: nn.Module, spec: OpSpec):
        super().__init__()
        self.spec = spec
        self.names = [n for n, _ in base.named_parameters()]
        for name, p in list(base.named_parameters()):
            self.register_parameter(_slot(name), nn.Parameter(p.detach().unsqueeze(0).clone()))
            owner, _, leaf = name.rpartition(".")
            mod = base.get_submodule(owner)
            del mod._parameters[leaf]
            setattr(mod, leaf, None)  # filled by functional_call on every forward
        self.base = base

    @property
    def k(self) -> int:
        return self.stacks()[0].shape[0]

    def stacks(self) -> list[nn.Parameter]:
        return [getattr(self, _slot(n)) for n in self.names]

    def set_copies(self, copies: Sequence[nn.Module]) -> None:
        """Append copies 2..K from freshly built operators (same class, same parameter names)."""
        for name in self.names:
            old = getattr(self, _slot(name)).detach()
            extra = [dict(c.named_parameters())[name].detach().to(old) for c in copies]
            self.register_parameter(_slot(name), nn.Parameter(torch.cat([old, *[e.unsqueeze(0) for e in extra]])))

    def merged(self, lam: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: merge_weights(s, lam) for n, s in zip(self.names, self.stacks())}

    def forward(self, x, ctx=None):
        lam = ctx.lam if ctx is not None else uniform_code(self.k, device=x.device)
        if lam.shape != (self.k,):
            raise ValueError(f"K-shot code has shape {tuple(lam.shape)}; this operator has K={self.k}")
        return functional_call(self.base, self.merged(lam), (x, None))


def uniform_code(k: int, device=None) -> torch.Tensor:
    """The warm-up code: exactly 1/K in every entry (Algorithm 1)."""
    return torch.full((k,), 1.0 / k, device=device)


def kshot_factory(inner: OpFactory) -> OpFactory:
    """Wrap a space's operator factory: parametric operators become :class:`KShotOp` (K = 1 at
    build time; :func:`expand_copies` adds the other K - 1), the others stay as they are."""

    def factory(spec: OpSpec) -> nn.Module:
        op = inner(spec)
        return KShotOp(op, spec) if any(True for _ in op.parameters()) else op

    return factory


def kshot_ops(model: nn.Module) -> list[KShotOp]:
    return [m for m in model.modules() if isinstance(m, KShotOp)]


def expand_copies(model: nn.Module, k: int, inner: OpFactory, seed: int) -> None:
    """Give every K-shot operator copies 2..K, initialised independently by ``inner`` from
    ``seed``; the global torch RNG is left untouched (so K = 1 stays identical to SPOS)."""
    if k <= 1:
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for op in kshot_ops(model):
            op.set_copies([inner(op.spec) for _ in range(k - 1)])


# --- simplex-net -----------------------------------------------------------------------------
class SimplexNet(nn.Module):
    """pi: A -> Delta^{K-1} (Eq. 6): 2-layer MLP on the one-hot encoding, softmax over K."""

    def __init__(self, in_dim: int, k: int, hidden: int = 64):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, k)
        # zero last layer: the code is exactly uniform when the simplex-net takes over from warm-up
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, enc: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.fc2(F.relu(self.fc1(enc))), dim=-1)


def encode_batch(space: SearchSpace, archs: Sequence[Arch], device) -> torch.Tensor:
    return torch.from_numpy(np.stack([space.encode(a) for a in archs])).to(device)


# --- training ---------------------------------------------------------------------------------
class KShotRun:
    """The supernet, the simplex-net and the per-batch iterative update (Eq. 8 then Eq. 9)."""

    def __init__(self, job, config: KShotConfig, total_steps: int | None = None):
        config.validate()
        self.job, self.config, self.space = job, config, job.space
        self.k = config.k
        inner = job.space.default_op
        # build exactly as SPOS does (the job's init stream, same construction order) ...
        self.model = job.build_supernet(op_factory=kshot_factory(inner))
        # ... then the extra copies and the simplex-net from their own streams
        expand_copies(self.model, self.k, inner, derive_seed("job", job.seed, "kshot-copies"))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed("job", job.seed, "kshot-simplex"))
            in_dim = len(job.space.encode(tuple(0 for _ in job.space.decisions)))
            self.simplex = SimplexNet(in_dim, self.k, config.simplex_hidden).to(job.device)
        self.simplex_lr = simplex_lr(config, job.budget)
        self.m = simplex_paths(config, job.budget.batch_size)
        self.simplex_opt = torch.optim.Adam(self.simplex.parameters(), lr=self.simplex_lr)
        self.path_rng = job.rng("path")  # the supernet path: the very stream SPOS consumes
        self.simplex_rng = job.rng("kshot-simplex-paths")
        self.warmup_steps = 0
        if total_steps is not None:
            self.set_total_steps(total_steps)

    def set_total_steps(self, total_steps: int) -> None:
        self.warmup_steps = int(round(self.config.warmup_share * total_steps))

    # codes
    def code(self, arch: Arch, step: int | None = None) -> torch.Tensor:
        """lambda for ``arch``: 1/K during warm-up (and always for K = 1), else pi(arch) (no grad)."""
        if self.k == 1 or (step is not None and step < self.warmup_steps):
            return uniform_code(self.k, device=self.job.device)
        with torch.no_grad():
            return self.simplex(encode_batch(self.space, [arch], self.job.device))[0]

    def codes(self, archs: Sequence[Arch], batch: int = 4096) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(archs), batch):
                out.append(self.simplex(encode_batch(self.space, archs[i:i + batch], self.job.device)).cpu())
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros((0, self.k))

    # the two updates
    def simplex_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Eq. 8: one simplex-net update, supernets frozen, m paths on b/m images each."""
        m = self.m
        archs = [self.space.sample(self.simplex_rng) for _ in range(m)]
        lams = self.simplex(encode_batch(self.space, archs, x.device))
        params = list(self.simplex.parameters())
        loss = x.new_zeros(())
        with batch_stat_bn(self.model):  # frozen supernets: no running-stat updates either
            for i, (xb, yb) in enumerate(zip(torch.tensor_split(x, m), torch.tensor_split(y, m))):
                if len(xb) == 0:
                    continue
                out = self.model(xb, archs[i], KShotCtx(lams[i]))
                loss = loss + F.cross_entropy(out, yb, label_smoothing=self.config.label_smoothing) * (len(xb) / len(x))
                self.job.counters.add_path(len(xb))
        grads = torch.autograd.grad(loss, params)  # only sigma: Theta gets no gradient here
        for p, g in zip(params, grads):
            p.grad = g
        if self.config.simplex_grad_clip:
            torch.nn.utils.clip_grad_norm_(params, self.config.simplex_grad_clip)
        self.simplex_opt.step()
        self.simplex_opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        """One training step on one batch: (a) simplex-net (after warm-up, K > 1), (b) supernets."""
        if self.k > 1 and step >= self.warmup_steps:
            self.simplex_step(x, y)
        return self.supernet_step(x, y, step)

    def supernet_step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        """Eq. 9: gradients of the supernets on one sampled path, the simplex-net frozen."""
        arch = self.space.sample(self.path_rng)
        ctx = KShotCtx(self.code(arch, step))
        loss = F.cross_entropy(self.model(x, arch, ctx), y, label_smoothing=self.config.label_smoothing)
        loss.backward()
        self.job.counters.add_path(len(x))
        return loss

    # checkpoint state (torch.load(weights_only=True)-loadable)
    def get_state(self) -> dict:
        return {"path_rng": self.path_rng.bit_generator.state, "simplex_rng": self.simplex_rng.bit_generator.state,
                "simplex": self.simplex.state_dict(), "simplex_opt": self.simplex_opt.state_dict()}

    def set_state(self, s: dict) -> None:
        self.path_rng.bit_generator.state = s["path_rng"]
        self.simplex_rng.bit_generator.state = s["simplex_rng"]
        self.simplex.load_state_dict(s["simplex"])
        self.simplex_opt.load_state_dict(s["simplex_opt"])

    def ctx_fn(self, arch: Arch) -> KShotCtx:
        return KShotCtx(self.code(arch))


# --- scoring and the codes' spread ------------------------------------------------------------
def code_deviation(codes: np.ndarray, k: int) -> dict:
    """How far codes (n x K) are from the fixed 1/K: min, max and max |code - 1/K| (also / (1/K));
    how close they are to one-hot: the mean over architectures of each code's largest entry; and
    whether one supernet copy took over: the copy most architectures weight highest
    (``dominant_supernet``), the share of architectures that do (``dominant_share``) and that copy's
    mean code over all architectures (``dominant_mean_code``)."""
    if codes.size == 0:
        return {"k": k, "n_archs": 0, "uniform": 1.0 / k}
    dev = float(np.abs(codes - 1.0 / k).max())
    counts = np.bincount(codes.argmax(1), minlength=k)
    dominant = int(counts.argmax())
    return {"k": k, "n_archs": int(codes.shape[0]), "uniform": 1.0 / k, "min": float(codes.min()),
            "max": float(codes.max()), "max_abs_deviation": dev, "max_rel_deviation": dev * k,
            "mean_largest_code": float(codes.max(1).mean()), "dominant_supernet": dominant,
            "dominant_share": float(counts[dominant] / codes.shape[0]),
            "dominant_mean_code": float(codes[:, dominant].mean())}

def code_spread(codes: np.ndarray) -> dict:
    """Summary of learned codes (n x K): per-k mean/std, entropy, distance between codes."""
    n, k = codes.shape
    if n == 0:
        return {"k": k, "n_archs": 0}
    ent = -(codes * np.log(np.clip(codes, 1e-12, None))).sum(1)
    sub = codes[: min(n, 500)]
    pair_l1 = np.abs(sub[:, None, :] - sub[None, :, :]).sum(-1)
    iu = np.triu_indices(len(sub), 1)
    return {
        "k": k, "n_archs": n,
        "mean": codes.mean(0).round(6).tolist(), "std": codes.std(0).round(6).tolist(),
        "min": float(codes.min()), "max": float(codes.max()),
        "std_mean_over_k": float(codes.std(0).mean()),
        "entropy_mean": float(ent.mean()), "entropy_std": float(ent.std()), "entropy_max": math.log(k),
        "pairwise_l1_mean": float(pair_l1[iu].mean()) if len(iu[0]) else 0.0,
        "argmax_counts": np.bincount(codes.argmax(1), minlength=k).tolist(),
    }


class KShotScorer(SupernetScorer):
    """The shared evaluator with theta~(a) = Theta pi(a) (Eq. 10); records the scored codes."""

    def __init__(self, job, run: KShotRun):
        super().__init__(job, run.model, ctx_fn=run.ctx_fn)
        self.job, self.run = job, run
        self.codes: dict[Arch, np.ndarray] = {}

    def score(self, archs: Sequence[Arch]) -> np.ndarray:
        archs = [tuple(a) for a in archs]
        for a, c in zip(archs, self.run.codes(archs)):
            self.codes[a] = c
        self._write_codes()
        return super().score(archs)

    def _write_codes(self) -> None:
        space, k = self.job.space, self.run.k
        archs = list(self.codes)
        codes = np.stack([self.codes[a] for a in archs]) if archs else np.zeros((0, k))
        df = pd.DataFrame({"arch_index": [space.arch_index(a) for a in archs],
                           "arch": [space.format(a) for a in archs]})
        for j in range(k):
            df[f"lambda_{j}"] = codes[:, j] if len(codes) else []
        write_csv(self.job.job_dir / CODES_CSV, df)
        self.job.state.setdefault("kshot", {})["codes"] = code_spread(codes)

    def extra(self) -> dict:
        return {"kshot_codes": self.job.state.get("kshot", {}).get("codes", {})}


# --- the method -------------------------------------------------------------------------------
@register_method("kshot-k1", k=1)
@register_method("kshot")
class KShot(Method):
    Config = KShotConfig

    def fit(self, job):
        run = KShotRun(job, self.config)
        trainer = SupernetTrainer(job, run.model)  # Theta (+ shared layers) only; sigma has its own Adam
        run.set_total_steps(trainer.total_steps)
        job.state["kshot"] = {"k": run.k, "m": run.m, "images_per_path": job.budget.batch_size / run.m,
                              "simplex_lr": run.simplex_lr,
                              "simplex_lr_rule": "config" if self.config.simplex_lr is not None else
                              f"{SIMPLEX_LR:g} x max(1, paper_step_ratio) = {SIMPLEX_LR:g} x "
                              f"{max(1.0, paper_step_ratio(job.budget)):.3g}",
                              "warmup_steps": run.warmup_steps, "total_steps": trainer.total_steps,
                              "kshot_ops": len(kshot_ops(run.model))}
        # curve points: the shared evaluator with each path's code at the current step (1/K during
        # warm-up, as training uses); the codes CSV and job.state are the final scorer's alone
        job.set_curve_scorer(lambda: SupernetScorer(
            job, run.model, ctx_fn=lambda a: KShotCtx(run.code(a, trainer.step))))
        trainer.run(run.step, get_state=run.get_state, set_state=run.set_state)
        run.simplex.eval()
        check_not_collapsed(run.model, job.data.score_x[:64], [job.space.sample(job.rng("collapse")) for _ in range(4)],
                            ctx_fn=run.ctx_fn)
        if run.k > 1:
            warn_if_degenerate(job, run, self.config)
        return KShotScorer(job, run)


def warn_if_degenerate(job, run: KShotRun, config: KShotConfig) -> dict:
    """Records the learned codes' distance from 1/K over ``spread_archs`` sampled architectures
    (their own stream: nothing else's numbers move) and warns when K-shot stayed the fixed-1/K
    baseline (max |code - 1/K| below ``uniform_warn_rel`` x 1/K) or collapsed the other way, to
    near one-hot codes (mean largest code above ``onehot_warn``: each architecture then uses one
    of the K supernets, i.e. K separate one-shot supernets rather than a learned combination), or
    onto one copy (at least ``single_supernet_warn`` of the architectures weight the same copy
    highest, with a mean code above 1/2 there: one supernet, the ``kshot-k1`` case, at K times its
    cost). Seen in the committed NB201 study: K-shot seed 0 at `study` weights copy 7 highest for all
    300 scored architectures, with a mean code of 0.82 there (under ``onehot_warn``)."""
    rng = job.rng("kshot-spread")
    dev = code_deviation(run.codes([job.space.sample(rng) for _ in range(config.spread_archs)]), run.k)
    job.record("kshot_code_deviation", dev)
    if dev["n_archs"] and dev["max_abs_deviation"] < config.uniform_warn_rel / run.k:
        job.warn(f"K-shot codes stayed near uniform: max |code-1/K| = {dev['max_abs_deviation']:.3g} "
                 f"(1/K = {1 / run.k:.3g}; codes in [{dev['min']:.3g}, {dev['max']:.3g}] over {dev['n_archs']} "
                 f"architectures): the run is close to the paper's fixed-1/K baseline",
                 kshot_max_code_deviation=dev["max_abs_deviation"])
    if dev["n_archs"] and dev["mean_largest_code"] > config.onehot_warn:
        job.warn(f"K-shot codes collapsed to near one-hot: mean largest code = {dev['mean_largest_code']:.3g} "
                 f"over {dev['n_archs']} architectures (1/K = {1 / run.k:.3g}): each architecture uses about one of "
                 f"the K supernets", kshot_mean_largest_code=dev["mean_largest_code"])
    if dev["n_archs"] and dev["dominant_share"] >= config.single_supernet_warn and dev["dominant_mean_code"] > 0.5:
        job.warn(f"K-shot collapsed onto one supernet: {dev['dominant_share']:.0%} of {dev['n_archs']} architectures "
                 f"weight copy {dev['dominant_supernet']} highest, with a mean code of "
                 f"{dev['dominant_mean_code']:.3g} there (1/K = {1 / run.k:.3g}): the run is close to one "
                 f"supernet (kshot-k1) at {run.k} times its cost",
                 kshot_dominant_share=dev["dominant_share"], kshot_dominant_mean_code=dev["dominant_mean_code"])
    return dev
