"""Personal data against a real Redis and broker: with ``SCORING_PII_KEY`` no clear entity id is
stored anywhere in Redis (a SCAN of every key and value); ``erase`` removes one entity's keys and
entries, leaves the others', says what it removed, and is recorded on ``audit``; the API's
``DELETE`` asks for the token."""

from __future__ import annotations

import asyncio
import csv
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from consumers.reader import read
from stream.records import AuditRecord, Prediction
from stream.redis_client import RedisClient, redis_client
from stream.runtime.erase import erase
from stream.runtime.joining import LabelJoiner
from stream.runtime.keys import entity_key
from stream.runtime.outbox import Message, Outbox
from stream.runtime.registry import ModelRegistry
from stream.runtime.scoring import Scorer
from stream.runtime.served import ServedModels
from stream.runtime.state import StateStore
from stream.settings import Settings
from stream.usecases import DEMAND, FRAUD
from tests.apiclient import START, bootstrap_both, in_process, transaction, until_ready

pytestmark = pytest.mark.integration

PII_KEY = "a test key, not a secret"
ALICE, BOB, CAROL = "acc-alice-7341", "acc-bob-2290", "acc-carol-5120"
MERCHANT = "m-shop-5501"
STORE, PRODUCT, OTHER_PRODUCT = "store-8812", "p-berry-4410", "p-other-1"
CLEAR = (ALICE, BOB, CAROL, MERCHANT, STORE, PRODUCT, OTHER_PRODUCT)


def tx(event_id: str, account: str) -> bytes:
    return orjson.dumps(orjson.loads(transaction(event_id, account)) | {"merchant_id": MERCHANT})


def sale(event_id: str, product: str = PRODUCT) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "ts": START.isoformat(),
            "store_id": STORE,
            "product_id": product,
            "product_name": "Berries 500g",
            "category": "fruit",
            "price": 3.5,
            "cost": 2.0,
            "purchase_date": "2026-03-01",
            "sale_date": "2026-03-04",
            "expiry_date": "2026-03-08",
        }
    )


def messages(topic: str, values: Sequence[bytes], first: int = 0) -> list[Message]:
    return [Message(topic, 0, first + i, value, START.timestamp()) for i, value in enumerate(values)]


class Worker:
    """A worker's scoring and joining steps on the test's Redis."""

    def __init__(self, settings: Settings, client: RedisClient) -> None:
        self.state = StateStore(client, settings)
        models = ServedModels(settings, ModelRegistry(client, settings), settings.use_cases)
        self.scorer = Scorer(settings, self.state, models)
        self.joiner = LabelJoiner(settings, self.state)

    async def run(self) -> Outbox:
        """Alice's and Bob's transactions, two products' sales and labels: some joined, one parked
        for an event scored after it (so still parked), one waiting for an event never scored."""
        txs = [tx(f"a{i}", ALICE) for i in range(4)] + [tx(f"b{i}", BOB) for i in range(3)]
        outbox = await self.scorer.score(FRAUD, messages("transactions", txs))
        await self.scorer.score(
            DEMAND, messages("sales", [sale("s0"), sale("s1"), sale("s2", OTHER_PRODUCT)])
        )
        labels = [b'{"event_id": "%s", "is_fraud": false}' % e for e in (b"a0", b"b0", b"a-late", b"never")]
        await self.joiner.join(FRAUD, messages("transactions.labels", labels))
        await self.joiner.join(DEMAND, messages("sales.labels", [b'{"event_id": "s0", "units_sold": 4}']))
        late = messages("transactions", [tx("a-late", ALICE)], 7)
        outbox.records += (await self.scorer.score(FRAUD, late)).records
        return outbox


@pytest.fixture
def pii_settings(settings: Settings) -> Settings:
    return settings.replace(pii_key=PII_KEY, max_event_age_seconds=0)


@pytest.fixture
async def client(pii_settings: Settings) -> AsyncIterator[RedisClient]:
    client = redis_client(pii_settings)
    yield client
    await client.aclose()


