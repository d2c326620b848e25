"""The compiled exact 3x3 pool: the same bits as ATen and as the PyTorch fallback, forward and
backward, at every thread count; the fallback when it is disabled."""
from __future__ import annotations

import logging
import os
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import harness.spaces.cpu_kernels as cpu_kernels
from harness.spaces.base import NetConfig
from harness.spaces.nb201 import POOL, FastAvgPool2x2, FastAvgPool3x3, FastBatchNorm2d, Nb201Space


@pytest.fixture
def compiled():
    module = cpu_kernels.pool_kernels()
    if module is None:
        pytest.skip(f"the compiled kernel does not build here: {cpu_kernels.status()}")
    return module


@pytest.fixture
def pytorch_path():
    """Forces the PyTorch fallback for the test (as HARNESS_CPU_KERNELS=0 does), then restores."""
    saved = dict(cpu_kernels._state)
    cpu_kernels._state.clear()
    cpu_kernels._state["module"] = None
    yield
    cpu_kernels._state.clear()
    cpu_kernels._state.update(saved)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32) if t.dtype == torch.float32 else t.view(torch.int64)


POOLS = {  # fast module, ATen reference, shapes (the 2x2 pool's exact path needs even sizes)
    "3x3": (FastAvgPool3x3, lambda: torch.nn.AvgPool2d(3, 1, 1, count_include_pad=False),
            [(16, 8, 16, 16), (8, 16, 8, 8), (3, 5, 7, 9), (2, 2, 1, 1), (1, 3, 1, 6)]),
    "2x2": (FastAvgPool2x2, lambda: torch.nn.AvgPool2d(2, 2), [(16, 8, 16, 16), (8, 16, 8, 8), (3, 5, 4, 6),
                                                               (2, 2, 2, 2)]),
}
CASES = [(pool, shape) for pool, (_, _, shapes) in POOLS.items() for shape in shapes]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("pool,shape", CASES, ids=[f"{p}-{'x'.join(map(str, s))}" for p, s in CASES])
@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_pools_give_aten_bits_forward_and_backward(compiled, pool, shape, dtype, threads):
    fast_cls, ref_factory, _ = POOLS[pool]
    fast, ref = fast_cls(), ref_factory()
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        for scale in (1e-3, 1.0, 1e3):
            x = (torch.randn(*shape, generator=g, dtype=dtype) * scale)
            x[..., 0, 0] = -0.0  # signed zeros must survive as ATen leaves them
            x.requires_grad_()
            out_f, out_r = fast(x), ref(x)
            grad = torch.randn(out_r.shape, generator=g, dtype=dtype)
            (gf,) = torch.autograd.grad(out_f, x, grad)
            (gr,) = torch.autograd.grad(out_r, x, grad)
            assert torch.equal(_bits(out_f), _bits(out_r)) and torch.equal(_bits(gf), _bits(gr))
            # a non-contiguous input (a channel slice) is made contiguous first
            xs = x.detach()[:, ::2]
            assert torch.equal(_bits(fast(xs)), _bits(ref(xs)))
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("channels", [4, 8, 12])
def test_compiled_and_pytorch_paths_train_to_the_same_weights(compiled, pytorch_path, channels):
    """Ten SPOS steps of a tiny supernet through each path (pools and batch norm): every weight bit
    the same. 4 and 12 channels take the batch-norm kernel's one-channel tail, 8 its 8-channel block."""
    weights = []
    for use_compiled in (True, False):
        cpu_kernels._state["module"] = compiled if use_compiled else None
        torch.manual_seed(0)
        net = Nb201Space().build_supernet(NetConfig(channels=channels, cells=1, resolution=8))
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        rng = np.random.default_rng(0)
        g = torch.Generator().manual_seed(1)
        for step in range(10):
            x, y = torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
            arch = (POOL,) * 6 if step % 2 else Nb201Space().sample(rng)  # every other step all pools
            opt.zero_grad()
            F.cross_entropy(net(x, arch), y).backward()
            opt.step()
        weights.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert torch.equal(_bits(weights[0]), _bits(weights[1]))


