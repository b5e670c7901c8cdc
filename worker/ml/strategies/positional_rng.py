"""Random numbers keyed by (seed, pool position) instead of drawn from a running generator.

The shard rule says scoring a pool in contiguous shards must equal scoring it whole. A running
generator would hand a shard's first item different numbers than the unsharded run did, so
anything random inside ``compute`` (MC-dropout masks, random scores) is a pure function of
``(seed, global position, counter)`` instead: a counter-based hash (murmur3's 32-bit finaliser)
evaluated with integer tensor ops. The result is identical on any device and for any batching.

All arithmetic stays below 2**63 in int64 so no step relies on signed overflow.
"""

from __future__ import annotations

import torch
from torch import Tensor

_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


def _mul32(x: Tensor, c: int) -> Tensor:
    """(x * c) mod 2**32 for 0 <= x < 2**32, in 16-bit halves so int64 never overflows."""
    lo = x * (c & 0xFFFF)
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _MASK32


def _fmix32(h: Tensor) -> Tensor:
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def _seed_key(seed: int) -> int:
    """Fold an arbitrary Python int seed into 32 bits (keeps distinct small seeds distinct)."""
    s = int(seed) & ((1 << 64) - 1)
    t = torch.tensor([s & _MASK32, s >> 32], dtype=torch.int64)
    mixed = _fmix32(t[0:1] ^ _fmix32((t[1:2] + _GOLDEN) & _MASK32))
    return int(mixed.item())


def positional_uniform(
    seed: int, positions: Tensor, num: int, *, stream: int = 0, device: torch.device | None = None
) -> Tensor:
    """Uniform floats in [0, 1), one row of ``num`` per position.

    ``positions``: (b,) int64 global pool positions. Returns (b, num) float32 whose row i depends
    only on ``(seed, stream, positions[i])``; ``stream`` separates independent uses of one seed.
    """
    dev = device if device is not None else positions.device
    stream_key = _fmix32(torch.tensor([stream & _MASK32], dtype=torch.int64))
    key = _seed_key(seed) ^ int(stream_key.item())
    pos = positions.to(device=dev, dtype=torch.int64)
    base = _fmix32(_fmix32((pos & _MASK32) ^ key) ^ ((pos >> 32) & _MASK32))  # (b,)
    counter = torch.arange(num, device=dev, dtype=torch.int64)
    # A Weyl sequence from the per-item base through the finaliser, as in splitmix.
    h = _fmix32((base[:, None] + _mul32(counter, _GOLDEN)[None, :] + 1) & _MASK32)
    # 24 random bits fill a float32 mantissa exactly, so values are exact multiples of 2**-24.
    return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))


def positional_uniform64(seed: int, positions: Tensor, *, stream: int = 0) -> Tensor:
    """One float64 uniform in [0, 1) per position, from 48 hashed bits. (b,) -> (b,)."""
    u = positional_uniform(seed, positions, 2, stream=stream)
    hi = (u[:, 0].to(torch.float64) * (1 << 24)).round()
    lo = (u[:, 1].to(torch.float64) * (1 << 24)).round()
    return (hi * (1 << 24) + lo) / float(1 << 48)