async def stored(client: RedisClient, settings: Settings) -> dict[bytes, bytes]:
    """Every key of the test's namespace and its value, whatever its type, as bytes."""
    found: dict[bytes, bytes] = {}
    async for key in client.scan_iter(match=f"{settings.namespace}:*", count=1000):
        kind = cast(bytes, await client.type(key)).decode()
        value: Any
        if kind == "string":
            value = await client.get(key)
        elif kind == "hash":
            value = await client.hgetall(key)
        elif kind == "set":
            value = sorted(await client.smembers(key))
        elif kind == "zset":
            value = await client.zrange(key, 0, -1)
        elif kind == "list":
            value = await client.lrange(key, 0, -1)
        elif kind == "stream":
            value = await client.xrange(key)
        else:
            raise AssertionError(f"{key!r} is a {kind}: unknown to this test")
        found[key] = repr(value).encode()
    return found


def holding(blobs: dict[bytes, bytes], text: str) -> list[bytes]:
    """The keys whose name or value holds ``text``."""
    needle = text.encode()
    return [key for key, value in blobs.items() if needle in key or needle in value]


@pytest.mark.parametrize("redis_mode", ["single", "cluster"], indirect=True)
async def test_no_clear_id_is_stored_and_erase_removes_one_account_only(
    pii_settings: Settings, client: RedisClient
) -> None:
    worker = Worker(pii_settings, client)
    outbox = await worker.run()

    # Predictions keep the clear entity: downstream consumers key on it.
    published = [(k, Prediction.model_validate_json(v)) for t, k, v in outbox.records if "predictions" in t]
    assert {(k.decode(), p.entity) for k, p in published} == {(ALICE, ALICE), (BOB, BOB)}
    # A redelivery republishes the very bytes first published, clear entity included.
    again = await worker.scorer.score(FRAUD, messages("transactions", [tx("a0", ALICE)]))
    assert [v for _, _, v in again.records] == [v for _, _, v in outbox.records if b'"event_id":"a0"' in v]

    before = await stored(client, pii_settings)
    assert len(before) > 10
    for text in CLEAR:
        assert holding(before, text) == [], text
    alice = entity_key([ALICE], pii_settings.pii_secret)
    bob = entity_key([BOB], pii_settings.pii_secret)
    assert holding(before, alice) and holding(before, bob)

    erased = await erase(client, pii_settings, FRAUD, [ALICE])
    assert (erased.target, erased.events, erased.parked_labels) == (alice, 5, 1)
    # the entity and its 2 sets, 5 events, 4 pending records (a0's was learned); on a cluster, 5 routes
    assert erased.keys == 3 + 5 + 4 + (5 if pii_settings.redis_cluster else 0)
    assert erased.journal_entries == 6  # 5 scored, 1 label joined
    after = await stored(client, pii_settings)
    assert holding(after, alice) == []
    assert not [key for key in after if re.search(rb":(event|pending|route):a(\d|-late)$", key)]
    assert {k: after[k] for k in holding(after, bob) if bob.encode() in k} == {
        k: before[k] for k in holding(before, bob) if bob.encode() in k
    }
    assert len(holding(after, bob)) == len(holding(before, bob))
    assert (await worker.state.statuses("fraud", ["b0", "b1", "never"])) == ["learned", "scored", None]

    again_erased = await erase(client, pii_settings, FRAUD, [ALICE])
    assert (again_erased.keys, again_erased.events, again_erased.journal_entries) == (0, 0, 0)

    product = await erase(client, pii_settings, DEMAND, [STORE, PRODUCT])
    assert (product.events, product.journal_entries) == (2, 3)
    assert await worker.state.entity("demand", entity_key([STORE, OTHER_PRODUCT], pii_settings.pii_secret))
    assert holding(await stored(client, pii_settings), product.target) == []


async def test_without_a_key_ids_are_stored_as_today_and_erase_works_on_them(
    settings: Settings,
) -> None:
    settings = settings.replace(max_event_age_seconds=0)
    client = redis_client(settings)
    try:
        await Worker(settings, client).run()
        assert holding(await stored(client, settings), f"entity:{ALICE}")
        erased = await erase(client, settings, FRAUD, [ALICE])
        assert (erased.target, erased.events) == (ALICE, 5)
        assert holding(await stored(client, settings), ALICE) == []
    finally:
        await client.aclose()


def history_ids(folder: Path) -> set[str]:
    """The account, store and product ids of the history files bootstrapped from ``folder``."""
    ids: set[str] = set()
    for path, fields in (
        (folder / "history.fraud.csv", ("account_id",)),
        (folder / "history.demand.csv", ("store_id", "product_id")),
    ):
        with path.open() as rows:
            ids |= {row[f] for row in csv.DictReader(rows) for f in fields if row[f]}
    return ids


