"""NB201 space: string format, benchmark order, isomorphism classes, the network."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from harness.core.errors import ArchError
from harness.spaces.base import NetConfig
from harness.spaces.nb201 import EDGES, NB201_OPS, Nb201Space, live_edges

SPACE = Nb201Space()
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def test_roundtrip_and_enumeration_order():
    archs = list(SPACE.enumerate())
    assert len(archs) == 15625 == len(set(archs))
    for i in (0, 1, 6111, 15624):
        assert SPACE.arch_index(archs[i]) == i
        assert SPACE.from_index(i) == archs[i]
        assert SPACE.parse(SPACE.format(archs[i])) == archs[i]


@pytest.mark.parametrize("bad", [
    "", "|nor_conv_3x3~0|", "|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    BEST.replace("nor_conv_3x3~1|+", "conv_5x5~1|+"), BEST.replace("~2|", "~1|"), BEST.replace("|+|", "|+ |", 1),
    BEST[:-1],
])
def test_parse_rejects_malformed(bad):
    with pytest.raises(ArchError):
        SPACE.parse(bad)


def test_parse_error_names_value_and_fix():
    with pytest.raises(ArchError, match="conv_5x5.*operators are"):
        SPACE.parse(BEST.replace("skip_connect", "conv_5x5"))


def test_isomorphism_key_matches_benchmark_classes(shared_dir):
    """Our key must partition the space exactly like the table's isomorphism_key column."""
    ours, theirs = {}, {}
    with open(shared_dir / "nb201" / "nats_tss_accuracy.csv") as f:
        for row in csv.DictReader(f):
            a = SPACE.parse(row["arch"])
            assert SPACE.arch_index(a) == int(row["index"])
            ours.setdefault(SPACE.isomorphism_key(a), set()).add(int(row["index"]))
            theirs.setdefault(row["isomorphism_key"], set()).add(int(row["index"]))
    assert len(ours) == len(theirs) == 6466
    assert {frozenset(v) for v in ours.values()} == {frozenset(v) for v in theirs.values()}


def test_isomorphic_cells_share_key():
    # nodes 1 and 2 never reach the output: whatever they compute, the cell is the same function
    a = SPACE.parse("|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_3x3~0|none~1|none~2|")
    b = SPACE.parse("|avg_pool_3x3~0|+|skip_connect~0|skip_connect~1|+|nor_conv_3x3~0|none~1|none~2|")
    c = SPACE.parse(BEST)
    assert SPACE.isomorphism_key(a) == SPACE.isomorphism_key(b) != SPACE.isomorphism_key(c)


def test_live_edges_skip_dead_nodes():
    # node 2 feeds nothing (edge 3<-2 is none): edges into node 2 need not run
    arch = SPACE.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|")
    live = live_edges(arch)
    assert all(EDGES[e][0] != 2 for e in live)
    assert set(live) == {0, 3, 4}


CFG = NetConfig(channels=4, cells=1, resolution=8, bn_affine=True, bn_track=True)


def test_supernet_shapes_and_features():
    net = SPACE.build_supernet(CFG)
    x = torch.randn(5, 3, 8, 8)
    arch = SPACE.parse(BEST)
    assert net(x, arch).shape == (5, 10)
    assert net.features(x, arch).shape == (5, 16)


def test_standalone_equals_supernet_path_with_same_weights():
    torch.manual_seed(0)
    sup = SPACE.build_supernet(CFG)
    for arch in [SPACE.parse(BEST), SPACE.sample(np.random.default_rng(3))]:
        alone = SPACE.build_standalone(arch, CFG)
        missing, unexpected = alone.load_state_dict(sup.state_dict(), strict=False)
        assert not missing
        assert len(unexpected) > 0  # the supernet holds other operators too
        x = torch.randn(6, 3, 8, 8)
        sup.train(), alone.train()
        assert torch.allclose(sup(x, arch), alone(x, arch), atol=1e-6)
        assert sum(p.numel() for p in alone.parameters()) < sum(p.numel() for p in sup.parameters())


def test_all_none_cell_gives_chance_accuracy():
    """An all-`none` cell cuts the input off: the logits cannot depend on the image."""
    torch.manual_seed(0)
    arch = (0,) * 6
    net = SPACE.build_standalone(arch, CFG)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    y = torch.arange(40) % 10
    x = torch.randn(40, 3, 8, 8) + y.view(-1, 1, 1, 1).float()
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x, arch), y).backward()
        opt.step()
    net.eval()
    logits = net(x, arch)
    assert torch.allclose(logits, logits[:1].expand_as(logits), atol=1e-5)
    acc = float((logits.argmax(1) == y).float().mean())
    assert acc == pytest.approx(0.1)  # balanced labels, one predicted class


def test_encode_is_one_hot_per_decision():
    arch = SPACE.parse(BEST)
    enc = SPACE.encode(arch)
    assert enc.shape == (6 * len(NB201_OPS),)
    assert enc.reshape(6, 5).sum(1).tolist() == [1.0] * 6
    assert [int(i) for i in enc.reshape(6, 5).argmax(1)] == list(arch)


def test_named_subset_no_none_no_skip():
    from harness.archsets import resolve_archs

    archs = resolve_archs(SPACE, "no-none-no-skip")
    assert len(archs) == 3 ** 6
    assert len(resolve_archs(SPACE, "unique")) == 6466


def test_computes_from_input_matches_the_network():
    """A cell with no non-zero route from input to output gives every image the same output, and
    every other cell does not (checked through the standalone network on a random batch)."""
    torch.manual_seed(0)
    archs = list(SPACE.enumerate())
    disconnected = [a for a in archs if not SPACE.computes_from_input(a)]
    # by hand: node 3 unreached means (3<-0) none, (3<-1) none or node 1 unfed, (3<-2) none or node 2 unfed
    assert 0.01 < len(disconnected) / len(archs) < 0.03
    rng = np.random.default_rng(0)
    connected = [a for a in archs if SPACE.computes_from_input(a)]
    picks = ([disconnected[i] for i in rng.choice(len(disconnected), 6, replace=False)]
             + [connected[i] for i in rng.choice(len(connected), 6, replace=False)]
             + [SPACE.parse("|skip_connect~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"),
                SPACE.parse("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")])
    x = torch.randn(6, 3, 8, 8)
    for arch in picks:
        net = SPACE.build_standalone(arch, CFG).train()
        with torch.no_grad():
            out = net(x, arch)
        constant = bool((out - out[0]).abs().max() == 0)
        assert constant == (not SPACE.computes_from_input(arch)), SPACE.format(arch)
