"""Seed derivation: one job seed, separate reproducible streams per purpose.

``derive_seed(seed, "data_order", epoch)`` gives the same stream for every method of a run, while
path sampling, augmentation and initialisation get their own streams that never interfere.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(*parts) -> int:
    """A stable 63-bit seed from any reprs (stable across processes, unlike hash())."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def torch_generator(*parts) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(derive_seed(*parts))
    return g


def numpy_rng(*parts) -> np.random.Generator:
    return np.random.default_rng(derive_seed(*parts))
