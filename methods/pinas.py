"""Pi-NAS: supernet-Pi model with cross-path consistency, nontrivial mean teacher and
linear-evaluation search (Peng et al., ICCV 2021; paper text in ``shared/papers/pi-nas.txt``).

Training is unsupervised (labels are never read). Per step, each image gets four augmented views
(random resized crop, colour jitter, random grayscale, Gaussian blur, horizontal flip). Two
different paths i != j are sampled; the student f embeds views 1 and 2 through paths i and j
(``z_i``, ``z_j``), the teacher f' embeds views 3 and 4 through paths i and j (``z'_i``, ``z'_j``);
a 2-layer MLP head on ``Supernet.features`` produces the embeddings. The loss is Eq. 4 with
negatives from a FIFO container of past teacher outputs, and the teacher is the EMA of the student
(Eq. 2). Search (Sec. 3.3) freezes the supernet (BN on batch statistics, as the paper's linear
evaluation), trains one weight-shared linear classifier on sampled paths and scores an architecture
by its accuracy with it, through the shared evaluator on the reserved `score` subset.

BN when scoring (Sec. 4.1: "to avoid the inaccurate batch statistics in BN, we pick out a further 50k
images from the rest of the training set to recalculate the statistics for each optional path"):
by default (``score_bn="recal"``) every path's BN statistics are re-estimated on ``recal_images``
(2,048) training images before it is scored - a seeded class-mixed draw, not a prefix (the CIFAR-10
JPEG source stores the split class by class) - and restored afterwards; scoring runs under
``torch.random.fork_rng`` and ``no_grad``, so a curve point mid-training changes no training state
(tested: the scored path's BN normalises with the re-estimated statistics, no other path's BN runs,
every buffer and the RNG are back afterwards). ``pinas-batch-bn`` keeps the budget's protocol (the
score batch's own statistics, the harness's default before issue 19). 2,048 images, not 50k: the
re-estimation forward is the scoring's main cost. Measured at `smoke` (study shapes, 3 epochs, seed
0, one trained model, 100 architectures, CPU seconds per architecture on one thread): batch 0.10,
re-estimation on 512 images 0.20, on 2,048 images 0.48; Kendall tau between the protocols' rankings
0.89 (batch vs 2,048) and 0.82 (512 vs 2,048); tau against NB201 -0.33 / -0.32 / -0.31 (the smoke
model is at chance: linear accuracy 0.14, so these taus say nothing about the protocols). 2,048 is the
harness's own re-estimation size at every CPU budget (``recal_batches`` x ``eval_batch_size``).

Documented deviations from the paper's text (each follows the authors' code, Ernie1/Pi-NAS, or is
forced by it):
- D(z, z') is the dot product of L2-normalised embeddings divided by a temperature t (MoCo
  practice, also in the authors' code); the paper writes a plain dot product, whose logits diverge.
- The container stores, per image, the mean of the two teacher embeddings (authors' code:
  ``_dequeue_and_enqueue((k_0 + k_1) / 2)``); it starts with random unit vectors (MoCo).
- Paths i and j differ at *every* decision where possible (authors' code samples two distinct
  candidates per layer); ``paths_differ_everywhere=False`` only requires i != j.
- Eq. 2 is applied to all teacher parameters after every student step (the paper's formula); the
  authors' code updates only the sampled paths' blocks (``_momentum_update_key_encoder(choice_indices)``
  over ``ema_blocks(choice_indices)`` and the projection head): variant ``pinas-sampled-ema``
  (``ema_sampled_only``) skips the parameters of candidate operators on neither path i nor j; the
  stem, fixed layers and heads are on every path and always follow. Teacher BN buffers are its own.
- The EMA coefficient is 0.999 at the `paper` budget and smaller for short budgets (0.99 at
  `smoke`/`small`: a 1000-step time constant would exceed the whole run); recorded in the manifest.
- `pinas-no-neg`: with no negatives Eq. 4's softmax has one logit and is identically 0 (no
  gradient), so the ablation optimises the consistency cost alone, Eq. 1 with the same D.
- MoCo's shuffle BN (keys computed on a batch shuffled across GPUs, so a query and its positive key
  are not normalised with the same images' statistics) is emulated on one device as an option:
  ``shuffle_bn_groups=g`` (variant ``pinas-shuffle-bn``, g = 4) forwards the student in g sub-batches
  in data order and the teacher in g sub-batches of a seeded permutation. The default is off (one BN
  batch of the whole batch per forward), because its absence did not open the shortcut where
  measured: at `smoke` (seed 0, 3 epochs) the pretext accuracy over the last 10 % of the steps was
  0.050 without and 0.064 with shuffle BN (g = 4), linear accuracy 0.139 and 0.133 - a shortcut shows
  as a pretext accuracy near 1 with a lagging linear accuracy - while the 4 sub-batches cost 45 % more
  CPU time per job (240 s against 165 s). The student and teacher here see different views through
  different weights in BN batches of the whole batch (128 at `study`; MoCo met the leak with BN
  batches of 32 per GPU). That smoke model is barely trained, so the check is weak: the recorded
  ``pretext_top1_last10pct`` (share of queries whose positive beats every negative, last 10 % of the
  steps) is the symptom to watch at the study budget: the job warns (report, ``extra["warnings"]``)
  when it reaches ``shortcut_pretext_top1`` (0.9), and when the linear evaluation's training
  accuracy stays under ``chance_factor`` (1.5) x chance, i.e. the scores rank nothing.
- The collapse check embeds 128 search images drawn by a seeded stream (a prefix was one class).
- The in-step collapse check (every ``collapse_check_every`` steps, on the step's own student
  embeddings) reads a path whose output depends on the input (``space.computes_from_input``):
  a NB201 cell with no non-zero route gives one embedding for every image whatever the
  weights, so reading it called the study's seed-0 job collapsed at step 5,250 (found at
  `study`: ~2 % of paths, ~390 checks). When both paths of a step are such cells the check is
  skipped and counted (``collapse_checks_skipped``).
- Colour jitter applies brightness, contrast, saturation, hue in a fixed order (torchvision
  randomises it); hue is a rotation in YIQ space. Blur sigma and kernel scale with resolution/224.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.core.errors import ConfigError
from harness.data.tensors import CIFAR10_MEAN, CIFAR10_STD
from harness.engine.evaluator import (SupernetEvaluator, SupernetScorer, batch_stat_bn, check_not_collapsed,
                                     score_workers)
from harness.core.seeding import torch_generator
from harness.spaces.base import Arch, SearchSpace
from harness.engine.job import TrainingHooks
from harness.engine.trainer import SupernetTrainer
from harness.engine.method import Collapsed, JobFailed, Method, MethodConfig, register_method

# EMA coefficient lambda of Eq. 2 by budget: the paper's 0.999 where runs are long; short runs use a
# 100-step time constant so the teacher follows the student within the run. `study` trains as many
# steps as `paper` (~19.5k: 100 epochs at batch 128 vs 50 at batch 64), so it takes the paper's rate.
EMA_BY_BUDGET = {"paper": 0.999, "study": 0.999, "small": 0.99, "smoke": 0.99}


@dataclass(frozen=True)
class PinasConfig(MethodConfig):
    # ablations (paper Table 7)
    cross_path: bool = True  # False: i = j ("w/o CP")
    mean_teacher: bool = True  # False: teacher = copy of the student every step ("S-Pi model")
    negatives: bool = True  # False: no feature container ("w/o nontrivial"); the paper reports collapse
    share_downsample: bool = True  # False: build the supernet without downsample sharing ("w/o DS")
    paths_differ_everywhere: bool = True
    # MoCo's shuffle BN on one device: student and teacher forward in this many sub-batches (each its
    # own BN statistics), the teacher's on a shuffled order; 1 = off (one BN batch per forward)
    shuffle_bn_groups: int = 1
    # loss / teacher
    temperature: float = 0.2
    queue_len: int = 4096
    ema: float | None = None  # None: EMA_BY_BUDGET (0.99 for unknown budgets)
    ema_sampled_only: bool = False  # True: Eq. 2 on the sampled paths' blocks only (authors' code)
    proj_hidden: int = 0  # 0: the feature width (authors' code: 2048 -> 2048 -> 128)
    proj_dim: int = 128
    # optimiser of the unsupervised phase (paper: SGD lr 0.03, momentum 0.9, wd 1e-4, cosine)
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # four-view augmentation (authors' config: MoCo v2 pipeline)
    crop_scale: tuple[float, float] = (0.2, 1.0)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.4)  # brightness, contrast, saturation, hue
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # at blur_ref_size pixels
    blur_ref_size: int = 224
    # linear-evaluation search (paper: SGD lr 30, momentum 0.9, wd 0, x0.1 at 60% and 80%)
    linear_lr: float = 30.0
    linear_momentum: float = 0.9
    linear_weight_decay: float = 0.0
    linear_epochs_ratio: float = 1.0  # linear epochs = ratio x budget epochs (paper: 100 and 100)
    linear_milestones: tuple[float, float] = (0.6, 0.8)
    # fidelity-curve points before the end run a linear evaluation this share of the full one's
    # steps (same schedule shape): the full one at every point would add ~12 % of the job per point
    curve_linear_share: float = 0.1
    linear_crop_scale: tuple[float, float] = (0.08, 1.0)
    # architecture scoring (Sec. 4.1): BN statistics re-estimated per path on training images
    # ("recal", the paper) or the score batch's own statistics ("batch", the budget's protocol)
    score_bn: str = "recal"
    recal_images: int = 2048  # training images (a seeded class-mixed draw) per path's re-estimation
    # collapse detection on raw (pre-normalisation) student embeddings: absolute variance across the
    # batch, and variance relative to their mean square (a constant non-zero embedding is a collapse
    # too; normalisation hides its scale). Under 1% means the per-image part is noise around one
    # vector (mean pairwise cosine > ~0.99). Measured on tiny runs: full Pi-NAS stays at 0.04-0.36,
    # `pinas-no-neg` falls to ~1e-3. Final verdict at the end; training stops early below 1/10 of it.
    collapse_threshold: float = 1e-8
    collapse_rel_threshold: float = 1e-2
    collapse_check_every: int = 50
    # warnings (the run's numbers do not move): a pretext accuracy at or above this over the last
    # 10 % of the steps is the symptom of MoCo's BN shortcut (the contrastive task solved through
    # batch statistics); a linear training accuracy under chance_factor / num_classes means the
    # features carry no class information, so the scores rank nothing
    shortcut_pretext_top1: float = 0.9
    chance_factor: float = 1.5


# --- four-view augmentation on tensors ---------------------------------------------------
@dataclass(frozen=True)
class ViewAugment:
    """Augmentation parameters; ``augment_views`` applies them vectorised over the batch."""

    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.4)
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_ref_size: int = 224
    mean: tuple[float, float, float] = CIFAR10_MEAN
    std: tuple[float, float, float] = CIFAR10_STD


_LUMA = (0.299, 0.587, 0.114)
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (x * x.new_tensor(_LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)


def random_resized_crop(x: torch.Tensor, g: torch.Generator, scale, ratio, flip_p: float) -> torch.Tensor:
    """Per-image crop of area fraction ~U(scale), log aspect ratio ~U(log ratio), resized back to the
    input size (bilinear), mirrored with probability ``flip_p``; one affine grid for the batch."""
    n, c, h, w = x.shape
    area = torch.empty(n).uniform_(scale[0], scale[1], generator=g)
    aspect = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=g).exp()
    cw = (area * aspect).sqrt().clamp(max=1.0)  # crop width / image width
    ch = (area / aspect).sqrt().clamp(max=1.0)
    centre = torch.rand(2, n, generator=g) * 2 - 1
    flip = torch.rand(n, generator=g) < flip_p
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.where(flip, -cw, cw)
    theta[:, 0, 2] = centre[0] * (1 - cw)
    theta[:, 1, 1] = ch
    theta[:, 1, 2] = centre[1] * (1 - ch)
    grid = F.affine_grid(theta.to(x), [n, c, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def color_jitter(x: torch.Tensor, g: torch.Generator, strength, p: float) -> torch.Tensor:
    """Brightness, contrast, saturation, hue (fixed order) on [0, 1] images, applied with prob. p."""
    n = x.shape[0]
    on = torch.rand(n, generator=g) < p
    b, c, s, hue = strength

    def factor(m):
        f = torch.empty(n).uniform_(max(0.0, 1 - m), 1 + m, generator=g)
        return torch.where(on, f, torch.ones(n)).view(n, 1, 1, 1).to(x)

    fb, fc, fs = factor(b), factor(c), factor(s)
    angle = torch.where(on, torch.empty(n).uniform_(-hue, hue, generator=g), torch.zeros(n)) * 2 * math.pi
    x = (x * fb).clamp(0, 1)
    m = _gray(x).mean((1, 2, 3), keepdim=True)
    x = ((x - m) * fc + m).clamp(0, 1)
    gray = _gray(x)
    x = ((x - gray) * fs + gray).clamp(0, 1)
    # hue: rotate the chroma plane (I, Q) of YIQ by the angle; one 3x3 matrix per image
    rot = torch.zeros(n, 3, 3)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = angle.cos(), -angle.sin()
    rot[:, 2, 1], rot[:, 2, 2] = angle.sin(), angle.cos()
    mats = (_YIQ2RGB @ rot @ _RGB2YIQ).to(x)
    return torch.einsum("nij,njhw->nihw", mats, x).clamp(0, 1)


def random_grayscale(x: torch.Tensor, g: torch.Generator, p: float) -> torch.Tensor:
    on = (torch.rand(x.shape[0], generator=g) < p).view(-1, 1, 1, 1).to(x.device)
    return torch.where(on, _gray(x).expand_as(x), x)


def gaussian_blur(x: torch.Tensor, g: torch.Generator, sigma_range, p: float, ref_size: int) -> torch.Tensor:
    """Separable Gaussian blur, sigma ~U(range) x (size / ref_size), kernel ~10% of the size (odd, >= 3)."""
    n, c, h, w = x.shape
    on = torch.rand(n, generator=g) < p
    sigma = torch.empty(n).uniform_(sigma_range[0], sigma_range[1], generator=g) * (h / ref_size)
    k = max(3, int(round(0.1 * h)) | 1)
    r = min(k // 2, h - 1, w - 1)
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    ker = torch.exp(-(t.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
    ker = ker / ker.sum(1, keepdim=True)
    delta = (t == 0).float().expand_as(ker)
    ker = torch.where(on.view(-1, 1), ker, delta).repeat_interleave(c, 0).to(x)  # (n*c, 2r+1)
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), ker.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), ker.view(n * c, 1, -1, 1), groups=n * c)
    return y.view(n, c, h, w)


def augment_views(x: torch.Tensor, n_views: int, g: torch.Generator, aug: ViewAugment) -> list[torch.Tensor]:
    """``n_views`` independently augmented copies of a normalised batch, all computed in one pass.

    Crop/flip act on the normalised images; colour ops work on [0, 1] pixels (de-normalised with
    ``aug.mean/std``) and the result is normalised again. All draws come from ``g`` (CPU).
    """
    n = x.shape[0]
    mean = x.new_tensor(aug.mean).view(1, 3, 1, 1)
    std = x.new_tensor(aug.std).view(1, 3, 1, 1)
    v = random_resized_crop(x.repeat(n_views, 1, 1, 1), g, aug.crop_scale, aug.crop_ratio, aug.flip_p)
    if aug.jitter_p > 0 or aug.gray_p > 0 or aug.blur_p > 0:
        v = (v * std + mean).clamp(0, 1)
        if aug.jitter_p > 0:
            v = color_jitter(v, g, aug.jitter, aug.jitter_p)
        if aug.gray_p > 0:
            v = random_grayscale(v, g, aug.gray_p)
        if aug.blur_p > 0:
            v = gaussian_blur(v, g, aug.blur_sigma, aug.blur_p, aug.blur_ref_size)
        v = (v - mean) / std
    return list(v.split(n))


# --- mechanism pieces --------------------------------------------------------------------
class FeatureQueue:
    """FIFO container of past teacher embeddings (the negatives of Eq. 4), fixed length."""

    def __init__(self, length: int, dim: int, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu"):
        if length < 1:
            raise ValueError(f"queue length must be >= 1, got {length}")
        self.length, self.dim = int(length), int(dim)
        # MoCo starts from random unit vectors, so the first steps already have negatives
        self.buffer = F.normalize(torch.randn(self.length, self.dim, generator=generator), dim=1).to(device)
        self.ptr = 0  # next slot to overwrite (= the oldest entry once full)
        self.count = 0  # real entries enqueued so far (capped at length)

    def enqueue(self, keys: torch.Tensor) -> None:
        keys = keys.detach()[-self.length:]  # more keys than slots: only the newest survive
        n = keys.shape[0]
        idx = (self.ptr + torch.arange(n)) % self.length
        self.buffer[idx.to(self.buffer.device)] = keys.to(self.buffer)
        self.ptr = (self.ptr + n) % self.length
        self.count = min(self.length, self.count + n)

    def items(self) -> torch.Tensor:
        """Real (enqueued) entries, oldest first."""
        order = (self.ptr - self.count + torch.arange(self.count)) % self.length
        return self.buffer[order.to(self.buffer.device)]

    def state_dict(self) -> dict:
        return {"buffer": self.buffer.cpu(), "ptr": self.ptr, "count": self.count}

    def load_state_dict(self, s: dict) -> None:
        self.buffer = s["buffer"].to(self.buffer.device)
        self.ptr, self.count = int(s["ptr"]), int(s["count"])


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, lam: float, skip: frozenset[int] = frozenset()) -> None:
    """Eq. 2: W'_t = lambda W'_{t-1} + (1 - lambda) W_t, for every parameter (lambda = 0: a copy)
    except those whose position in ``parameters()`` is in ``skip`` (sampled-blocks-only EMA)."""
    for i, (pt, ps) in enumerate(zip(teacher.parameters(), student.parameters(), strict=True)):
        if i in skip:
            continue
        if lam == 0.0:
            pt.copy_(ps)
        else:
            pt.mul_(lam).add_(ps.detach(), alpha=1.0 - lam)


def pinas_loss(z_i: torch.Tensor, z_j: torch.Tensor, zt_i: torch.Tensor, zt_j: torch.Tensor,
               negatives: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """Eq. 4 (batch mean) with D(z, z') = <z/|z|, z'/|z'|> / t; the student embeds ``z_i``/``z_j``,
    the teacher ``zt_i``/``zt_j`` (no gradient). ``negatives=None``: Eq. 1, -E[D(z_i,z'_j) + D(z_j,z'_i)].
    """
    q_i, q_j = F.normalize(z_i, dim=1), F.normalize(z_j, dim=1)
    k_i, k_j = F.normalize(zt_i.detach(), dim=1), F.normalize(zt_j.detach(), dim=1)

    def term(q, k):
        pos = (q * k).sum(1, keepdim=True) / temperature
        if negatives is None:
            return -pos.mean()
        logits = torch.cat([pos, q @ negatives.detach().t() / temperature], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))

    return term(q_i, k_j) + term(q_j, k_i)


def sample_paths(space: SearchSpace, rng: np.random.Generator, cross_path: bool = True,
                 differ_everywhere: bool = True, tries: int = 100) -> tuple[Arch, Arch]:
    """Paths (i, j): i uniform; j != i (at every decision with >1 choice when ``differ_everywhere``,
    each other choice equally likely); j = i without cross-path learning."""
    a = space.sample(rng)
    if not cross_path:
        return a, a
    for _ in range(tries):
        if differ_everywhere:
            sizes = [len(d.choices) for d in space.decisions]
            b = tuple(int((ai + rng.integers(1, n)) % n) if n > 1 else ai for ai, n in zip(a, sizes))
        else:
            b = space.sample(rng)
        if b != a and space.is_allowed(b):
            return a, b
    if differ_everywhere:  # constrained space: fall back to any different path
        return sample_paths(space, rng, True, False, tries)
    raise JobFailed(f"could not sample two different paths in space '{space.name}' (size {space.size})")


def grouped_forward(net: nn.Module, x: torch.Tensor, arch: Arch, groups: int,
                    perm: torch.Tensor | None = None) -> torch.Tensor:
    """``net(x, arch)`` with BN statistics per sub-batch: ``x`` (reordered by ``perm`` first, when
    given) is split into ``groups`` chunks, each forwarded alone, and the outputs are put back in
    ``x``'s order. This is MoCo's shuffle BN on one device: ``groups`` plays the GPUs, the student
    runs its chunks in data order and the teacher on a shuffled order, so a query and its positive
    key are normalised with statistics of different images. ``groups=1``, no ``perm``: ``net(x, arch)``."""
    if groups <= 1 and perm is None:
        return net(x, arch)
    xs = x[perm] if perm is not None else x
    out = torch.cat([net(chunk, arch) for chunk in xs.chunk(groups)])
    if perm is None:
        return out
    back = torch.empty_like(out)
    back[perm] = out
    return back


def positive_top1(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor) -> float:
    """Pretext accuracy of Eq. 4: share of queries whose positive key beats every negative. A BN
    shortcut (information leaking through batch statistics) shows as a near-perfect value."""
    q, k = F.normalize(q.float(), dim=1), F.normalize(k.float(), dim=1)
    pos = (q * k).sum(1)
    return float((pos > (q @ negatives.float().t()).max(1).values).float().mean())


def train_images(job, n: int, purpose: str) -> torch.Tensor:
    """``n`` training-split images drawn without replacement by a seeded stream (not a prefix: a
    data source may store the split class by class), in index order."""
    total = len(job.data.train_x)
    if n >= total:
        return job.data.train_x
    idx = np.sort(job.rng(purpose).choice(total, size=n, replace=False))
    return job.data.train_x[torch.as_tensor(idx, dtype=torch.long, device=job.data.train_x.device)]


def collapse_images(job, n: int = 128) -> torch.Tensor:
    """``n`` search-split images (a seeded draw, class-mixed) for the collapse check."""
    total = len(job.data.search_x)
    idx = np.sort(job.rng("pinas-collapse-images").choice(total, size=min(n, total), replace=False))
    return job.data.search_x[torch.as_tensor(idx, dtype=torch.long, device=job.data.search_x.device)]


def relative_variance(z: torch.Tensor) -> torch.Tensor:
    """Variance across the batch over mean square: 0 for constant outputs, NaN for all-zero ones."""
    z = z.float()
    return z.var(dim=0).mean() / z.pow(2).mean()


class ProjectionHead(nn.Sequential):
    """The 2-layer MLP supernet head of the unsupervised phase (Linear-ReLU-Linear)."""

    def __init__(self, c_in: int, hidden: int, out: int):
        super().__init__(nn.Linear(c_in, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))


class PiNet(nn.Module):
    """Supernet + projection head; the student and (a deep copy) the teacher."""

    def __init__(self, net: nn.Module, proj: nn.Module):
        super().__init__()
        self.net, self.proj = net, proj

    def forward(self, x, arch, ctx=None):
        return self.proj(self.net.features(x, arch, ctx))


def feature_width(model: nn.Module, job) -> int:
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return head.in_features
    arch = tuple(0 for _ in job.space.decisions)
    with torch.no_grad(), batch_stat_bn(model):
        return int(model.features(job.data.train_x[:2], arch).shape[1])


def step_decay(base: float, step: int, total: int, milestones: Sequence[float], gamma: float = 0.1) -> float:
    return base * gamma ** sum(step >= int(round(m * total)) for m in milestones)


LINEAR = "pinas-linear"  # the linear evaluation's trainer: checkpoint file pinas-linear-ckpt.pt in the job folder


def linear_evaluation(job, model: nn.Module, cfg: PinasConfig, rng: np.random.Generator,
                      share: float = 1.0, checkpoints: bool = True) -> tuple[nn.Linear, dict]:
    """Sec. 3.3: train one weight-shared linear classifier on frozen supernet features of sampled paths.

    The supernet is never updated: features are computed without gradients, BN normalises with
    the batch's statistics and its running buffers are left untouched (``batch_stat_bn``).
    Labels are used here (this is the search), never in the unsupervised phase. ``share`` < 1
    shortens it (fidelity-curve points before the end), keeping the step-decay milestones' shape.

    It runs on the shared trainer (autocast with ``--precision bf16``, the finite-loss check,
    checkpoints in ``pinas-linear-ckpt.pt`` with resume) with the paper's protocol: SGD with
    step-wise decay at ``linear_milestones``, no gradient clipping, unaugmented batches in the
    run's data order with their own random-resized-crop views. Its steps are not supernet training:
    ``job.counters.steps``/``images_seen`` stay as they are (its frozen forward passes count as
    path passes). ``checkpoints=False`` (fidelity-curve points: scored again on resume) neither
    resumes nor writes checkpoints.
    """
    width = feature_width(model, job)
    job.seed_torch("pinas-linear-init")
    classifier = nn.Linear(width, job.data.num_classes).to(job.device)
    len_epoch = job.train_stream(augment=False).len_epoch
    total = max(1, int(round(share * cfg.linear_epochs_ratio * job.budget.epochs * len_epoch)))
    trainer = SupernetTrainer(
        job, classifier, lr=cfg.linear_lr, momentum=cfg.linear_momentum, weight_decay=cfg.linear_weight_decay,
        nesterov=False, grad_clip=None, steps=total, augment=False, name=LINEAR,
        lr_schedule=lambda step, n: step_decay(cfg.linear_lr, step, n, cfg.linear_milestones),
        backward=True, hooks=TrainingHooks(), checkpoints=checkpoints, counts_toward_budget=False)
    aug = ViewAugment(crop_scale=cfg.linear_crop_scale, jitter_p=0.0, gray_p=0.0, blur_p=0.0, mean=job.data.mean,
                      std=job.data.std)
    last = total - max(1, total // 10)  # training accuracy over the last 10% of the steps
    tally = {"correct": 0, "seen": 0}

    def step(x, y, i):
        (xv,) = augment_views(x, 1, torch_generator("job", job.seed, "pinas-linear-views", i), aug)
        arch = job.space.sample(rng)
        with torch.no_grad():
            feats = model.features(xv, arch)
        job.counters.add_path(len(x), forward=1, backward=0)
        logits = classifier(feats).float()
        if i >= last:
            tally["correct"] += int((logits.argmax(1) == y).sum())
            tally["seen"] += len(y)
        return F.cross_entropy(logits, y)

    def get_state() -> dict:
        return {"path_rng": rng.bit_generator.state, "tally": dict(tally)}

    def set_state(s: dict) -> None:
        rng.bit_generator.state = s["path_rng"]
        tally.update(s["tally"])

    was_training = model.training
    model.eval()
    try:
        with batch_stat_bn(model):
            trainer.run(step, get_state=get_state, set_state=set_state)
    finally:
        model.train(was_training)
    if not all(torch.isfinite(p).all() for p in classifier.parameters()):
        raise JobFailed(f"linear evaluation diverged (non-finite classifier weights, lr {cfg.linear_lr})", total)
    return classifier.eval(), {"linear_steps": total,
                               "linear_train_acc_last10pct": tally["correct"] / max(tally["seen"], 1)}


def uninformative_warnings(info: dict, num_classes: int, cfg: PinasConfig) -> list[tuple[str, dict]]:
    """(message, values) for each sign that a finished Pi-NAS run's scores say nothing: the pretext
    task solved through a shortcut, or a linear evaluation at chance. Pure, for ``Job.warn``."""
    out = []
    pretext, linear = info.get("pretext_top1_last10pct"), info.get("linear_train_acc_last10pct")
    chance = 1.0 / num_classes
    if pretext is not None and pretext >= cfg.shortcut_pretext_top1:
        lin = f"{linear:.3f}" if linear is not None else "not measured"
        out.append((f"Pi-NAS pretext accuracy {pretext:.3f} over the last 10 % of the steps (>= "
                    f"{cfg.shortcut_pretext_top1:g}) with linear training accuracy {lin}: the contrastive task "
                    f"may be solved through a BN shortcut; compare with pinas-shuffle-bn",
                    {"pinas_pretext_top1": pretext}))
    if linear is not None and linear < cfg.chance_factor * chance:
        out.append((f"Pi-NAS linear evaluation near chance: training accuracy {linear:.3f} over its last 10 % "
                    f"of steps against 1/{num_classes} = {chance:.3f}: the features carry little class "
                    f"information, so its ranking says little", {"pinas_linear_acc": linear}))
    return out


class PinasScorer(SupernetScorer):
    """The shared evaluator on the `score` subset, scoring through the linear classifier, with the
    BN protocol of ``score_bn``: ``recal`` re-estimates every path's BN statistics on
    ``recal_images`` training images before scoring it (Sec. 4.1) and restores the buffers after
    it; ``batch`` uses the score batch's statistics. Scoring runs under ``torch.random.fork_rng``
    and ``no_grad``, so a curve point mid-training leaves the training state as it was. Keeps the
    trained parts for tests."""

    def __init__(self, job, student: PiNet, teacher: PiNet, queue: FeatureQueue, classifier: nn.Linear, info: dict,
                 cfg: PinasConfig | None = None):
        cfg = cfg or PinasConfig()
        fwd = lambda m, xb, arch, ctx: classifier(m.features(xb, arch, ctx))  # noqa: E731
        super().__init__(job, student.net, forward_fn=fwd)
        b = job.budget
        if cfg.score_bn == "recal":
            if any(bn.running_mean is None for bn in student.net.modules()
                   if isinstance(bn, nn.modules.batchnorm._BatchNorm)):
                raise JobFailed("pinas score_bn='recal' needs BN layers with running statistics (bn_track=True); "
                                "use score_bn='batch' on this space")
            recal = train_images(job, cfg.recal_images, "pinas-recal-images")
            self.evaluator = SupernetEvaluator(
                student.net, job.data.score_x, job.data.score_y, bn_mode="recal", recal_x=recal,
                recal_batches=math.ceil(len(recal) / b.eval_batch_size), batch_size=b.eval_batch_size,
                progress=job.progress, forward_fn=fwd, autocast=getattr(job, "autocast", None), workers=score_workers(job))
        self.device = job.device
        self.student, self.teacher, self.queue, self.classifier, self.info = student, teacher, queue, classifier, info

    def score(self, archs: Sequence[Arch]) -> np.ndarray:
        devices = [self.device] if torch.device(self.device).type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            return super().score(archs)

    def extra(self) -> dict:
        return dict(self.info)


@register_method("pinas")
@register_method("pinas-no-cp", cross_path=False)
@register_method("pinas-no-mt", mean_teacher=False)
@register_method("pinas-no-neg", negatives=False)
@register_method("pinas-no-ds", share_downsample=False)
@register_method("pinas-sampled-ema", ema_sampled_only=True)
@register_method("pinas-shuffle-bn", shuffle_bn_groups=4)
@register_method("pinas-batch-bn", score_bn="batch")
class Pinas(Method):
    Config = PinasConfig

    def ema_lambda(self, job) -> float:
        if not self.config.mean_teacher:
            return 0.0
        if self.config.ema is not None:
            return float(self.config.ema)
        return EMA_BY_BUDGET.get(job.budget.name, 0.99)

    def build_student(self, job) -> PiNet:
        """The student; ``student.ops`` maps (decision, choice) to its candidate operator modules."""
        cfg = self.config
        ops: dict[tuple[int, int], list[nn.Module]] = {}

        def factory(spec):  # the space's own operators (same modules, same init order), recorded
            op = job.space.default_op(spec)
            ops.setdefault((spec.decision, spec.choice), []).append(op)
            return op

        if cfg.share_downsample:
            net = job.build_supernet(op_factory=factory)
        else:
            if not getattr(job.space, "supports_downsample_sharing", False) or not hasattr(job.net_cfg, "share_downsample"):
                raise JobFailed(f"{self.name}: space '{job.space.name}' has no downsample-sharing option to turn "
                                "off; run this ablation on a space that has one (e.g. the ResNet probe suite)")
            net = job.build_supernet(op_factory=factory, share_downsample=False)
        width = feature_width(net, job)
        job.seed_torch("pinas-proj-init")
        proj = ProjectionHead(width, cfg.proj_hidden or width, cfg.proj_dim).to(job.device)
        student = PiNet(net, proj)
        student.ops = ops
        return student

    @staticmethod
    def unsampled_params(student: PiNet, paths: Sequence[Arch]) -> frozenset[int]:
        """Positions in ``student.parameters()`` of candidate operators on none of ``paths``: what the
        sampled-blocks-only EMA leaves alone (stem, fixed layers and heads are on every path)."""
        index = {id(p): i for i, p in enumerate(student.parameters())}
        used = {(d, c) for arch in paths for d, c in enumerate(arch)}
        on = {id(p) for key in used for m in student.ops.get(key, []) for p in m.parameters()}
        return frozenset(index[id(p)] for key, mods in student.ops.items() if key not in used
                         for m in mods for p in m.parameters() if id(p) not in on)

    def check_collapse(self, student: PiNet, job, archs: Sequence[Arch]) -> dict:
        """Raw-embedding variance (absolute, then relative to the mean square); raises Collapsed."""
        x = collapse_images(job)
        fwd = lambda m, xb, arch, ctx: m(xb, arch, ctx)  # noqa: E731
        raw = check_not_collapsed(student, x, archs, forward_fn=fwd, threshold=self.config.collapse_threshold)
        # scale-free: z / rms(z) has variance = relative_variance(z); all-zero z gives 0 -> collapsed
        scaled = lambda m, xb, arch, ctx: (lambda z: z / z.pow(2).mean().sqrt().clamp_min(1e-30))(m(xb, arch, ctx))  # noqa: E731
        rel = check_not_collapsed(student, x, archs, forward_fn=scaled, threshold=self.config.collapse_rel_threshold)
        return {"embed_var_min": raw, "embed_rel_var_min": rel}

    def fit(self, job):
        cfg = self.config
        if cfg.score_bn not in ("recal", "batch"):
            raise ConfigError(f"pinas score_bn='{cfg.score_bn}': use 'recal' (the paper) or 'batch'")
        if cfg.recal_images < 1 or cfg.shuffle_bn_groups < 1:
            raise ConfigError(f"pinas recal_images={cfg.recal_images}, shuffle_bn_groups={cfg.shuffle_bn_groups}: "
                              "both must be >= 1")
        space = job.space
        lam = self.ema_lambda(job)
        student = self.build_student(job)
        model = student.net
        teacher = copy.deepcopy(student)
        for p in teacher.parameters():
            p.requires_grad_(False)
        queue = FeatureQueue(cfg.queue_len, cfg.proj_dim, torch_generator("job", job.seed, "pinas-queue-init"),
                             job.device)
        rng = job.rng("path")
        aug = ViewAugment(crop_scale=cfg.crop_scale, jitter=cfg.jitter, jitter_p=cfg.jitter_p, gray_p=cfg.gray_p,
                          blur_p=cfg.blur_p, blur_sigma=cfg.blur_sigma, blur_ref_size=cfg.blur_ref_size,
                          mean=job.data.mean, std=job.data.std)
        info = {"ema_lambda": lam, "queue_len": cfg.queue_len, "temperature": cfg.temperature, "lr": cfg.lr,
                "weight_decay": cfg.weight_decay, "linear_lr": cfg.linear_lr, "score_bn": cfg.score_bn,
                "recal_images": cfg.recal_images if cfg.score_bn == "recal" else 0,
                "shuffle_bn_groups": cfg.shuffle_bn_groups, "ema_sampled_only": cfg.ema_sampled_only}
        job.state["pinas"] = info
        counts = {"equal_path_steps": 0, "pretext_correct": 0.0, "pretext_seen": 0, "collapse_checks_skipped": 0}
        groups = max(1, int(cfg.shuffle_bn_groups))
        paths: dict[str, tuple[Arch, Arch]] = {}
        # the linear classifier of the supernet (`net.head`) is not trained in the unsupervised phase
        params = [p for n, p in student.named_parameters() if not n.startswith("net.head.")]
        trainer = SupernetTrainer(job, model, params=params, lr=cfg.lr, momentum=cfg.momentum,
                                  weight_decay=cfg.weight_decay, nesterov=False)
        # same data order as every method, but the views replace the standard crop/flip
        trainer.stream = job.train_stream(augment=False)

        def step(x, y, step):
            del y  # unsupervised: labels are never read (tests shuffle them)
            views = augment_views(x, 4, torch_generator("job", job.seed, "pinas-views", step), aug)
            arch_i, arch_j = sample_paths(space, rng, cfg.cross_path, cfg.paths_differ_everywhere)
            paths["last"] = (arch_i, arch_j)
            counts["equal_path_steps"] += arch_i == arch_j
            z_i, z_j = grouped_forward(student, views[0], arch_i, groups), grouped_forward(student, views[1], arch_j, groups)
            with torch.no_grad():
                teacher.train()
                perm = (torch.randperm(len(x), generator=torch_generator("job", job.seed, "pinas-shuffle-bn", step))
                        .to(x.device) if groups > 1 else None)
                zt_i = grouped_forward(teacher, views[2], arch_i, groups, perm)
                zt_j = grouped_forward(teacher, views[3], arch_j, groups, perm)
                if cfg.negatives and step >= pretext_from:
                    counts["pretext_correct"] += len(x) * positive_top1(z_i, zt_j, queue.buffer)
                    counts["pretext_seen"] += len(x)
            loss = pinas_loss(z_i, z_j, zt_i, zt_j, queue.buffer if cfg.negatives else None, cfg.temperature)
            loss.backward()
            job.counters.add_path(len(x), forward=2, backward=2)  # student: paths i and j
            job.counters.add_path(len(x), forward=2, backward=0)  # teacher: paths i and j, no gradient
            if cfg.negatives:
                queue.enqueue((F.normalize(zt_i, dim=1) + F.normalize(zt_j, dim=1)) / 2)
            if cfg.collapse_check_every and (step + 1) % cfg.collapse_check_every == 0:
                # read a path whose output depends on its input: a cell with no non-zero route
                # (about 2 % of NB201) gives the same embedding for every image at any training
                # state, which is no collapse of the method (at `study` one of ~390 checks would hit one)
                z = next((z for z, a in ((z_i, arch_i), (z_j, arch_j)) if space.computes_from_input(a)), None)
                if z is None:
                    counts["collapse_checks_skipped"] += 1
                else:
                    rel = float(relative_variance(z.detach()))
                    if not rel >= cfg.collapse_rel_threshold / 10:  # NaN (all-zero) included
                        raise Collapsed(f"student embeddings are constant across the batch at step {step + 1} "
                                        f"(relative variance {rel:.3g} < {cfg.collapse_rel_threshold / 10:g})",
                                        step + 1)
            return loss

        def get_state() -> dict:
            return {"path_rng": rng.bit_generator.state, "proj": student.proj.state_dict(),
                    "teacher": teacher.state_dict(), "queue": queue.state_dict(), "counts": dict(counts)}

        def set_state(s: dict) -> None:
            rng.bit_generator.state = s["path_rng"]
            student.proj.load_state_dict(s["proj"])
            teacher.load_state_dict(s["teacher"])
            queue.load_state_dict(s["queue"])
            counts.update(s["counts"])

        check_archs = [space.sample(job.rng("collapse")) for _ in range(4)]
        pretext_from = trainer.total_steps - max(1, trainer.total_steps // 10)  # pretext accuracy: last 10 %

        def after_step(_s) -> None:
            skip = self.unsampled_params(student, paths["last"]) if cfg.ema_sampled_only else frozenset()
            ema_update(teacher, student, lam, skip)

        def curve_scorer() -> PinasScorer:
            with torch.enable_grad():  # the curve scores under no_grad; the linear head itself trains
                classifier, _ = linear_evaluation(job, model, cfg, job.rng("pinas-linear-path"),
                                                  cfg.curve_linear_share, checkpoints=False)
            return PinasScorer(job, student, teacher, queue, classifier, info, cfg)

        job.set_curve_scorer(curve_scorer, note=f"pinas: linear evaluation shortened to {cfg.curve_linear_share:g} "
                                                f"of its steps at points before 100 %")
        try:
            trainer.run(step, get_state=get_state, set_state=set_state, after_step=after_step)
        except Collapsed:
            raise
        except JobFailed:
            # collapse before NaN handling: all-zero embeddings are `collapsed`, not `failed`
            self.check_collapse(student, job, check_archs)
            raise
        if job.budget.checkpoint_every:
            trainer.save(get_state())  # training done: a job stopped in its linear evaluation resumes there
        info.update(self.check_collapse(student, job, check_archs))
        info.update(equal_path_steps=int(counts["equal_path_steps"]), train_steps=trainer.total_steps,
                    collapse_checks_skipped=int(counts["collapse_checks_skipped"]),
                    pretext_top1_last10pct=(counts["pretext_correct"] / counts["pretext_seen"]
                                            if counts["pretext_seen"] else None),
                    train_forward_images=job.counters.path_forward_images,
                    train_backward_images=job.counters.path_backward_images)
        classifier, lin = linear_evaluation(job, model, cfg, job.rng("pinas-linear-path"))
        info.update(lin)
        for message, values in uninformative_warnings(info, job.data.num_classes, cfg):
            job.warn(message, **values)
        return PinasScorer(job, student, teacher, queue, classifier, info, cfg)
