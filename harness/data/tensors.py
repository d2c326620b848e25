"""In-memory tensors for training: normalisation, resizing, augmentation, seeded minibatches.

The whole CIFAR-10 split fits in memory (25,000 x 3 x 32 x 32 float32 is about 300 MB), so the
training loop iterates index permutations over one tensor instead of using a DataLoader; this keeps
data order and augmentation exactly reproducible and identical for every method of a run.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from harness.core.seeding import torch_generator

# NAS-Bench-201's CIFAR-10 normalisation (mean/std of the training pixels, in [0, 1] units).
CIFAR10_MEAN: tuple[float, float, float] = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR10_STD: tuple[float, float, float] = (63.0 / 255, 62.1 / 255, 66.7 / 255)

_CHUNK = 4096


def to_float(x_uint8: torch.Tensor, resolution: int = 32, mean: tuple[float, float, float] = CIFAR10_MEAN,
             std: tuple[float, float, float] = CIFAR10_STD) -> torch.Tensor:
    """uint8 N x 3 x H x W -> normalised float32 N x 3 x resolution x resolution (same device).

    Resizing (when ``resolution`` differs from the input size) is bilinear with antialiasing, done
    on the [0, 1] image before normalisation; work is chunked to bound peak memory. ``mean``/``std``
    (in [0, 1] units): the data set's normalisation (default CIFAR-10's).
    """
    if x_uint8.dtype != torch.uint8 or x_uint8.dim() != 4 or x_uint8.shape[1] != 3:
        raise ValueError(f"expected uint8 N x 3 x H x W, got {x_uint8.dtype} {tuple(x_uint8.shape)}")
    resolution = int(resolution)
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    n, _, h, w = x_uint8.shape
    mean_t = torch.tensor(mean, device=x_uint8.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=x_uint8.device).view(1, 3, 1, 1)
    out = torch.empty((n, 3, resolution, resolution), dtype=torch.float32, device=x_uint8.device)
    for i in range(0, n, _CHUNK):
        xb = x_uint8[i : i + _CHUNK].to(torch.float32).div_(255.0)
        if (h, w) != (resolution, resolution):
            xb = F.interpolate(xb, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
        out[i : i + _CHUNK] = (xb - mean_t) / std_t
    return out


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard CIFAR augmentation of a float batch N x C x H x W, vectorised over the batch.

    Random crop of the original size from the image zero-padded by ``H // 8`` on each side (4 at
    32 px, 2 at 16 px; zero is the mean pixel after normalisation), then a random horizontal flip
    with probability 1/2. Deterministic given ``generator`` (a CPU generator; the random draws are
    made on the CPU, so results match across devices).
    """
    if x.dim() != 4:
        raise ValueError(f"expected a batch N x C x H x W, got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    pad = h // 8
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
    flips = torch.randint(0, 2, (n,), generator=generator).bool()
    dev = x.device
    # non_blocking: a plain .to(cuda) synchronises the stream (a host sync per training step); on the CPU it is a no-op
    rows = (offsets[0].view(n, 1) + torch.arange(h).view(1, h)).to(dev, non_blocking=True)  # n x h, in padded coords
    cols = torch.arange(w).view(1, w).expand(n, w)
    cols = torch.where(flips.view(n, 1), (w - 1) - cols, cols)  # flip = read columns backwards
    cols = (offsets[1].view(n, 1) + cols).to(dev, non_blocking=True)  # n x w
    xp = F.pad(x, (pad, pad, pad, pad)) if pad else x
    # one gather over each flattened padded image: pixel (r, s) of image i is xp[i, :, rows[i, r], cols[i, s]]
    # (rows then columns in two gathers is the same copy and took 1.6x as long)
    flat = (rows.view(n, h, 1) * xp.shape[3] + cols.view(n, 1, w)).view(n, 1, h * w).expand(n, c, h * w)
    return torch.gather(xp.flatten(2), 2, flat).view(n, c, h, w)


class BatchStream:
    """Seeded minibatches over in-memory tensors ``x`` (float N x C x H x W) and ``y`` (N labels).

    ``batches(epoch)`` shuffles with a generator derived from ``("data-order", seed, epoch)``, so
    every method run with the same seed sees the same data order in epoch ``e``. Augmentation draws
    come from a separate stream, one generator per batch derived from ``("augment", seed, epoch,
    batch)``, so ``batches(epoch, start=i)`` (resuming mid-epoch) yields exactly the batches ``i..``
    of ``batches(epoch)``, augmentation included.
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, augment: bool,
        drop_last: bool = True,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} items but y has {len(y)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if drop_last and len(x) < batch_size:
            raise ValueError(f"batch_size {batch_size} is larger than the data ({len(x)} items) with drop_last=True")
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.augment = bool(augment)
        self.drop_last = bool(drop_last)

    def __len__(self) -> int:
        return self.len_epoch

    @property
    def len_epoch(self) -> int:
        """Batches per epoch."""
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        """The permutation of item indices used in ``epoch``."""
        return torch.randperm(len(self.x), generator=torch_generator("data-order", self.seed, int(epoch)))

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (xb, yb) for batches ``start, start+1, ...`` of ``epoch``."""
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        perm = self.order(epoch).to(self.x.device)
        for b in range(start, self.len_epoch):
            idx = perm[b * self.batch_size : (b + 1) * self.batch_size]
            xb, yb = self.x[idx], self.y[idx.to(self.y.device)]
            if self.augment:
                xb = augment(xb, torch_generator("augment", self.seed, int(epoch), b))
            yield xb, yb
