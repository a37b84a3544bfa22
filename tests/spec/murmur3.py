"""A plain-Python MurmurHash3 (x86, 32-bit), written from the algorithm's description.

It lets the golden cases be checked against a second, independent hash, so a
change in the `mmh3` package (or a port to another language) cannot shift
buckets unnoticed.
"""

from __future__ import annotations

C1, C2 = 0xCC9E2D51, 0x1B873593
MASK = 0xFFFFFFFF


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & MASK


def murmur3_32(data: bytes, seed: int = 0) -> int:
    h = seed & MASK
    n = len(data)
    whole = n - n % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = _rotl((k * C1) & MASK, 15)
        h ^= (k * C2) & MASK
        h = (_rotl(h, 13) * 5 + 0xE6546B64) & MASK
    tail = data[whole:]
    if tail:
        k = int.from_bytes(tail, "little")
        k = _rotl((k * C1) & MASK, 15)
        h ^= (k * C2) & MASK
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & MASK
    h ^= h >> 16
    return h


def reference_bucket(salt: str, unit_id: str) -> int:
    return murmur3_32(f"{salt}:{unit_id}".encode()) % 10_000
