"""Zero-cost proxies: each checked on a tiny network against an independent numpy computation or a
hand-computed value, plus determinism and the BN/protocol choices of the scorer."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from harness.spaces.nb201 import Nb201Space
from harness.engine.method import create_method
from methods.zero_cost import (DEGENERATE_SCORE, PROXIES, ProxyScorer, ZeroCostConfig, fixed_batch, grad_norm,
                               jacov, jacov_from_jacobian, naswot, naswot_kernel, snip, synflow)




def _mlp(seed=0, bn=False) -> nn.Sequential:
    torch.manual_seed(seed)
    layers = [nn.Linear(4, 3)] + ([nn.BatchNorm1d(3)] if bn else []) + [nn.ReLU(), nn.Linear(3, 2)]
    return nn.Sequential(*layers).double()


def _np(net):
    w1, b1 = net[0].weight.detach().numpy().copy(), net[0].bias.detach().numpy().copy()
    w2, b2 = net[-1].weight.detach().numpy().copy(), net[-1].bias.detach().numpy().copy()
    return w1, b1, w2, b2


def _batch(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randint(0, 2, (n,), generator=g)


# --- synflow -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bn", [False, True])
def test_synflow_matches_closed_form(bn):
    """R = 1^T (|W2| relu(|W1| 1 + |b1|) + |b2|); everything positive, so relu is the identity and
    dR/dW2[k,j] = h_j, dR/dW1[j,i] = sum_k |W2[k,j]|. BN (batch of one!) must be bypassed."""
    net = _mlp(bn=bn)
    w1, b1, w2, b2 = (np.abs(a) for a in _np(net))
    h = w1.sum(1) + b1
    expected = (w2 * h[None, :]).sum() + (w1 * w2.sum(0)[:, None]).sum()
    x, _ = _batch()
    assert synflow(net, net, x) == pytest.approx(expected, rel=1e-12)


def test_synflow_is_data_independent():
    x, _ = _batch()
    assert synflow(_mlp(), _mlp(), x) == synflow(_mlp(), _mlp(), x * 7 - 3)


# --- snip / grad_norm ------------------------------------------------------------------------------
def _numpy_grads(net, x, y):
    """Manual backprop of mean cross-entropy through Linear-ReLU-Linear."""
    w1, b1, w2, b2 = _np(net)
    x, y = x.numpy(), y.numpy()
    z1 = x @ w1.T + b1
    h = np.maximum(z1, 0)
    z2 = h @ w2.T + b2
    p = np.exp(z2 - z2.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz2 = (p - np.eye(2)[y]) / len(x)
    dw2 = dz2.T @ h
    dz1 = (dz2 @ w2) * (z1 > 0)
    dw1 = dz1.T @ x
    return (w1, dw1), (w2, dw2)


def test_snip_matches_manual_backprop():
    net = _mlp()
    x, y = _batch()
    (w1, g1), (w2, g2) = _numpy_grads(net, x, y)
    expected = np.abs(w1 * g1).sum() + np.abs(w2 * g2).sum()  # sum |theta * dL/dtheta|, weights only
    assert snip(net, net, x, y) == pytest.approx(expected, rel=1e-10)


def test_grad_norm_is_a_sum_of_per_layer_norms():
    net = _mlp()
    x, y = _batch()
    (_, g1), (_, g2) = _numpy_grads(net, x, y)
    expected = np.linalg.norm(g1) + np.linalg.norm(g2)
    assert grad_norm(net, net, x, y) == pytest.approx(expected, rel=1e-10)
    assert expected != pytest.approx(np.sqrt((g1**2).sum() + (g2**2).sum()))  # not the global norm


# --- jacov ------------------------------------------------------------------------------------------
def test_jacov_formula_by_hand():
    k = 1e-5
    uncorrelated = np.array([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]])  # corr = I, eigenvalues 1, 1
    assert jacov_from_jacobian(uncorrelated) == pytest.approx(-2 * (math.log(1 + k) + 1 / (1 + k)))
    correlated = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.5]])  # corr ~ all ones: eigenvalues ~0 and ~2
    corr = np.corrcoef(correlated)
    sig = np.linalg.eigvalsh(corr)
    assert jacov_from_jacobian(correlated) == pytest.approx(-sum(math.log(s + k) + 1 / (s + k) for s in sig))
    assert jacov_from_jacobian(correlated) < jacov_from_jacobian(uncorrelated)  # correlated = worse
    assert math.isnan(jacov_from_jacobian(np.array([[1.0, 2.0], [3.0, 3.0]])))  # constant row: undefined


def test_jacov_uses_the_input_jacobian_of_the_summed_logits():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3)).double()
    x = torch.randn(6, 8, dtype=torch.float64)
    w1, b1 = net[0].weight.detach().numpy(), net[0].bias.detach().numpy()
    w2 = net[2].weight.detach().numpy()
    active = (x.numpy() @ w1.T + b1) > 0
    jac = (active * w2.sum(0)[None, :]) @ w1  # d(sum_c f_c)/dx_i = W1^T (W2^T 1 * relu'(z1_i))
    expected = jacov_from_jacobian(jac)
    assert np.isfinite(expected)
    assert jacov(net, net, x, None) == pytest.approx(expected, rel=1e-9)


# --- naswot --------------------------------------------------------------------------------------
def test_naswot_by_hand():
    """Codes [1,0,1], [1,1,0], [0,0,1]: N_A = 3, Hamming 2, 1, 3 -> K = [[3,1,2],[1,3,0],[2,0,3]],
    det K = 27 - 3 - 12 = 12."""
    lin = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(3))
    net = nn.Sequential(lin, nn.ReLU(), nn.Linear(3, 2))
    x = torch.tensor([[1.0, -1.0, 2.0], [0.5, 1.0, -1.0], [-1.0, -2.0, 3.0]])
    np.testing.assert_array_equal(naswot_kernel([(x > 0)]), [[3, 1, 2], [1, 3, 0], [2, 0, 3]])
    assert naswot(net, net, x) == pytest.approx(math.log(12))


def test_naswot_kernel_sums_layers_and_matches_hamming():
    rng = np.random.default_rng(0)
    codes = [torch.as_tensor(rng.random((5, n)) > 0.5) for n in (7, 11)]
    expected = sum(c.shape[1] - (c.numpy()[:, None, :] != c.numpy()[None, :, :]).sum(-1) for c in codes)
    np.testing.assert_array_equal(naswot_kernel(codes), expected)


def test_naswot_hooks_every_relu_input():
    net = _mlp()
    net.append(nn.ReLU())  # a second ReLU, on the logits
    x, _ = _batch()
    z1 = net[0](x)
    z2 = net[2](torch.relu(z1))
    expected = np.linalg.slogdet(naswot_kernel([z1 > 0, z2 > 0]))[1]
    assert naswot(net, net, x) == pytest.approx(expected)


# --- the scorer on NB201 -------------------------------------------------------------------------
ARCHS = [(3, 3, 3, 3, 3, 3), (2, 1, 3, 4, 2, 3), (1, 1, 1, 1, 1, 1), (3, 0, 2, 0, 1, 3)]


@pytest.mark.parametrize("proxy", list(PROXIES))
def test_scores_deterministic_per_seed_and_independent_of_the_set(job_factory, proxy):
    s0 = create_method(proxy).fit(job_factory(seed=0)).score(ARCHS)
    again = create_method(proxy).fit(job_factory(seed=0)).score(ARCHS[::-1])[::-1]
    np.testing.assert_array_equal(s0, again)  # seeded per architecture, not by position
    assert np.all(np.isfinite(s0)) and len(set(s0)) == len(ARCHS)
    s1 = create_method(proxy).fit(job_factory(seed=1)).score(ARCHS)
    assert not np.array_equal(s0, s1)  # another job seed: another init (and batch)


def test_same_init_and_batch_for_every_proxy(job_factory):
    job = job_factory()
    a = ProxyScorer(job, "snip", ZeroCostConfig("snip"))
    b = ProxyScorer(job, "naswot", ZeroCostConfig("naswot"))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert len(a.x) == 64 and len(set(fixed_batch(job, 64)[1].tolist())) > 1


@pytest.mark.parametrize("proxy", list(PROXIES))
def test_bn_settings_do_not_change_scores(job_factory, proxy):
    """The scorer builds BN without affine/tracking; the reference NB201 net has affine, tracked BN.
    At init in train mode both compute the same function and no proxy reads BN parameters."""
    job = job_factory()
    scorer = ProxyScorer(job, proxy, ZeroCostConfig(proxy))
    arch = ARCHS[1]
    ref_cfg = dataclasses.replace(job.net_cfg, bn_affine=True, bn_track=True)
    job.seed_torch(f"zero-cost-init:{job.space.arch_id(arch)}")
    net = job.space.build_standalone(arch, ref_cfg).train()
    ref = PROXIES[proxy](net, lambda t: net(t, arch), scorer.x, scorer.y)
    assert scorer.score([arch])[0] == pytest.approx(ref, rel=1e-5)


def test_degenerate_architectures_rank_last(job_factory):
    space = Nb201Space()
    cut = space.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|none~2|")  # node 3 gets nothing
    for proxy in ("jacov", "naswot"):
        scorer = create_method(proxy).fit(job_factory())
        s = scorer.score([cut, ARCHS[0]])
        assert s[0] == DEGENERATE_SCORE < s[1]
        assert scorer.extra()["degenerate_archs"] == 1


def test_batch_larger_than_train_set_is_a_config_error(job_factory):
    from harness.core.errors import ConfigError

    with pytest.raises(ConfigError, match="batch_size"):
        fixed_batch(job_factory(), 10_000)


def test_registered_as_reference_rows():
    for proxy in PROXIES:
        m = create_method(proxy)
        assert m.trains_supernet is False and m.config.proxy == proxy
