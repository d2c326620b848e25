"""torch.compile on this CPU (issue 21's trial; `make bench`): the standalone NB201 network at
`study` shapes, eager (the harness's path, compiled exact pools) against ``torch.compile`` (inductor,
traced through the pure-PyTorch pools, which dynamo can see into), one thread, paired rounds in one
process. Reports ms per training step (CPU time), the compile time and whether the losses keep their
bits. A supernet changes its path every step, so compiling its forward would retrace per
architecture; a fixed network is where compiling could pay. Timings are reported, never asserted.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.budgets import BUDGETS
from harness.spaces import cpu_kernels
from harness.spaces.nb201 import Nb201Space

ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
BATCHES, ROUNDS, STEPS = 8, 4, 30


def _trainer(compiled: bool):
    space, budget = Nb201Space(), BUDGETS["study"]
    arch = space.parse(ARCH)
    torch.manual_seed(0)
    net = space.build_standalone(arch, budget.net_config())
    opt = torch.optim.SGD(net.parameters(), lr=budget.lr, momentum=budget.momentum, nesterov=budget.nesterov,
                          weight_decay=budget.weight_decay)

    def forward(x):
        return net(x, arch)

    fwd = torch.compile(forward) if compiled else forward
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(budget.batch_size, 3, budget.resolution, budget.resolution, generator=g),
             torch.randint(0, 10, (budget.batch_size,), generator=g)) for _ in range(BATCHES)]

    def steps(n: int) -> list[float]:
        losses = []
        for i in range(n):
            x, y = data[i % BATCHES]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(fwd(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    return steps


@pytest.mark.bench
def test_bench_torch_compile_standalone(benchmark, capsys):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        eager = _trainer(False)
        compiled = _trainer(True)
        first_eager = eager(3)
        t0 = time.perf_counter()
        with cpu_kernels.disabled():  # trace the pure-PyTorch pools: the extension is opaque to dynamo
            first_compiled = compiled(3)
        compile_s = time.perf_counter() - t0
        ms = {"eager": [], "compiled": []}

        def one_round():
            order = ("eager", "compiled") if len(ms["eager"]) % 2 == 0 else ("compiled", "eager")
            for name in order:
                t = time.process_time()
                if name == "eager":
                    eager(STEPS)
                else:
                    with cpu_kernels.disabled():  # else dynamo's guard on the kernel state retraces
                        compiled(STEPS)
                ms[name].append((time.process_time() - t) / STEPS * 1000)

        benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
        rec = {"eager_ms_per_step": round(float(np.median(ms["eager"])), 1),
               "compiled_ms_per_step": round(float(np.median(ms["compiled"])), 1),
               "median_paired_speedup": round(float(np.median([e / c for e, c in zip(ms["eager"], ms["compiled"])])), 3),
               "compile_and_3_steps_s": round(compile_s, 1),
               "same_loss_bits_first_3_steps": first_eager == first_compiled,
               "pools": cpu_kernels.status()}
        benchmark.extra_info.update(rec)
        with capsys.disabled():
            print(f"\nbench torch.compile standalone (study shapes, 1 thread): {json.dumps(rec)}")
    finally:
        torch.set_num_threads(old)
