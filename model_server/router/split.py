"""Which colour answers a request: pure functions of the weight, a sticky key, and a random draw."""

from __future__ import annotations

import hashlib

BLUE, GREEN = "blue", "green"


def sticky_bucket(key: str) -> int:
    """A stable bucket 0..99 for a sticky key (same key, same bucket, in every router replica)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % 100


def choose(green_weight: int, *, sticky_key: str | None, draw: float) -> str:
    """Green when the key's bucket (or ``draw`` in [0, 1) without a key) falls under the green weight.

    Buckets below the weight go green, so raising the weight only ever moves keys from blue to green.
    """
    bucket = sticky_bucket(sticky_key) if sticky_key else int(draw * 100)
    return GREEN if bucket < green_weight else BLUE
