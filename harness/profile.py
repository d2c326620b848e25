"""Parameter and FLOP counts of standalone networks (the `params`/`flops` reference rows)."""
from __future__ import annotations

import torch
from torch import nn

from harness.spaces.base import Arch


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, arch: Arch, resolution: int) -> int:
    """Multiply-accumulates of convolutions and linear layers for one image (hooks on a forward)."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inp, out):
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += out.numel() // out.shape[0] * k

    def linear_hook(m: nn.Linear, _inp, out):
        nonlocal total
        total += m.in_features * m.out_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was = model.training
    model.eval()
    try:
        model(torch.zeros(1, 3, resolution, resolution), arch)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return total
