"""Where keys live: one Redis keeps the keys it always had; on a cluster, ids never choose a slot
and the buckets share the masters' slot ranges evenly; with a PII key, entities are keyed hashes."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from stream.records import Rejection, parse
from stream.runtime.keys import buckets, encode, entity_key, hash_tagged, observed, pseudonym, recorded_name
from stream.settings import Settings
from stream.usecases import FRAUD
from tests.apiclient import transaction

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


def test_with_a_pii_key_an_entity_is_a_keyed_hash_that_keeps_entities_apart() -> None:
    secret = Settings(pii_key="k1").pii_secret
    assert secret is not None and Settings().pii_secret is None
    keys = {entity_key(ids, secret) for ids in [("a:b", "c"), ("a", "b:c"), ("acc-1",), ("acc-2",)]}
    assert len(keys) == 4
    assert all(re.fullmatch("[0-9a-f]{32}", key) for key in keys)  # never key syntax
    assert entity_key(("acc-1",), b"k2") not in keys  # another key, other hashes
    assert recorded_name(("store-1", "p-1"), None) == "store-1:p-1"  # as predictions name it
    assert recorded_name(("store-1", "p-1"), secret) == entity_key(("store-1", "p-1"), secret)


def test_with_a_pii_key_the_values_an_entity_remembers_are_hashed_and_the_rest_kept() -> None:
    event = parse(FRAUD.event_type, transaction("e1", account="acc-1"))
    assert not isinstance(event, Rejection)
    clear = observed(FRAUD.features, event, None)
    hidden = observed(FRAUD.features, event, b"k1")
    assert clear == FRAUD.features.observe(event) and clear.members["merchant_id"] == "m-1"
    assert hidden.members == {m: pseudonym(b"k1", v) for m, v in clear.members.items()}
    assert (hidden.ts, hidden.stats) == (clear.ts, clear.stats)
    assert "pii-s3cret" not in repr(Settings(pii_key="pii-s3cret"))  # a secret: never in a log line


@given(st.text())
def test_an_id_is_encoded_as_quote_encodes_it(value: str) -> None:
    # encode() skips quote() for ids that need no escape: the same answer, whatever the id.
    assert encode(value) == quote(value, safe="")
    assert encode(value + "\n") == quote(value, safe="") + "%0A"  # fullmatch: no match up to a newline
