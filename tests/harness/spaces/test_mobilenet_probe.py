"""mobilenet-probe13: identity constraints, sampling, parsing, op factory, standalone == supernet path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import recording_factory

from harness.core.errors import ArchError
from harness.spaces.base import NetConfig
from harness.spaces.mobilenet_probe import CHOICE_NAMES, IDENTITY, STAGE_FIRST, MBConv, MobileNetProbeSpace

SPACE = MobileNetProbeSpace()
TINY = NetConfig(channels=4, resolution=8)




def _arch(first=0, rest=IDENTITY):
    return tuple(first if i in STAGE_FIRST else rest for i in range(len(SPACE.decisions)))


def test_layout_and_choices():
    assert len(SPACE.decisions) == 21 and SPACE.size == 7 ** 21
    assert all(len(d.choices) == 7 for d in SPACE.decisions)
    assert STAGE_FIRST == (0, 4, 8, 12, 16, 20)
    assert SPACE.allowed_choices(0) == tuple(range(6)) and SPACE.allowed_choices(1) == tuple(range(7))


def test_identity_refused_in_a_stage_first_layer():
    bad = list(_arch())
    bad[4] = IDENTITY
    assert not SPACE.is_allowed(tuple(bad))
    with pytest.raises(ArchError, match="not allowed at layer 4"):
        SPACE.format(tuple(bad))
    with pytest.raises(ArchError, match="not allowed at layer 4"):
        SPACE.parse("-".join(CHOICE_NAMES[a] for a in bad))
    with pytest.raises(ArchError, match="not allowed"):
        SPACE.build_standalone(tuple(bad), TINY)
    net = SPACE.build_supernet(TINY)
    assert "identity" not in net.layers[4] and "identity" in net.layers[5]
    with pytest.raises(ArchError, match="not allowed at layer 4"):
        net(torch.randn(2, 3, 8, 8), tuple(bad))
    assert SPACE.is_allowed(_arch())


def test_sample_respects_constraints_and_covers_choices():
    rng = np.random.default_rng(0)
    archs = [SPACE.sample(rng) for _ in range(300)]
    assert all(SPACE.is_allowed(a) for a in archs)
    assert {a[1] for a in archs} == set(range(7))
    assert {a[0] for a in archs} == set(range(6))


def test_parse_format_roundtrip_and_errors():
    rng = np.random.default_rng(1)
    a = SPACE.sample(rng)
    assert SPACE.parse(SPACE.format(a)) == a
    with pytest.raises(ArchError, match="21 names joined by '-'"):
        SPACE.parse("k3e3-k5e6")
    with pytest.raises(ArchError, match="unknown choice 'k9e3'"):
        SPACE.parse("-".join(["k9e3"] * 21))


def test_first_layer_has_expansion_one_and_mbconv_shapes():
    net = SPACE.build_standalone(_arch(), TINY)
    assert isinstance(net.first, MBConv)
    assert len(net.first.conv) == 5  # depthwise + project only: no 1x1 expansion
    x = torch.randn(2, 3, 8, 8)
    assert net(x, _arch()).shape == (2, 10)
    # stride-adapted for small inputs: total stride 8 below 64 px
    big = SPACE.build_standalone(_arch(), NetConfig(channels=4, resolution=64))
    assert big.stem[0].stride == (2, 2)


def test_op_factory_builds_every_allowed_candidate_and_passes_ctx():
    factory, seen, ctxs = recording_factory(SPACE)

    net = SPACE.build_supernet(TINY, factory)
    expect = [(d, c) for d in range(21) for c in SPACE.allowed_choices(d)]
    assert sorted(seen) == expect
    net(torch.randn(2, 3, 8, 8), _arch(1, 2), ctx="c")
    assert ctxs == ["c"] * 21


def test_standalone_equals_supernet_path():
    torch.manual_seed(0)
    sn = SPACE.build_supernet(TINY).eval()
    x = torch.randn(2, 3, 8, 8)
    for a in [_arch(5, 5), _arch(), SPACE.sample(np.random.default_rng(3))]:
        st = SPACE.build_standalone(a, TINY)
        missing, unexpected = st.load_state_dict(sn.state_dict(), strict=False)
        assert not missing and unexpected
        st.eval()
        with torch.no_grad():
            assert torch.allclose(sn(x, a), st(x, a), atol=1e-5)