@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_kernels_use_torchs_threads(compiled, threads):
    """Built with OpenMP (without it ATen's parallel_for is a plain loop and every kernel runs on one
    thread), and sharing torch's thread setting."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert compiled.parallel_threads_used(64) == threads
    finally:
        torch.set_num_threads(old)


def test_disabled_kernels_fall_back_and_say_so(monkeypatch, pytorch_path):
    monkeypatch.setenv("HARNESS_CPU_KERNELS", "0")
    cpu_kernels._state.clear()
    assert cpu_kernels.pool_kernels() is None
    assert cpu_kernels.status() == "pytorch (HARNESS_CPU_KERNELS=0)"
    x = torch.randn(2, 3, 5, 5)
    ref = torch.nn.AvgPool2d(3, 1, 1, count_include_pad=False)(x)
    assert torch.equal(FastAvgPool3x3()(x), ref)


def test_a_build_failure_falls_back_once_with_the_reason(monkeypatch, pytorch_path, caplog):
    cpu_kernels._state.clear()

    def broken():
        raise RuntimeError("Error building extension 'harness_avgpool'\ng++: not found")

    monkeypatch.setattr(cpu_kernels, "_build", broken)
    with caplog.at_level("WARNING", logger="harness.spaces.cpu_kernels"):
        assert cpu_kernels.pool_kernels() is None
        assert cpu_kernels.pool_kernels() is None
    assert cpu_kernels.status() == "pytorch (RuntimeError: g++: not found)"
    assert sum("unavailable" in r.message for r in caplog.records) == 1


def test_the_build_folder_follows_the_source_torch_and_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    folder = cpu_kernels.build_dir()
    assert folder.parent == tmp_path / "torch_extensions" and folder.name.startswith("avgpool-")
    monkeypatch.setattr(cpu_kernels.sys, "prefix", "/elsewhere/.venv")  # a worktree's own venv
    other_env = cpu_kernels.build_dir()
    assert other_env != folder
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    assert cpu_kernels.build_dir() not in (folder, other_env)


def test_a_lock_left_by_a_killed_build_is_removed_and_a_fresh_one_kept(tmp_path, caplog):
    lock = tmp_path / "lock"
    assert not cpu_kernels.clear_stale_lock(tmp_path)  # none there
    lock.touch()
    assert not cpu_kernels.clear_stale_lock(tmp_path) and lock.exists()  # a build may be running
    old = time.time() - cpu_kernels.STALE_LOCK_S - 60
    os.utime(lock, (old, old))
    with caplog.at_level(logging.WARNING, logger=cpu_kernels.log.name):
        assert cpu_kernels.clear_stale_lock(tmp_path)
    assert not lock.exists()
    assert "did not finish" in caplog.text


def test_disabled_block_runs_the_pytorch_path_and_restores_the_kernels(compiled, monkeypatch):
    calls = []
    real_pool3 = compiled.pool3
    monkeypatch.setattr(cpu_kernels, "_state", {"module": type("K", (), {
        "pool3": staticmethod(lambda *a: calls.append("kernel") or real_pool3(*a))})()})
    x = torch.randn(2, 3, 5, 5)
    with pytest.raises(KeyError):
        with cpu_kernels.disabled():
            assert cpu_kernels.pool_kernels() is None
            FastAvgPool3x3()(x)
            raise KeyError("an error inside the block")
    assert calls == []
    FastAvgPool3x3()(x)
    assert calls == ["kernel"]  # restored after the error


BN_SHAPES = [(256, 8, 16, 16), (64, 16, 8, 8), (32, 32, 4, 4), (7, 13, 5, 3), (3, 9, 1, 2), (2, 1, 3, 3), (1, 8, 4, 4)]


@pytest.mark.parametrize("shape", BN_SHAPES, ids=["x".join(map(str, s)) for s in BN_SHAPES])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_batch_norm_gives_aten_bits_forward_and_backward(compiled, shape, affine, threads):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        fast = FastBatchNorm2d(shape[1], affine=affine, track_running_stats=False)
        ref = torch.nn.BatchNorm2d(shape[1], affine=affine, track_running_stats=False)
        if affine:
            with torch.no_grad():
                for p in (fast.weight, fast.bias):
                    p.copy_(torch.randn(p.shape, generator=g))
            ref.load_state_dict(fast.state_dict())
        for scale, shift in ((1e-3, 0.0), (1.0, 0.5), (1e3, -2e3)):
            x = (torch.randn(*shape, generator=g) * scale + shift).requires_grad_()
            grad = torch.randn(shape, generator=g)
            out_f, out_r = fast(x), ref(x)
            assert torch.equal(_bits(out_f), _bits(out_r))
            params_f = [x, *fast.parameters()]
            params_r = [x, *ref.parameters()]
            for gf, gr in zip(torch.autograd.grad(out_f, params_f, grad), torch.autograd.grad(out_r, params_r, grad)):
                assert torch.equal(_bits(gf), _bits(gr))
            with torch.no_grad():  # scoring: no graph, the same bits
                assert torch.equal(_bits(fast(x)), _bits(out_r))
    finally:
        torch.set_num_threads(old)


def test_batch_norm_backward_emulates_aten_on_this_cpu(compiled):
    """The backward's first call finds which lane layout and fused multiply-adds reproduce ATen here;
    on an AVX2 + FMA CPU one must (else the bit tests above would only compare ATen with itself)."""
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    if not (" avx2" in flags and " fma" in flags):
        pytest.skip("no AVX2 + FMA here: ATen's own backward runs")
    assert compiled.bn_backward_variant() != ""


@pytest.mark.parametrize("threads", [1, 2])
def test_batch_norm_backward_with_a_strided_gradient_gives_aten_bits(compiled, threads):
    """A gradient that is not contiguous takes another ATen path with other bits: it is passed to
    ATen as it is."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(2)
        fast, ref = FastBatchNorm2d(8, affine=True), torch.nn.BatchNorm2d(8, affine=True)
        x = torch.randn(32, 8, 16, 16, generator=g).requires_grad_()
        grad = torch.randn(32, 8, 16, 16, generator=g).transpose(2, 3)  # strided view
        assert not grad.is_contiguous()
        for gf, gr in zip(torch.autograd.grad(fast(x), [x, *fast.parameters()], grad),
                          torch.autograd.grad(ref(x), [x, *ref.parameters()], grad)):
            assert torch.equal(_bits(gf), _bits(gr))
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("shape", BN_SHAPES[:4], ids=["x".join(map(str, s)) for s in BN_SHAPES[:4]])
@pytest.mark.parametrize("momentum", [0.1, None, 0.7])
@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_batch_norm_updates_running_statistics_with_aten_bits(compiled, shape, momentum, threads):
    """Training with running buffers (the supernets' BN, Pi-NAS's per-path re-estimation with
    momentum None): output, gradients, running mean/var and the batch count as BatchNorm2d's,
    bit for bit, over several steps (the buffers feed back into the next update)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(1)
        fast = FastBatchNorm2d(shape[1], momentum=momentum)
        ref = torch.nn.BatchNorm2d(shape[1], momentum=momentum)
        with torch.no_grad():
            for p in (fast.weight, fast.bias):
                p.copy_(torch.randn(p.shape, generator=g))
        ref.load_state_dict(fast.state_dict())
        for scale, shift in ((1e-3, 0.0), (1.0, 0.5), (1e3, -2e3), (3.0, 1.0)):
            x = (torch.randn(*shape, generator=g) * scale + shift).requires_grad_()
            out_f, out_r = fast(x), ref(x)
            assert torch.equal(_bits(out_f), _bits(out_r))
            grad = torch.randn(shape, generator=g)
            for gf, gr in zip(torch.autograd.grad(out_f, [x, *fast.parameters()], grad),
                              torch.autograd.grad(out_r, [x, *ref.parameters()], grad)):
                assert torch.equal(_bits(gf), _bits(gr))
            for name, buf in ref.named_buffers():
                mine = dict(fast.named_buffers())[name]
                assert torch.equal(_bits(mine), _bits(buf)), name
        assert int(fast.num_batches_tracked) == 4
    finally:
        torch.set_num_threads(old)


def test_batch_norm_takes_the_kernel_exactly_when_it_normalises_by_the_batch(compiled, monkeypatch):
    """Batch statistics (training, tracked or not; BN switched to batch stats for scoring) take
    the kernel, running buffers passed only when BatchNorm2d would update them; normalising by
    running statistics (eval with buffers) is BatchNorm2d's own path."""
    calls = []
    monkeypatch.setattr(cpu_kernels, "_state", {"module": type("K", (), {
        "bn_forward": staticmethod(lambda *a: calls.append(a[4] is not None) or compiled.bn_forward(*a))})()})
    x = torch.randn(16, 8, 4, 4)
    tracked, ref = FastBatchNorm2d(8), torch.nn.BatchNorm2d(8)
    assert torch.equal(tracked(x), ref(x)) and calls == [True]  # training, buffers updated
    assert torch.equal(tracked.running_mean, ref.running_mean) and int(tracked.num_batches_tracked) == 1
    tracked.eval(), ref.eval()
    assert torch.equal(tracked(x), ref(x)) and calls == [True]  # eval: running statistics, BatchNorm2d
    tracked.train()
    tracked.track_running_stats = False  # what batch_stat_bn does while scoring
    before = tracked.running_mean.clone()
    tracked(x)
    assert torch.equal(tracked.running_mean, before) and int(tracked.num_batches_tracked) == 1
    FastBatchNorm2d(8, track_running_stats=False).eval()(x)
    assert calls == [True, False, False]