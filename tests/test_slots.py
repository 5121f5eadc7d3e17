from __future__ import annotations

import itertools

import pytest

from lab.slots import SLOT_COUNT, key_slot, split_even


@pytest.mark.parametrize(("key", "slot"), [("foo", 12182), ("bar", 5061), ("hello", 866)])
def test_known_slots(key, slot):
    assert key_slot(key) == slot


def test_tutorial_keys_fall_in_the_ranges_the_tutorial_shows():
    ranges = split_even(3)
    shard_of = {k: next(i for i, (a, b) in enumerate(ranges) if a <= key_slot(k) <= b)
                for k in "abcdefgh"}
    assert shard_of == {"b": 0, "f": 0, "c": 1, "g": 1, "a": 2, "d": 2, "e": 2, "h": 2}


def test_hash_tags():
    assert key_slot("{user1000}.a") == key_slot("{user1000}.b") == key_slot("user1000")
    assert key_slot("foo{}{bar}") != key_slot("bar")  # empty first tag: the whole key
    assert key_slot("foo{{bar}}zap") == key_slot("{bar")


def test_split_even_matches_redis_cli_cluster_create():
    assert split_even(3) == [(0, 5460), (5461, 10922), (10923, 16383)]
    for shards in range(1, 12):
        ranges = split_even(shards)
        assert ranges[0][0] == 0 and ranges[-1][1] == SLOT_COUNT - 1
        assert all(b + 1 == c for (_, b), (c, _) in itertools.pairwise(ranges))
