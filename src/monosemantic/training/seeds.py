"""Seeds derived from several parts, so that every random choice is a function of (seed, where, when)."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts) -> int:
    """A 63-bit seed from ``parts`` (ints and strings); stable across processes and Python versions.

    Hashing rather than arithmetic keeps (seed 1, epoch 0) and (seed 0, epoch 1) apart.
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def generator(*parts) -> torch.Generator:
    """A CPU generator seeded with ``derive_seed(*parts)``."""
    return torch.Generator().manual_seed(derive_seed(*parts))
