"""STC-NAS: source-target consistent sampling (Sun et al., Neurocomputing 2022).

What runs, per training step (numbers are the paper's equations):

1. Sample one operator per decision (edge): ``n = argmax(alpha + eps)``, ``eps ~ U(0, r)`` per
   operator, ``r`` annealed linearly from ``noise_start`` (0.3) to 0 over the search (Eq. 5). The
   sub-network therefore has exactly the target's edges (cell consistency).
2. Weight step on a train-half batch: the chosen operator's output is multiplied by
   ``ReLU(alpha_n)`` (Eq. 3 with Kronecker-delta sifting, Eq. 4-5), alpha held constant, through
   the shared `SupernetTrainer` with the budget's optimiser (lr, Nesterov momentum, weight decay,
   cosine to 0, gradient clip), the same as every other method gets under "identical budgets"
   (issue 19). The paper's own (Sec. 4.2: SGD lr 0.025 cosine to 0.001, momentum 0.9 without
   Nesterov, wd 3e-4) is the registered variant ``stcnas-paper``. This changed the STC-NAS numbers
   on purpose: the committed nb201-study row ``stcnas-s0`` (tau -0.182) is the paper optimiser's.
3. Alpha step (first-order alternation, Eq. 2/10) on a batch of the search split (valid half minus
   the reserved `score` subset), same sampled sub-network, weights held constant:
   ``loss = CE + lambda * JS(alpha_s || alpha)`` (Eq. 9-10), its forward under the job's autocast
   (``--precision bf16``, like the weight step's; alpha and the JS term stay fp32), ``alpha_s``
   the one-hot of the sampled operators, ``alpha`` normalised ``ReLU(alpha)`` per decision;
   ``lambda`` rises linearly 0 -> 2. Adam (betas 0.5, 0.999; wd 0, so operators that are not sampled keep their weight).
4. Projection (PGD, Eq. 6-8): alpha is clipped to [0, 1] after every alpha step. The ``||.||_0 = 1``
   part of the constraint set Q is realised by running one operator per decision (step 1), not by
   a projection of alpha itself.

Choices the paper leaves open (recorded in the job's ``extra``):

- alpha init: 0.5 + U(-0.001, 0.001) (``alpha_init``/``alpha_init_noise``); the noise only breaks
  ties so that the first argmax is not always choice 0.
- the alpha learning rate: the paper's 3e-4 belongs to ~50 epochs at batch 64; a smoke budget has
  ~33x fewer steps, so by default ``alpha_lr = 3e-4 * max(1, paper_steps / steps)`` (0.01 at smoke,
  3e-4 at paper), giving alpha the same total Adam travel. ``alpha_lr`` in the config overrides it.
- schedules are linear in the step, ``progress = step / (total - 1)``, so the last step has r = 0
  and lambda = 2 exactly.
- the JS term is the mean over decisions (the paper writes it over the alpha matrix without saying
  how edges combine; the mean keeps lambda's scale independent of the number of edges).
- the alpha step reuses the sub-network the weight step just trained, runs BN on batch statistics
  without touching the running buffers (search images never enter BN running statistics).

Decisions on the zero points (issue 19):

- An alpha clipped to exactly 0 is stuck there: ReLU'(0) = 0, so neither the CE through the scale
  nor the JS term (built on ReLU(alpha)) gives it a gradient, and Adam's decaying momentum only
  pushes it back into the clip. Once the noise range r is below the gap to the decision's max it is
  never sampled again, and its weights (scaled by 0) get no gradient either. It is scored as the
  supernet computes it, i.e. its output times ReLU(0) = 0, the same as `none`: that is what the
  trained forward says about the operator (STC-NAS has dropped it), and scoring it unscaled would
  use weights frozen at the moment the scale went to 0, at a scale they were never trained under.
  Architectures that differ only by such operators tie. How many alphas ended at 0 and when they
  got there is recorded (``extra["stc_alpha_stuck"]``) with a report warning, since many stuck
  alphas make the supernet scores of those operators trivial.
- `none` stays a sampling candidate (the paper's NB201 operator set): its output is identically
  zero, so its alpha gets no CE gradient (the scale does not reach the loss) and moves only
  through the JS term (raised when it is sampled, lowered when another operator of its edge is).
- Ranking every scored architecture by the supernet (or by alpha) is the harness's extension:
  the paper reports the accuracy/tau of the architectures it derives (``picked()`` here), not a
  ranking of a whole architecture set.

Scoring: ``stcnas`` scores every architecture by supernet accuracy through the shared evaluator
(same BN protocol as every method) with the forward the weights were trained under, i.e. each
chosen operator's output scaled by ReLU(alpha) (``score_scale=True``; False scores the plain
path). ``stcnas-alpha`` scores by sum over decisions of ReLU(alpha) of the chosen operator. Both
report the derived architecture (argmax alpha per decision) as ``picked()``. Each registered variant
trains its own supernet from the same seed (identical training), so running both costs two trainings.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from harness.budgets import PAPER_REFERENCE, Budget
from harness.core.errors import ConfigError
from harness.engine.evaluator import SupernetScorer, batch_stat_bn, check_not_collapsed
from harness.spaces.base import Arch, OpSpec, SearchSpace
from harness.core.io import write_csv
from harness.engine.trainer import SupernetTrainer
from harness.engine.method import Method, MethodConfig, Scorer, register_method

HISTORY_FILE = "stc_alpha_history.csv"
PAPER_ALPHA_LR = 3e-4


@dataclass(frozen=True)
class StcNasConfig(MethodConfig):
    score_by: str = "supernet"  # "supernet": supernet accuracy; "alpha": sum of ReLU(alpha)
    score_scale: bool = True  # scoring forward scales chosen ops by ReLU(alpha), as in training
    # network weights: None = the budget's (lr, momentum, weight decay, Nesterov); final lr of the
    # cosine: 0 as for every method. The paper's (Sec. 4.2) is the `stcnas-paper` variant.
    w_lr: float | None = None
    w_final_lr: float = 0.0
    w_momentum: float | None = None
    w_weight_decay: float | None = None
    w_nesterov: bool | None = None
    # architecture parameters (Sec. 4.2); None = budget-scaled paper value (see module docstring)
    alpha_lr: float | None = None
    alpha_betas: tuple[float, float] = (0.5, 0.999)
    alpha_weight_decay: float = 0.0
    alpha_init: float = 0.5
    alpha_init_noise: float = 1e-3
    noise_start: float = 0.3  # initial range r of eps ~ U(0, r) (Eq. 5); annealed to 0
    js_lambda_start: float = 0.0
    js_lambda_end: float = 2.0
    history_points: int = 100  # rows of stc_alpha_history.csv (plus the initial one)


# --- schedules and the pieces of the objective ------------------------------------------------
def progress(step: int, total: int) -> float:
    """Fraction of the search done at ``step`` (0-based): 0 at the first step, 1 at the last."""
    return min(max(step / max(total - 1, 1), 0.0), 1.0)


def noise_range(step: int, total: int, start: float) -> float:
    """Range r of the sampling noise (Eq. 5), linearly annealed from ``start`` to exactly 0."""
    return start * (1.0 - progress(step, total))


def js_lambda(step: int, total: int, start: float = 0.0, end: float = 2.0) -> float:
    """Weight of the JS term (Eq. 10), rising linearly (the paper's dynamic 0 -> 2, Table 7)."""
    return start + (end - start) * progress(step, total)


def scaled_alpha_lr(budget: Budget, base: float = PAPER_ALPHA_LR) -> float:
    """The paper's alpha lr times how many fewer alpha steps this budget takes than `paper`.

    Steps per train image are ``epochs / batch_size`` (the train-set size cancels), so the ratio
    is 1 at the paper budget and ~33 at smoke; never scaled down.
    """
    ratio = (PAPER_REFERENCE.epochs / PAPER_REFERENCE.batch_size) / (budget.epochs / budget.batch_size)
    return base * max(1.0, ratio)


def _masked(values: np.ndarray, allowed: Sequence[int] | None) -> np.ndarray:
    """Choices a constrained space forbids at this decision can never be the argmax."""
    if allowed is None or len(allowed) == len(values):
        return values
    out = np.full_like(values, -np.inf)
    out[list(allowed)] = values[list(allowed)]
    return out


def sample_ops(alphas: Sequence[torch.Tensor], r: float, rng: np.random.Generator,
               allowed: Sequence[Sequence[int]] | None = None) -> tuple[Arch, int]:
    """One operator per decision, ``argmax(alpha + eps)``, ``eps ~ U(0, r)`` per operator (Eq. 5).

    Returns the architecture and how many decisions the noise moved off ``argmax(alpha)``.
    ``allowed[d]`` restricts decision d to the choices a constrained space allows.
    """
    arch, flips = [], 0
    for d, a in enumerate(alphas):
        values = _masked(a.detach().cpu().numpy().astype(np.float64), allowed[d] if allowed else None)
        eps = rng.uniform(0.0, r, size=values.shape) if r > 0 else np.zeros_like(values)
        choice = int(np.argmax(values + eps))
        flips += int(choice != int(np.argmax(values)))
        arch.append(choice)
    return tuple(arch), flips


def _kl(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """KL(p || q) = sum p log p - p log q, with 0 log 0 = 0 and finite gradients at p = 0."""
    return (p * (p.clamp_min(eps).log() - q.clamp_min(eps).log())).sum(-1)


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (Eq. 9) over the last dimension."""
    m = 0.5 * (p + q)
    return 0.5 * _kl(p, m) + 0.5 * _kl(q, m)


def normalised_weights(alpha: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """ReLU(alpha) / sum ReLU(alpha) on one decision: the super-cell's distribution in Eq. 9."""
    w = F.relu(alpha)
    return w / w.sum().clamp_min(eps)


def stc_js_loss(alphas: Sequence[torch.Tensor], arch: Arch) -> torch.Tensor:
    """Mean over decisions of JS(one-hot(sampled) || normalised ReLU(alpha)) (Eq. 9-10)."""
    terms = []
    for a, choice in zip(alphas, arch):
        onehot = F.one_hot(torch.tensor(choice, device=a.device), a.numel()).to(a.dtype)
        terms.append(js_divergence(onehot, normalised_weights(a)))
    return torch.stack(terms).mean()


@torch.no_grad()
def project_(alphas: Sequence[torch.Tensor]) -> None:
    """Euclidean projection onto the box part of Q (Eq. 6-8): clip every alpha to [0, 1]."""
    for a in alphas:
        a.clamp_(0.0, 1.0)


# --- the scaled operator ------------------------------------------------------------------------
class AlphaScale:
    """The ``ctx`` an STC forward passes: per-decision ReLU(alpha) vectors (tensors, maybe with grad)."""

    def __init__(self, weights: Sequence[torch.Tensor]):
        self.weights = list(weights)

    def __call__(self, decision: int, choice: int) -> torch.Tensor:
        return self.weights[decision][choice]


class ScaledOp(nn.Module):
    """``ReLU(alpha_n) * o_n(x)`` (Eq. 5): the space's operator, scaled by the value in ``ctx``.

    With any other ctx (None: a plain single-path forward) the operator runs unscaled.
    """

    def __init__(self, op: nn.Module, spec: OpSpec):
        super().__init__()
        self.op = op
        self.decision, self.choice = spec.decision, spec.choice

    def forward(self, x, ctx=None):
        out = self.op(x, ctx)
        if isinstance(ctx, AlphaScale):
            out = out * ctx(self.decision, self.choice)
        return out


def scaled_op_factory(space: SearchSpace):
    return lambda spec: ScaledOp(space.default_op(spec), spec)


# --- the search ---------------------------------------------------------------------------------
class StcSearch:
    """Supernet, alpha, both optimisers and the alternation; one instance per job."""

    def __init__(self, job, cfg: StcNasConfig):
        self.job, self.cfg, self.space = job, cfg, job.space
        self.model = job.build_supernet(op_factory=scaled_op_factory(job.space))
        init_rng = job.rng("stc-alpha-init")
        self.alphas = [
            torch.tensor(cfg.alpha_init + init_rng.uniform(-cfg.alpha_init_noise, cfg.alpha_init_noise,
                                                           size=len(d.choices)),
                         dtype=torch.float32, device=job.device).requires_grad_(True)
            for d in self.space.decisions]
        self.alpha_init = [a.detach().clone() for a in self.alphas]
        self.alpha_lr = cfg.alpha_lr if cfg.alpha_lr is not None else scaled_alpha_lr(job.budget)
        self.alpha_opt = torch.optim.Adam(self.alphas, lr=self.alpha_lr, betas=tuple(cfg.alpha_betas),
                                          weight_decay=cfg.alpha_weight_decay)
        self.trainer = SupernetTrainer(job, self.model, lr=cfg.w_lr, final_lr=cfg.w_final_lr,
                                       momentum=cfg.w_momentum, weight_decay=cfg.w_weight_decay,
                                       nesterov=cfg.w_nesterov)
        self.total = self.trainer.total_steps
        self.noise_rng = job.rng("stc-noise")
        self.allowed = [self.space.allowed_choices(d) for d in range(len(self.space.decisions))]
        self.search_stream = job.search_stream()
        self.search_epoch, self.search_pos = 0, 0
        self._search_iter = None
        self.arch: Arch | None = None  # the sub-network sampled for the current step
        self.every = max(1, self.total // max(1, cfg.history_points))
        self.columns = [f"{d.name}/{c}" for d in self.space.decisions for c in d.choices]
        self.history: list[dict] = []
        self.flips = [0, 0, 0, 0]  # per quarter of the search: decisions moved off argmax by noise
        self.decided = [0, 0, 0, 0]
        # per alpha: the alpha step after which it last became exactly 0 (-1: not at 0)
        self.zero_since = [torch.full_like(a, -1.0).detach() for a in self.alphas]
        self._reset_window()
        self._log_row(0)

    # --- pieces (small so tests can call and spy on them) -----------------------------------
    def weights(self, detach: bool) -> AlphaScale:
        return AlphaScale([F.relu(a).detach() if detach else F.relu(a) for a in self.alphas])

    def eval_ctx(self, arch: Arch) -> AlphaScale:
        return self.weights(detach=True)

    def sample(self, step: int) -> Arch:
        arch, flips = sample_ops(self.alphas, noise_range(step, self.total, self.cfg.noise_start), self.noise_rng,
                                 self.allowed)
        q = min(3, int(4 * step / max(self.total, 1)))
        self.flips[q] += flips
        self.decided[q] += len(arch)
        self.w_flips += flips
        self.w_decided += len(arch)
        return arch

    def weight_step(self, x: torch.Tensor, y: torch.Tensor, arch: Arch) -> torch.Tensor:
        """Train-half batch -> gradients of the network weights only (alpha held constant)."""
        loss = F.cross_entropy(self.model(x, arch, self.weights(detach=True)), y)
        loss.backward()
        self.job.counters.add_path(len(x))
        return loss

    def alpha_step(self, x: torch.Tensor, y: torch.Tensor, arch: Arch, step: int) -> None:
        """Search-split batch -> one Adam step on alpha (Eq. 10), then the projection (Eq. 7)."""
        # train-mode BN (search images never reach running stats), under the job's autocast
        with batch_stat_bn(self.model), self.job.autocast():
            logits = self.model(x, arch, self.weights(detach=False))
        ce = F.cross_entropy(logits.float(), y)
        lam = js_lambda(step, self.total, self.cfg.js_lambda_start, self.cfg.js_lambda_end)
        js = stc_js_loss(self.alphas, arch)
        # gradients of alpha only: the weights' .grad (read by the trainer/diagnostics) stay untouched
        grads = torch.autograd.grad(ce + lam * js, self.alphas, allow_unused=True)
        for a, g in zip(self.alphas, grads):
            a.grad = torch.zeros_like(a) if g is None else g
        self.alpha_opt.step()
        self.alpha_opt.zero_grad(set_to_none=True)
        project_(self.alphas)
        self._track_zeros(step)
        self.job.counters.add_path(len(x))
        self.w_ce += ce.detach()
        self.w_js += js.detach()
        self.w_n += 1

    @torch.no_grad()
    def _track_zeros(self, step: int) -> None:
        for a, since in zip(self.alphas, self.zero_since):
            at0 = a.detach() == 0
            since.copy_(torch.where(at0, torch.where(since < 0, torch.full_like(since, step + 1), since),
                                    torch.full_like(since, -1.0)))

    def next_search_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        while True:
            if self._search_iter is None:
                self._search_iter = self.search_stream.batches(self.search_epoch, self.search_pos)
            try:
                batch = next(self._search_iter)
            except StopIteration:
                self.search_epoch, self.search_pos, self._search_iter = self.search_epoch + 1, 0, None
                continue
            self.search_pos += 1
            return batch

    # --- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        def step_fn(x, y, step):
            self.arch = self.sample(step)
            return self.weight_step(x, y, self.arch)

        def after_step(step):
            xs, ys = self.next_search_batch()
            self.alpha_step(xs, ys, self.arch, step)
            if (step + 1) % self.every == 0 or step + 1 == self.total:
                self._log_row(step + 1)

        self.trainer.run(step_fn, get_state=self.get_state, set_state=self.set_state, after_step=after_step)
        write_csv(self.job.job_dir / HISTORY_FILE, pd.DataFrame(self.history))

    # --- logging ----------------------------------------------------------------------------
    def _reset_window(self) -> None:
        self.w_flips, self.w_decided, self.w_n = 0, 0, 0
        self.w_ce = torch.zeros((), device=self.job.device)
        self.w_js = torch.zeros((), device=self.job.device)

    def _log_row(self, done: int) -> None:
        """One row of alpha per decision/operator after ``done`` alpha steps, with the window's
        noise flip rate (share of sampled decisions that were not argmax alpha)."""
        last = max(done - 1, 0)
        row = {"step": done, "noise_r": noise_range(last, self.total, self.cfg.noise_start) if done else np.nan,
               "js_lambda": js_lambda(last, self.total, self.cfg.js_lambda_start, self.cfg.js_lambda_end)
               if done else np.nan,
               "flip_rate": self.w_flips / self.w_decided if self.w_decided else np.nan,
               "search_ce": float(self.w_ce) / self.w_n if self.w_n else np.nan,
               "js": float(self.w_js) / self.w_n if self.w_n else np.nan,
               "derived": self.space.format(self.derived())}
        values = torch.cat([a.detach().cpu() for a in self.alphas]).tolist()
        row.update(zip(self.columns, values))
        self.history.append(row)
        if done:
            self.job.log.info("stc step %d/%d: flip rate %.3f, derived %s", done, self.total, row["flip_rate"],
                              row["derived"])
        self._reset_window()

    # --- checkpoint state (weights_only-loadable) ------------------------------------------
    def get_state(self) -> dict:
        return {"alphas": [a.detach().cpu().clone() for a in self.alphas],
                "alpha_opt": self.alpha_opt.state_dict(),
                "noise_rng": self.noise_rng.bit_generator.state,
                "search_pos": [self.search_epoch, self.search_pos],
                "flips": list(self.flips), "decided": list(self.decided),
                "zero_since": [z.cpu().clone() for z in self.zero_since],
                "history": [{k: (v if isinstance(v, str) else float(v)) for k, v in r.items()} for r in self.history]}

    def set_state(self, s: dict) -> None:
        with torch.no_grad():
            for a, v in zip(self.alphas, s["alphas"]):
                a.copy_(v.to(a.device))
        self.alpha_opt.load_state_dict(s["alpha_opt"])
        self.noise_rng.bit_generator.state = s["noise_rng"]
        self.search_epoch, self.search_pos = (int(v) for v in s["search_pos"])
        self._search_iter = None
        self.flips, self.decided = list(s["flips"]), list(s["decided"])
        if "zero_since" in s:  # checkpoints written before issue 19 lack it: counted from here
            for z, v in zip(self.zero_since, s["zero_since"]):
                z.copy_(v.to(z.device))
        self.history = [dict(r) for r in s["history"]]
        self._reset_window()

    # --- results ----------------------------------------------------------------------------
    def derived(self) -> Arch:
        """The target architecture: argmax alpha per decision (no noise)."""
        return tuple(int(np.argmax(_masked(a.detach().cpu().numpy().astype(np.float64), allowed)))
                     for a, allowed in zip(self.alphas, self.allowed))

    def stuck(self) -> dict:
        """Alphas at exactly 0 at the end (stuck: ReLU'(0) = 0), split into `none` and the other
        operators, with the alpha step each got stuck at (as a fraction of the search too)."""
        names = [(d, c) for d in self.space.decisions for c in d.choices]
        since = torch.cat([z.detach().cpu() for z in self.zero_since]).tolist()
        stuck = [(f"{d.name}/{c}", int(t)) for (d, c), t in zip(names, since) if t >= 0]
        ops = [(n, t) for n, t in stuck if not n.endswith("/none")]
        steps = np.array([t for _, t in ops], dtype=float)
        n_ops = sum(c != "none" for _, c in names)
        return {
            "n_alphas": len(names), "at_zero": len(stuck), "at_zero_fraction": len(stuck) / len(names),
            "ops_at_zero": len(ops), "ops": n_ops, "ops_at_zero_fraction": len(ops) / n_ops if n_ops else 0.0,
            "none_at_zero": len(stuck) - len(ops),
            "stuck_since_step": dict(stuck), "total_steps": self.total,
            "ops_stuck_since_fraction": ({"min": float(steps.min()) / self.total,
                                          "median": float(np.median(steps)) / self.total,
                                          "max": float(steps.max()) / self.total} if len(steps) else None),
        }

    def warn_stuck(self) -> None:
        """A report warning when operators other than `none` ended with alpha exactly 0."""
        st = self.stuck()
        if st["ops_at_zero"]:
            when = st["ops_stuck_since_fraction"]
            self.job.warn(f"STC-NAS: {st['ops_at_zero']} of {st['ops']} non-`none` operators ended with alpha "
                          f"exactly 0 (stuck: ReLU'(0) = 0; scored as `none`), stuck from {when['min']:.0%}-"
                          f"{when['max']:.0%} of the search (median {when['median']:.0%})",
                          stc_ops_at_zero=st["ops_at_zero"], stc_ops_at_zero_fraction=st["ops_at_zero_fraction"])

    def alpha_score(self, arch: Arch) -> float:
        return float(sum(F.relu(a.detach()[c]) for a, c in zip(self.alphas, arch)))

    def summary(self) -> dict:
        flips, decided = sum(self.flips), sum(self.decided)
        final = {d.name: dict(zip(d.choices, [round(v, 6) for v in a.detach().cpu().tolist()]))
                 for d, a in zip(self.space.decisions, self.alphas)}
        moved = float(torch.cat([(a.detach() - a0).abs().flatten() for a, a0 in zip(self.alphas, self.alpha_init)])
                      .mean())
        return {
            "derived": self.space.format(self.derived()),
            "alpha_final": final,
            "alpha_mean_abs_change": moved,
            "alpha_at_zero": int(sum(int((a.detach() <= 0).sum()) for a in self.alphas)),
            "alpha_at_one": int(sum(int((a.detach() >= 1).sum()) for a in self.alphas)),
            "flip_rate": flips / decided if decided else None,
            "flip_rate_by_quarter": [f / d if d else None for f, d in zip(self.flips, self.decided)],
            "alpha_lr": self.alpha_lr,
            "alpha_lr_rule": "config" if self.cfg.alpha_lr is not None else
            f"{PAPER_ALPHA_LR:g} * max(1, paper_steps/steps) (paper_steps/steps = "
            f"{self.alpha_lr / PAPER_ALPHA_LR:.3g})",
            "alpha_betas": list(self.cfg.alpha_betas),
            "alpha_init": f"{self.cfg.alpha_init} + U(-{self.cfg.alpha_init_noise}, {self.cfg.alpha_init_noise})",
            "noise": f"U(0, r), r linear {self.cfg.noise_start} -> 0 over {self.total} steps",
            "js_lambda": f"linear {self.cfg.js_lambda_start} -> {self.cfg.js_lambda_end}",
            "weights_sgd": {"lr": self.trainer.base_lr, "final_lr": self.cfg.w_final_lr,
                            **{k: g for k, g in self.trainer.optimizer.defaults.items()
                               if k in ("momentum", "weight_decay", "nesterov")},
                            "rule": "budget" if self.cfg.w_lr is None else "config"},
            "stc_alpha_stuck": self.stuck(),
            "score_scale": self.cfg.score_scale,
            "alpha_history": HISTORY_FILE,
        }


# --- scorers --------------------------------------------------------------------------------------
class StcSupernetScorer(SupernetScorer):
    """Supernet accuracy through the shared evaluator, optionally with the ReLU(alpha) scale."""

    def __init__(self, job, search: StcSearch, scale: bool):
        super().__init__(job, search.model, ctx_fn=search.eval_ctx if scale else None)
        self.search = search

    def picked(self) -> Arch:
        return self.search.derived()

    def extra(self) -> dict:
        return self.search.summary()


class StcAlphaScorer(Scorer):
    """Score = sum over decisions of ReLU(alpha) of the chosen operator."""

    def __init__(self, search: StcSearch):
        self.search = search

    def score(self, archs: Sequence[Arch]) -> np.ndarray:
        return np.asarray([self.search.alpha_score(a) for a in archs], dtype=float)

    def picked(self) -> Arch:
        return self.search.derived()

    def extra(self) -> dict:
        return self.search.summary()


@register_method("stcnas-paper", w_lr=0.025, w_final_lr=0.001, w_momentum=0.9, w_weight_decay=3e-4,
                 w_nesterov=False)
@register_method("stcnas-alpha", score_by="alpha")
@register_method("stcnas")
class StcNas(Method):
    Config = StcNasConfig

    def fit(self, job):
        cfg = self.config
        if cfg.score_by not in ("supernet", "alpha"):
            raise ConfigError(f"stcnas score_by={cfg.score_by!r}: use 'supernet' or 'alpha'")
        search = StcSearch(job, cfg)
        job.state["stcnas"] = {"alpha_lr": search.alpha_lr, "total_steps": search.total}
        # curve points come after the step's alpha update (the trainer's hooks run after after_step)
        job.set_curve_scorer(lambda: StcAlphaScorer(search) if cfg.score_by == "alpha"
                             else StcSupernetScorer(job, search, cfg.score_scale))
        search.run()
        search.warn_stuck()
        ctx_fn = search.eval_ctx if cfg.score_scale else None
        check_not_collapsed(search.model, job.data.score_x[:64],
                            [job.space.sample(job.rng("collapse")) for _ in range(4)] + [search.derived()],
                            ctx_fn=ctx_fn)
        if cfg.score_by == "alpha":
            return StcAlphaScorer(search)
        return StcSupernetScorer(job, search, cfg.score_scale)
