"""resnet-probe13: block costs, split attention over radix, parsing, DS sharing, standalone == supernet path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import recording_factory

from harness.core.errors import ArchError
from harness.spaces.base import NetConfig, OpSpec
from harness.spaces.resnet_probe import (BLOCK_NAMES, BLOCKS, ResNetProbeSpace, SplitAttentionBottleneck, SplitAttentionConv,
                                         r_softmax)

SPACE = ResNetProbeSpace()
TINY = NetConfig(channels=4, resolution=8)




def _block(choice: int, w: float = 1.0, c_in: int = 256, planes: int = 64) -> SplitAttentionBottleneck:
    b = BLOCKS[choice]
    extra = (("radix", b.radix), ("cardinality", b.cardinality), ("width", b.width), ("planes", planes),
             ("w", w), ("own_downsample", False))
    return SplitAttentionBottleneck(OpSpec(0, choice, b.name, c_in, planes * 4, 1, 0, True, True, extra))


@pytest.mark.parametrize("c_in, planes", [(256, 64), (512, 128), (1024, 256), (2048, 512)])
def test_block_param_counts_within_10_percent(c_in, planes):
    """Pi-NAS designed the four blocks with similar cost: at equal (paper) width, within 10%."""
    counts = [sum(p.numel() for p in _block(c, 1.0, c_in, planes).parameters()) for c in range(4)]
    assert max(counts) <= 1.10 * min(counts), dict(zip(BLOCK_NAMES, counts))


@pytest.mark.parametrize("channels", [4, 8, 16])
def test_uniform_networks_cost_about_the_same_at_every_width(channels):
    """At reduced widths channel rounding breaks per-block equality in the thinnest stage, but
    the four "all the same block" networks stay within 10% of each other."""
    cfg = NetConfig(channels=channels, resolution=32)
    counts = [sum(p.numel() for p in SPACE.build_standalone((c,) * 16, cfg).parameters()) for c in range(4)]
    assert max(counts) <= 1.10 * min(counts), dict(zip(BLOCK_NAMES, counts))


def test_r_softmax_normalises_over_radix_not_channels():
    torch.manual_seed(0)
    radix, card, c = 2, 2, 6
    logits = torch.randn(3, card * radix * c)
    w = r_softmax(logits, radix, card).view(3, radix, card * c)
    assert torch.allclose(w.sum(1), torch.ones(3, card * c), atol=1e-6)
    assert not torch.allclose(w.sum(2), torch.ones(3, radix))
    # the softmax pairs fc2 channel (g, r, j) with split r of cardinal group g
    raw = logits.view(3, card, radix, c)
    expect = torch.softmax(raw, dim=2).transpose(1, 2).reshape(3, radix, card * c)
    assert torch.allclose(w, expect, atol=1e-6)
    assert torch.allclose(r_softmax(logits, 1, card), torch.sigmoid(logits))


def test_split_attention_module_weights_sum_to_one_over_radix():
    torch.manual_seed(0)
    spec = OpSpec(0, 3, "2s2x40d", 8, 8, 1, 0, True, True)
    m = SplitAttentionConv(8, 8, 1, 2, 2, 4, spec).eval()
    x = torch.relu(m.bn0(m.conv(torch.randn(4, 8, 6, 6))))
    att = m.attention(x)
    assert att.shape == (4, 2, 8)
    assert torch.allclose(att.sum(1), torch.ones(4, 8), atol=1e-6)
    out = m(torch.randn(4, 8, 6, 6))
    assert out.shape == (4, 8, 6, 6)


def test_parse_format_roundtrip_and_errors():
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = SPACE.sample(rng)
        assert SPACE.parse(SPACE.format(a)) == a
    assert SPACE.format((1,) * 16) == "-".join(["2s1x64d"] * 16)
    with pytest.raises(ArchError, match="16 names joined by '-'"):
        SPACE.parse("1s1x64d-2s1x64d")
    with pytest.raises(ArchError, match="unknown block '3s1x64d' at layer 0"):
        SPACE.parse("-".join(["3s1x64d"] + ["1s1x64d"] * 15))
    assert len(SPACE.decisions) == 16 and SPACE.size == 4 ** 16


def _copy_into_standalone(sn, arch, cfg):
    st = SPACE.build_standalone(arch, cfg)
    missing, unexpected = st.load_state_dict(sn.state_dict(), strict=False)
    assert not missing, missing  # every standalone parameter has the supernet's name
    assert unexpected  # the supernet has the other candidates
    return st


@pytest.mark.parametrize("share", [True, False])
def test_standalone_equals_supernet_path(share):
    import dataclasses

    cfg = dataclasses.replace(TINY, share_downsample=share)
    torch.manual_seed(0)
    sn = SPACE.build_supernet(cfg).eval()
    x = torch.randn(2, 3, 8, 8)
    for a in [(3,) * 16, SPACE.sample(np.random.default_rng(1))]:
        st = _copy_into_standalone(sn, a, cfg).eval()
        with torch.no_grad():
            assert torch.allclose(sn(x, a), st(x, a), atol=1e-5)


def test_downsample_sharing_option():
    import dataclasses

    shared = SPACE.build_supernet(TINY)
    own = SPACE.build_supernet(dataclasses.replace(TINY, share_downsample=False))
    assert ResNetProbeSpace.supports_downsample_sharing
    assert shared.layers[0].downsample is not None and shared.layers[3].downsample is not None
    assert all(op.downsample is None for op in shared.layers[3].ops.values())
    assert own.layers[3].downsample is None
    assert all(op.downsample is not None for op in own.layers[3].ops.values())
    assert shared.layers[1].downsample is None and shared.layers[1].identity_shortcut
    # only the 4 first layers' projections are duplicated (x4 candidates)
    assert sum(p.numel() for p in own.parameters()) > sum(p.numel() for p in shared.parameters())


def test_op_factory_builds_every_candidate_and_ctx_reaches_ops():
    factory, seen, ctxs = recording_factory(SPACE)

    net = SPACE.build_supernet(TINY, factory)
    assert sorted(seen) == [(d, c) for d in range(16) for c in range(4)]
    net(torch.randn(2, 3, 8, 8), (2,) * 16, ctx="hello")
    assert ctxs == ["hello"] * 16
    assert len(SPACE.layer_specs(TINY)) == 64


def test_shapes_follow_channels_and_resolution():
    net = SPACE.build_standalone((0,) * 16, NetConfig(channels=8, resolution=16))
    f = net.features(torch.randn(2, 3, 16, 16), (0,) * 16)
    assert f.shape == (2, 256)  # 512 * 4 * (8 / 64)
    big = SPACE.build_standalone((0,) * 16, NetConfig(channels=64, resolution=224))
    assert big.head.in_features == 2048  # ResNet-50's widths at channels=64
