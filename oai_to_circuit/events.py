"""UsageRecord -> HEC event: the wire format Splunk receives, and the subkey hash the service uses."""
from __future__ import annotations

import hashlib

HASH_PREFIX = "sha256:"


def hash_subkey(subkey: str) -> str:
    """``sha256:`` + first 16 hex of SHA-256, as the live service sends it; never hashes twice."""
    if subkey.startswith(HASH_PREFIX):
        return subkey
    return HASH_PREFIX + hashlib.sha256(subkey.encode("utf-8")).hexdigest()[:16]


def is_hashed(subkey: str) -> bool:
    return subkey.startswith(HASH_PREFIX)
