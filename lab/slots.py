"""Redis Cluster key slots: redis-py's `key_slot`, and the ranges `--cluster create` assigns."""

from __future__ import annotations

from redis.crc import key_slot as _redis_key_slot

SLOT_COUNT = 16384


def key_slot(key: str | bytes) -> int:
    """The key's slot, as redis-py computes it (CRC16/XMODEM of the key or its hash tag)."""
    return int(_redis_key_slot(key.encode() if isinstance(key, str) else key))


def split_even(shards: int) -> list[tuple[int, int]]:
    """The ranges `redis-cli --cluster create` assigns to `shards` masters."""
    per = SLOT_COUNT / shards
    ranges = []
    first, cursor = 0, 0.0
    for index in range(shards):
        last = SLOT_COUNT - 1 if index == shards - 1 else round(cursor + per - 1)
        last = max(last, first)
        ranges.append((first, last))
        first, cursor = last + 1, cursor + per
    return ranges
