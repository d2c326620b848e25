"""SupernetEvaluator: BN protocols leave the supernet untouched; ties broken by loss."""
from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import pytest
import torch

from harness.engine.evaluator import (SupernetEvaluator, batch_stat_bn, can_fork, check_not_collapsed, score_workers,
                                     tie_broken_score)
from harness.spaces.base import NetConfig
from harness.spaces.nb201 import Nb201Space
from harness.engine.method import Collapsed

SPACE = Nb201Space()
CFG = NetConfig(channels=4, cells=1, resolution=8, bn_affine=False, bn_track=True)


def _net():
    torch.manual_seed(0)
    return SPACE.build_supernet(CFG)


def _snapshot(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_tie_breaker_orders_by_loss_and_never_beats_one_more_correct():
    n = 100
    assert tie_broken_score(10, n, 2.0) > tie_broken_score(10, n, 2.5)
    assert tie_broken_score(11, n, 1e6) > tie_broken_score(10, n, 0.0)
    assert np.isfinite(tie_broken_score(10, n, float("nan")))


@pytest.mark.parametrize("mode", ["batch", "recal"])
def test_scoring_leaves_weights_and_buffers_unchanged(mode):
    net = _net()
    before = _snapshot(net)
    x, y = torch.randn(64, 3, 8, 8), torch.randint(0, 10, (64,))
    ev = SupernetEvaluator(net, x, y, bn_mode=mode, recal_x=torch.randn(64, 3, 8, 8), recal_batches=2,
                           batch_size=32, progress=False)
    archs = [SPACE.sample(np.random.default_rng(i)) for i in range(3)]
    s1 = ev.score(archs)
    after = _snapshot(net)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert np.array_equal(s1, ev.score(archs))  # deterministic, order-independent
    assert np.array_equal(ev.score(archs[::-1]), s1[::-1])


def test_batch_stat_bn_uses_batch_statistics():
    net = _net()
    net.eval()
    x = torch.randn(32, 3, 8, 8) * 5 + 3
    arch = SPACE.sample(np.random.default_rng(0))
    running = net(x, arch)
    with batch_stat_bn(net):
        batch = net(x, arch)
    net.train()
    assert torch.allclose(batch, net(x, arch), atol=1e-5)
    assert not torch.allclose(batch, running, atol=1e-3)


def test_accuracy_matches_manual_count():
    net = _net()
    x, y = torch.randn(50, 3, 8, 8), torch.randint(0, 10, (50,))
    arch = SPACE.sample(np.random.default_rng(1))
    ev = SupernetEvaluator(net, x, y, batch_size=50, progress=False)
    ev.score([arch])
    with torch.no_grad(), batch_stat_bn(net):
        manual = float((net(x, arch).argmax(1) == y).float().mean())
    assert ev.last_accuracy[0] == pytest.approx(manual)


def test_collapse_detected_on_constant_outputs():
    net = _net()
    x = torch.randn(16, 3, 8, 8)
    with pytest.raises(Collapsed):
        check_not_collapsed(net, x, [(0,) * 6])  # all-none cell: constant logits
    assert check_not_collapsed(net, x, [SPACE.sample(np.random.default_rng(2)), (3,) * 6]) >= 0


@pytest.fixture
def threads():
    n = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(n)


needs_fork = pytest.mark.skipif(not can_fork(), reason="forked scoring needs the fork start method")


@needs_fork
@pytest.mark.parametrize("mode", ["batch", "recal"])
def test_forked_scoring_gives_the_single_process_bits(mode, threads):
    """W processes at one thread = one process at one thread = one process at two threads, value
    for value (scores, accuracies, losses), in both BN protocols and with a per-arch ctx; the
    merged cache stats count every architecture once."""
    net = _net()
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(96, 3, 8, 8, generator=g), torch.randint(0, 10, (96,), generator=g)
    archs = [SPACE.sample(np.random.default_rng(i)) for i in range(70)] + [(0,) * 6, (3,) * 6]
    results = {}
    for label, workers, n_threads in (("1x1", 1, 1), ("1x2", 1, 2), ("3x1", 3, 1), ("2x1", 2, 1)):
        threads(n_threads)
        ev = SupernetEvaluator(net, x, y, bn_mode=mode, recal_x=torch.randn(64, 3, 8, 8, generator=torch.Generator()
                                                                            .manual_seed(4)),
                               recal_batches=2, batch_size=48, progress=False, workers=workers)
        results[label] = (ev.score(archs), ev.last_accuracy, ev.last_loss, ev.last_cache_stats)
    for label in ("1x2", "3x1", "2x1"):
        for mine, ref in zip(results[label][:3], results["1x1"][:3]):
            assert mine.tobytes() == ref.tobytes(), label
    if mode == "batch":
        stats = results["3x1"][3]
        assert stats["hits"] + stats["misses"] > 0 and stats["hits"] > 0
    else:
        assert results["3x1"][3] is None


@needs_fork
def test_forked_scoring_raises_a_child_failure_with_its_traceback():
    net = _net()
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 10, (32,))

    def ctx(arch):
        if arch == (1,) * 6:
            raise ValueError("ctx refused (1, 1, 1, 1, 1, 1)")
        return None

    archs = [SPACE.sample(np.random.default_rng(i)) for i in range(40)] + [(1,) * 6]
    ev = SupernetEvaluator(net, x, y, progress=False, ctx_fn=ctx, workers=2)
    with pytest.raises(RuntimeError, match=r"(?s)worker process failed.*ValueError: ctx refused"):
        ev.score(archs)
    ev.workers = 1
    with pytest.raises(ValueError, match="ctx refused"):
        ev.score(archs)


