"""Where keys live: one Redis keeps the keys it always had; on a cluster, ids never choose a slot
and the buckets share the masters' slot ranges evenly."""

from __future__ import annotations

import pytest
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from stream.runtime.keys import buckets, encode, entity_key, hash_tagged
from stream.settings import Settings

CLUSTER = Settings(namespace="t1", redis_cluster=True)
# Ids that hold hash tags, key separators and escapes.
IDS = ["{acc}1", "{acc}2", "a:{b}", "}{", "{}", "acc-1", "%7Bacc%7D1", "x:event:y"]


def test_one_redis_keeps_the_keys_of_earlier_releases() -> None:
    layout = buckets(Settings(namespace="t1"), "fraud")
    assert layout.prefixes == ("t1:fraud:",) and not layout.routed
    assert layout.of(entity_key(("{acc}1",))) == 0
    assert hash_tagged(Settings(), "fraud") == "fraud"


@pytest.mark.parametrize("use_case", ["fraud", "demand"])
def test_an_id_never_chooses_the_slot_of_its_key(use_case: str) -> None:
    layout = buckets(CLUSTER, use_case)
    for value in IDS:
        for part in (encode(value), entity_key((value, value))):
            prefix = layout.prefixes[layout.of(part)]
            for kind in ("event", "route", "entity", "seen:merchant_id"):
                assert key_slot(f"{prefix}{kind}:{part}".encode()) == key_slot(prefix.encode()), (value, kind)
    # Two ids that share what a hash tag would read in them are spread by the whole id.
    assert len({layout.of(encode(f"{{acc}}{n}")) for n in range(100)}) == CLUSTER.redis_cluster_buckets


@pytest.mark.parametrize("count", [3, 16, 100])
@pytest.mark.parametrize("use_case", ["fraud", "demand"])
def test_the_buckets_share_equal_slot_ranges_evenly(count: int, use_case: str) -> None:
    slots = [
        key_slot(p.encode()) for p in buckets(CLUSTER.replace(redis_cluster_buckets=count), use_case).prefixes
    ]
    assert len(set(slots)) == count
    for masters in (3, 5):  # a cluster gives each master an equal range of slots
        per_master = [0] * masters
        for slot in slots:
            per_master[slot * masters // REDIS_CLUSTER_HASH_SLOTS] += 1
        assert max(per_master) - min(per_master) <= 2, per_master