def erase_command(settings: Settings, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream.tools.cli", "erase", *options],
        env={**os.environ, **settings.environment()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_bootstrapped_state_checkpoint_and_snapshots_hold_no_clear_id_and_erase_is_audited(
    pii_settings: Settings, client: RedisClient, tmp_path: Path
) -> None:
    await asyncio.to_thread(bootstrap_both, pii_settings, tmp_path)
    await Worker(pii_settings, client).run()
    ids = history_ids(tmp_path) | set(CLEAR)
    assert len(ids) > 1000
    shaped = re.compile(rb"(acc|store|p|m)-[a-z]*-?\d+")  # the shape of every id above
    everything = await stored(client, pii_settings)
    assert any(b"checkpoint" in key for key in everything) and any(b"snapshot" in key for key in everything)
    found = {
        m.group().decode() for blob in [*everything, *everything.values()] for m in shaped.finditer(blob)
    }
    assert found & ids == set()

    done = erase_command(pii_settings, "--account", ALICE)
    assert done.returncode == 0, done.stderr
    alice = entity_key([ALICE], pii_settings.pii_secret)
    assert done.stdout.startswith("fraud: removed 12 keys (5 events), 6 journal entries and 1 parked labels")
    assert erase_command(pii_settings, "--store", STORE, "--product", PRODUCT).returncode == 0
    assert erase_command(pii_settings, "--store", STORE).returncode == 2
    records = [m.parse() for m in read(pii_settings, ["audit"], idle_timeout=2.0)]
    erases = [r for r in records if isinstance(r, AuditRecord) and r.action == "erase"]
    assert sorted((r.model, r.target, r.detail[:15]) for r in erases) == [
        ("demand", entity_key([STORE, PRODUCT], pii_settings.pii_secret), "removed 4 keys "),
        ("fraud", alice, "removed 12 keys"),
    ]
    assert all("@" in r.actor for r in erases)
    assert not [text for text in CLEAR for r in erases if text in r.to_json().decode()]


async def test_the_api_scores_with_clear_entities_erases_with_the_token_only_and_records_it(
    pii_settings: Settings, client: RedisClient, tmp_path: Path
) -> None:
    await asyncio.to_thread(bootstrap_both, pii_settings, tmp_path)
    await Worker(pii_settings, client).run()
    async with in_process(pii_settings.replace(api_token="s3cret")) as api:
        allowed = {"Authorization": "Bearer s3cret"}
        await until_ready(api)
        first = await api.post("/v1/score/fraud", content=tx("c0", CAROL), headers=allowed)
        again = await api.post("/v1/score/fraud", content=tx("c0", CAROL), headers=allowed)
        assert first.status_code == again.status_code == 200, first.text
        assert again.content == first.content and first.json()["entity"] == CAROL
        other = await api.post("/v1/score/fraud", content=tx("c0", BOB), headers=allowed)
        assert (other.status_code, other.json()["reason"]) == (409, "duplicate_event")
        assert holding(await stored(client, pii_settings), CAROL) == []
        for headers in ({}, {"Authorization": "Bearer guess"}):
            refused = await api.delete(f"/v1/entities/fraud/{ALICE}", headers=headers)
            assert (refused.status_code, refused.json()["reason"]) == (401, "unauthorized")
        assert holding(await stored(client, pii_settings), entity_key([ALICE], pii_settings.pii_secret))
        answer = await api.delete(f"/v1/entities/fraud/{ALICE}", headers=allowed)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["entity"], body["keys_removed"], body["events"]) == (
            entity_key([ALICE], pii_settings.pii_secret),
            12,
            5,
        )
        repeated = (await api.delete(f"/v1/entities/fraud/{ALICE}", headers=allowed)).json()
        assert (repeated["keys_removed"], repeated["events"]) == (0, 0)
        demand = await api.delete(f"/v1/entities/demand/{STORE}/{PRODUCT}", headers=allowed)
        assert (demand.status_code, demand.json()["events"]) == (200, 2)
        assert (await api.delete(f"/v1/entities/demand/{STORE}", headers=allowed)).status_code == 404
    records = [m.parse() for m in read(pii_settings, ["audit"], idle_timeout=2.0)]
    assert sorted(r.id for r in records if isinstance(r, AuditRecord)) == sorted(
        [body["audit_record"], repeated["audit_record"], demand.json()["audit_record"]]
    )
    assert all(isinstance(r, AuditRecord) and r.actor.startswith("api@") for r in records)