@needs_fork
def test_forked_scoring_hands_chunks_to_whichever_process_is_free(tmp_path):
    """More chunks than processes, each scored exactly once; a process slowed down (the first
    to score anything sleeps per batch) takes fewer architectures than the other."""
    net = _net()
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 10, (32,))
    archs = [SPACE.sample(np.random.default_rng(i)) for i in range(128)]
    slow = mp.get_context("fork").Value("l", 0)
    log = tmp_path / "scored.txt"

    def forward(m, xb, arch, ctx):
        with slow.get_lock():
            if slow.value == 0:
                slow.value = os.getpid()
        if slow.value == os.getpid():
            time.sleep(0.02)
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {''.join(map(str, arch))}\n")
        return m(xb, arch, ctx)

    ev = SupernetEvaluator(net, x, y, progress=False, forward_fn=forward, workers=2, batch_size=32)
    scores = ev.score(archs)
    ref = SupernetEvaluator(net, x, y, progress=False, workers=1).score(archs)
    assert scores.tobytes() == ref.tobytes()
    rows = [line.split() for line in log.read_text().splitlines()]
    assert sorted(a for _, a in rows) == sorted(''.join(map(str, a)) for a in archs)  # each once
    per_pid = {pid: sum(1 for p, _ in rows if p == pid) for pid, _ in rows}
    assert len(per_pid) == 2 and os.getpid() not in map(int, per_pid)
    assert per_pid[str(slow.value)] < 128 / 2  # the other process took the chunks it could not


def test_few_architectures_or_a_gpu_score_in_this_process():
    net = _net()
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 10, (32,))
    ev = SupernetEvaluator(net, x, y, progress=False, workers=4)
    archs = [SPACE.sample(np.random.default_rng(i)) for i in range(5)]
    pid = os.getpid()
    seen = []
    ev._score_forked = lambda chunks, workers: seen.append(pid) or []  # would be called only when forking
    ev.score(archs)
    assert seen == []

    class Job:
        class budget:
            threads = 2
        device = "cpu"

    assert score_workers(Job) == 2
    Job.device = "cuda:0"
    assert score_workers(Job) == 1
