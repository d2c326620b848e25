"""Zero-cost proxies: training-free reference rows scored on each STANDALONE network at init.

Five estimators, each a function ``proxy(net, fwd, x, y) -> float`` (higher = predicted better):

- ``synflow``, ``snip``, ``grad_norm``: Abdelfattah et al., "Zero-Cost Proxies for Lightweight
  NAS", ICLR 2021 (Eqs. 1-3 and the SamsungLabs ``zero-cost-nas`` reference code): a per-weight
  saliency summed over every Conv/Linear weight of the network.
- ``jacov``: Mellor et al., "Neural Architecture Search without Training", arXiv:2006.04647v1
  (2020), Eq. 2: the Jacobian-covariance score (as ``jacob_cov`` in Abdelfattah et al.).
- ``naswot``: Mellor et al., ICML 2021 (same title, v3), Eqs. 1-2: log|det K_H| of the Hamming
  kernel of binary ReLU activation codes.

Protocol (the reference code's): network at PyTorch's default init (seeded per architecture from
the job seed), in train mode (BN normalises by the batch), one fixed batch of training images
(seeded; 64 images as in ``nasbench2_pred.py``, shared by every architecture and proxy), the labels
of that batch for the loss-based proxies. The network is built with ``bn_affine=False`` and
``bn_track=False``: at init an affine BN is the identity (weight 1, bias 0) and no proxy reads BN
parameters (all sum over Conv/Linear weights only), and a train-mode BN uses batch statistics
whether or not it tracks running ones; so the scores equal the reference's while the network is
cheaper to build. Architectures whose output does not depend on the input (e.g. an NB201 cell whose
output node is cut off) give a degenerate score (a NaN correlation or a singular kernel); it is
mapped to ``DEGENERATE_SCORE`` (ranked last, all tied) and counted in the job's ``extra``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from harness.core.errors import ConfigError
from harness.engine.method import Method, MethodConfig, Scorer, register_method

Forward = Callable[[torch.Tensor], torch.Tensor]
DEGENERATE_SCORE = -1e30  # finite, below any proxy value: tau-b sees these archs as tied last
JACOV_K = 1e-5  # Mellor et al. 2020, Eq. 2


def weighted_layers(net: nn.Module) -> list[nn.Module]:
    """The layers every proxy sums over: Conv and Linear (``get_layer_metric_array`` in the ref. code)."""
    return [m for m in net.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]


def _sum_over_weights(net: nn.Module, per_layer: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> float:
    total = torch.zeros((), dtype=torch.float64)
    for layer in weighted_layers(net):
        if layer.weight.grad is not None:  # a layer off the computed path contributes 0, as in the ref.
            total += per_layer(layer.weight.detach(), layer.weight.grad).double()
    return float(total)


def _identity_forward(x, *args, **kwargs):
    return x


def synflow(net: nn.Module, fwd: Forward, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    """SynFlow (Tanaka et al. 2020; as a NAS proxy Abdelfattah et al. 2021, Eq. 3).

    S = sum_theta |theta * dR/dtheta| with R = 1^T (prod_l |theta_l|) 1: every parameter replaced by
    its absolute value, BN disabled (the reference ``synflow`` measure has ``bn=False``: BN forward
    becomes the identity), double precision, a single all-ones input; R = sum of the outputs.
    Data-independent: only ``x``'s shape is used. Modifies ``net`` in place (abs, float64).
    """
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.forward = _identity_forward  # instance attribute shadows the class method
    net.double()
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    net.zero_grad(set_to_none=True)
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
    fwd(ones).sum().backward()
    return _sum_over_weights(net, lambda w, g: (w * g).abs().sum())


def _loss_backward(net: nn.Module, fwd: Forward, x: torch.Tensor, y: torch.Tensor) -> None:
    net.zero_grad(set_to_none=True)
    F.cross_entropy(fwd(x), y).backward()


def snip(net: nn.Module, fwd: Forward, x: torch.Tensor, y: torch.Tensor) -> float:
    """SNIP (Lee et al. 2019; Abdelfattah et al. 2021, Eq. 1): S = sum_theta |dL/dtheta * theta|.

    The reference differentiates w.r.t. a ones mask c on each weight (w * c); dL/dc at c = 1 equals
    theta * dL/dtheta, which is computed here directly. L = cross-entropy on the batch.
    """
    _loss_backward(net, fwd, x, y)
    return _sum_over_weights(net, lambda w, g: (w * g).abs().sum())


def grad_norm(net: nn.Module, fwd: Forward, x: torch.Tensor, y: torch.Tensor) -> float:
    """grad_norm (Abdelfattah et al. 2021, Sec. 3): sum over Conv/Linear layers of ||dL/dW_l||_2.

    A sum of per-layer Euclidean norms (the reference's ``get_grad_norm_arr`` summed), not the norm
    of the whole gradient vector.
    """
    _loss_backward(net, fwd, x, y)
    return _sum_over_weights(net, lambda w, g: g.norm())


def jacov_from_jacobian(jacobian: np.ndarray, k: float = JACOV_K) -> float:
    """Mellor et al. 2020, Eq. 2: S = -sum_i [log(sigma_i + k) + 1/(sigma_i + k)], sigma_i the
    eigenvalues of the correlation matrix of the per-image input Jacobians (rows of ``jacobian``)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(jacobian.astype(np.float64))
        if not np.all(np.isfinite(corr)):
            return float("nan")  # an image whose Jacobian is constant: correlation undefined
        sigma = np.linalg.eigvalsh(corr)  # symmetric: real eigenvalues (the ref.'s eig up to round-off)
        return float(-np.sum(np.log(sigma + k) + 1.0 / (sigma + k)))


def jacov(net: nn.Module, fwd: Forward, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    """Jacobian covariance (Mellor et al. 2020, Eq. 2; ``jacob_cov`` in Abdelfattah et al. 2021).

    J_i = d(sum_c f_c(x_i)) / dx_i (the reference backpropagates ones from every logit), flattened
    per image; the score rewards Jacobians that are uncorrelated across the images of the batch.
    """
    net.requires_grad_(False)  # only d/dx is needed: skip the weight gradients
    xg = x.detach().clone().requires_grad_(True)
    out = fwd(xg)
    if not out.requires_grad:  # the output does not depend on the input (a cut-off cell)
        return float("nan")
    (jac,) = torch.autograd.grad(out, xg, torch.ones_like(out), allow_unused=True)
    if jac is None:
        return float("nan")
    return jacov_from_jacobian(jac.reshape(len(x), -1).cpu().numpy())


def naswot_kernel(codes: Sequence[torch.Tensor]) -> np.ndarray:
    """K_H[i, j] = N_A - d_H(c_i, c_j) summed over layers (Mellor et al. ICML 2021, Eq. 1).

    With binary codes c, N_A - d_H = c c^T + (1 - c)(1 - c)^T = 2 c c^T - s_i - s_j + N_A
    (s = number of active units per image): one matmul per layer instead of two. 0/1 products
    summed in float32 are exact below 2^24 units per layer; the kernel is accumulated in float64.
    """
    n = codes[0].shape[0]
    k = torch.zeros(n, n, dtype=torch.float64)
    for c in codes:
        c = c.reshape(n, -1).float()
        s = c.sum(1)
        k += (2 * (c @ c.T) - s[:, None] - s[None, :] + c.shape[1]).double().cpu()
    return k.numpy()


def naswot(net: nn.Module, fwd: Forward, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    """NASWOT (Mellor et al. ICML 2021, Eq. 2): S = log|det K_H|.

    Codes are the signs of every ReLU's input (c = 1 where the unit is active), hooked on the ReLU
    modules like the reference's ``counting_forward_hook``. The reference only counts ReLUs that
    also ran a backward pass; in a standalone network every ReLU that runs in the forward does, so
    the backward is skipped here.
    """
    codes: list[torch.Tensor] = []

    def hook(_module, inp, _out):
        codes.append((inp[0].detach() > 0).reshape(len(x), -1))

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            fwd(x)
    finally:
        for h in handles:
            h.remove()
    if not codes:
        return float("nan")
    _sign, logabsdet = np.linalg.slogdet(naswot_kernel(codes))
    return float(logabsdet)


PROXIES: dict[str, Callable[[nn.Module, Forward, torch.Tensor, torch.Tensor], float]] = {
    "synflow": synflow, "snip": snip, "grad_norm": grad_norm, "jacov": jacov, "naswot": naswot,
}


@dataclass(frozen=True)
class ZeroCostConfig(MethodConfig):
    proxy: str = "synflow"
    batch_size: int = 64  # the reference's NB201 setting (nasbench2_pred.py: one random batch of 64)
    bn_affine: bool = False  # identity at init; no proxy reads BN parameters (see module docstring)
    bn_track: bool = False  # train-mode BN normalises by the batch either way


def fixed_batch(job, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One seeded batch of distinct training images (shared by every architecture and proxy)."""
    n = len(job.data.train_x)
    if batch_size > n:
        raise ConfigError(f"zero-cost batch_size {batch_size} exceeds the {n} training images; use <= {n}")
    idx = torch.as_tensor(np.sort(job.rng("zero-cost-batch").choice(n, size=batch_size, replace=False)))
    idx = idx.to(job.data.train_x.device)
    return job.data.train_x[idx], job.data.train_y[idx]


class ProxyScorer(Scorer):
    """Builds each architecture's standalone network (seeded by arch id) and scores it."""

    def __init__(self, job, proxy: str, config: ZeroCostConfig):
        self.job, self.proxy, self.fn = job, proxy, PROXIES[proxy]
        self.cfg = dataclasses.replace(job.net_cfg, bn_affine=config.bn_affine, bn_track=config.bn_track)
        self.x, self.y = fixed_batch(job, config.batch_size)
        self.cache: dict[tuple, float] = {}
        self.degenerate = 0

    def score_one(self, arch) -> float:
        arch = tuple(arch)
        if arch not in self.cache:
            space = self.job.space
            self.job.seed_torch(f"zero-cost-init:{space.arch_id(arch)}")  # same init for every proxy
            net = space.build_standalone(arch, self.cfg).to(self.job.device).train()
            value = self.fn(net, lambda t: net(t, arch), self.x, self.y)
            if not np.isfinite(value):
                self.degenerate += 1
                value = DEGENERATE_SCORE
            self.cache[arch] = float(value)
        return self.cache[arch]

    def score(self, archs):
        it = tqdm(archs, desc=self.proxy, disable=not self.job.progress, leave=False)
        return np.asarray([self.score_one(a) for a in it], dtype=float)

    def extra(self) -> dict:
        return {"proxy": self.proxy, "batch_size": len(self.x), "degenerate_archs": self.degenerate,
                "degenerate_score": DEGENERATE_SCORE}


@register_method("synflow", proxy="synflow")
@register_method("snip", proxy="snip")
@register_method("grad_norm", proxy="grad_norm")
@register_method("jacov", proxy="jacov")
@register_method("naswot", proxy="naswot")
class ZeroCost(Method):
    """A zero-cost proxy as a reference row: no supernet, no training budget."""

    Config = ZeroCostConfig
    trains_supernet = False

    def fit(self, job):
        if self.config.proxy not in PROXIES:
            raise ConfigError(f"unknown zero-cost proxy '{self.config.proxy}'; choose one of {', '.join(PROXIES)}")
        return ProxyScorer(job, self.config.proxy, self.config)
