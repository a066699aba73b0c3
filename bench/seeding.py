"""Seeded, private RNG streams: the one way snnbench makes a draw reproducible (a leaf: torch only)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Run the block with a private copy of the global RNG seeded with ``seed`` (CPU and, for a CUDA
    ``device``, that device), so the caller's RNG stream is the same after the block as before it."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    devices = [dev if dev.index is not None else torch.device("cuda", torch.cuda.current_device())] \
        if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
