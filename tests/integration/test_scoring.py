"""The scorer against a real Redis: dedup, redelivery, exactly-once learning, atomic state."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from stream.records import DeadLetter, Prediction
from stream.runtime.registry import ModelRegistry
from stream.runtime.scoring import Message, Outbox, Scorer
from stream.runtime.served import ServedModels
from stream.runtime.state import JournalEntry, StateStore
from stream.settings import Settings
from stream.usecases import DEMAND, FRAUD, USE_CASES

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC)


def tx(event_id: str, account: str = "acc-1", amount: float = 20.0, ts: dt.datetime = NOW) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "ts": ts.isoformat(),
            "account_id": account,
            "merchant_id": "m-1",
            "amount": amount,
            "currency": "EUR",
            "channel": "pos",
            "country": "FR",
        }
    )


def message(value: bytes, offset: int, topic: str = "transactions", partition: int = 0) -> Message:
    return Message(topic, partition, offset, value, NOW.timestamp())


def published(outbox: Outbox, settings: Settings, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(v) for t, _, v in outbox.records if t == settings.topic(topic)]


def predictions(outbox: Outbox, settings: Settings, topic: str = "predictions.fraud") -> list[Prediction]:
    return [Prediction.model_validate_json(v) for t, _, v in outbox.records if t == settings.topic(topic)]


def new_scorer(settings: Settings, client: aioredis.Redis) -> Scorer:
    served = ServedModels(settings, ModelRegistry(client, settings), USE_CASES)
    return Scorer(settings, StateStore(client, settings), served)


async def journal(scorer: Scorer, use_case: str = "fraud") -> list[JournalEntry]:
    return await scorer.state.read_journal(use_case, "0-0", 100_000)


async def joined(scorer: Scorer, use_case: str = "fraud") -> list[tuple[str, float]]:
    """(label source, target) of each label in the journal, in journal order."""
    return [(e.source or "", e.y) for e in await journal(scorer, use_case) if e.y is not None]


@pytest.fixture
async def scorer(settings: Settings) -> AsyncIterator[Scorer]:
    client = aioredis.Redis.from_url(settings.redis_url)
    yield new_scorer(settings, client)
    await client.aclose()


async def test_one_prediction_per_event_and_duplicates_dead_lettered(
    scorer: Scorer, settings: Settings
) -> None:
    batch = [message(tx(f"e{i}"), i) for i in range(5)] + [message(tx("e0"), 5)]
    outbox = await scorer.score(FRAUD, batch)

    scored = predictions(outbox, settings)
    assert [p.event_id for p in scored] == [f"e{i}" for i in range(5)]
    assert all(p.score is not None and 0.0 <= p.score <= 1.0 for p in scored)
    assert {(p.model, p.model_version, p.entity) for p in scored} == {("fraud", "fraud.0", "acc-1")}
    deadletter = settings.topic("deadletter")
    dead = [DeadLetter.model_validate_json(v) for t, _, v in outbox.records if t == deadletter]
    assert [(d.reason, d.offset) for d in dead] == [("duplicate_event", 5)]
    assert "transactions/0/0" in dead[0].detail


async def test_redelivery_republishes_the_same_prediction_without_touching_state(
    scorer: Scorer, settings: Settings
) -> None:
    first = await scorer.score(FRAUD, [message(tx("e1"), 7)])
    state_before = await scorer.state.entity("fraud", "acc-1")
    again = await scorer.score(FRAUD, [message(tx("e1"), 7)])
    assert again.records == first.records
    assert await scorer.state.entity("fraud", "acc-1") == state_before


async def test_labels_are_joined_exactly_once(scorer: Scorer, settings: Settings) -> None:
    await scorer.score(FRAUD, [message(tx(f"e{i}"), i) for i in range(3)])
    label = b'{"event_id": "e0", "is_fraud": true}'
    outbox = await scorer.join(
        FRAUD,
        [
            message(label, 0, "transactions.labels"),
            message(label, 0, "transactions.labels"),  # redelivered: silently the same outcome
            message(label, 1, "transactions.labels"),  # a second label for e0: dead-lettered
            message(b'{"event_id": "nope", "is_fraud": false}', 2, "transactions.labels"),
            message(b'{"event_id": "e1", "is_fraud": "no"}', 3, "transactions.labels"),
            message(b'{"event_id": "e2", "is_fraud": false}', 4, "transactions.labels"),
        ],
    )
    assert await joined(scorer) == [("transactions.labels/0/0", 1.0), ("transactions.labels/0/4", 0.0)]
    reasons = [d["reason"] for d in published(outbox, settings, "deadletter")]
    assert reasons == ["bad_type", "duplicate_label"]  # the label of "nope" waits for its event
    _, fraud_rate, _ = (await scorer.state.entity("fraud", "acc-1"))["label"]
    assert 0 < fraud_rate < 1


async def test_a_label_before_its_event_waits_for_it(scorer: Scorer, settings: Settings) -> None:
    label = message(b'{"event_id": "e9", "is_fraud": true}', 0, "transactions.labels")
    assert (await scorer.join(FRAUD, [label])).records == []
    assert (await scorer.join(FRAUD, [label])).records == []  # redelivered while parked
    second = await scorer.join(FRAUD, [message(label.value, 1, "transactions.labels")])
    assert [d["reason"] for d in published(second, settings, "deadletter")] == ["duplicate_label"]

    assert (await scorer.unpark(FRAUD)).records == []  # still waiting
    await scorer.score(FRAUD, [message(tx("e9"), 0)])
    assert (await scorer.unpark(FRAUD)).records == []
    assert await joined(scorer) == [("transactions.labels/0/0", 1.0)]
    assert await scorer.state.unpark("fraud", 10) == []


async def test_a_label_whose_event_never_comes_is_dead_lettered(settings: Settings) -> None:
    impatient = settings.replace(label_wait_seconds=0)
    client = aioredis.Redis.from_url(impatient.redis_url)
    scorer = new_scorer(impatient, client)
    label = b'{"event_id": "never", "is_fraud": false}'
    assert (await scorer.join(FRAUD, [message(label, 5, "transactions.labels")])).records == []
    [(_, _, value)] = (await scorer.unpark(FRAUD)).records
    dead = DeadLetter.model_validate_json(value)
    assert (dead.reason, dead.source_topic, dead.offset, dead.payload) == (
        "unknown_event",
        "transactions.labels",
        5,
        label.decode(),
    )
    assert (await scorer.unpark(FRAUD)).records == []
    await client.aclose()


async def test_label_after_the_ttl_is_expired(settings: Settings) -> None:
    short = settings.replace(label_ttl_seconds=1)
    client = aioredis.Redis.from_url(short.redis_url)
    scorer = new_scorer(short, client)
    await scorer.score(FRAUD, [message(tx("old"), 0)])
    await asyncio.sleep(1.2)
    outbox = await scorer.join(
        FRAUD, [message(b'{"event_id": "old", "is_fraud": true}', 0, "transactions.labels")]
    )
    assert [d["reason"] for d in published(outbox, settings, "deadletter")] == ["expired_event"]
    assert await joined(scorer) == []
    await client.aclose()


async def test_late_and_future_events(scorer: Scorer, settings: Settings) -> None:
    outbox = await scorer.score(
        FRAUD,
        [
            message(tx("late", ts=NOW - dt.timedelta(days=8)), 0),
            message(tx("future", ts=NOW + dt.timedelta(hours=1)), 1),
        ],
    )
    assert [d["reason"] for d in published(outbox, settings, "deadletter")] == ["late_event", "out_of_range"]


async def test_demand_forecasts_are_non_negative_and_learn(scorer: Scorer, settings: Settings) -> None:
    sale = {
        "event_id": "s1",
        "ts": NOW.isoformat(),
        "store_id": "st",
        "product_id": "p",
        "product_name": "Milk",
        "category": "dairy",
        "price": 1.0,
        "cost": None,
        "purchase_date": None,
        "sale_date": NOW.date().isoformat(),
        "expiry_date": None,
    }
    outbox = await scorer.score(DEMAND, [message(orjson.dumps(sale), 0, "sales")])
    [prediction] = predictions(outbox, settings, "predictions.demand")
    assert prediction.forecast is not None and prediction.forecast >= 0 and prediction.score is None
    await scorer.join(DEMAND, [message(b'{"event_id": "s1", "units_sold": 4}', 0, "sales.labels")])
    assert await joined(scorer, "demand") == [("sales.labels/0/0", 4.0)]


async def test_two_workers_never_corrupt_one_entity(settings: Settings) -> None:
    clients = [aioredis.Redis.from_url(settings.redis_url) for _ in range(2)]
    scorers = [new_scorer(settings, c) for c in clients]
    batches = [
        [message(tx(f"w{w}-{i}", amount=10.0 + i), i, partition=w) for i in range(200)] for w in range(2)
    ]
    # Many small batches from both workers at once, interleaving on the one entity.
    await asyncio.gather(
        *(s.score(FRAUD, batches[w][i : i + 10]) for w, s in enumerate(scorers) for i in range(0, 200, 10))
    )
    state = await scorers[0].state.entity("fraud", "acc-1")
    assert state["n"] == 400 and state["amount"][0] == 400
    for c in clients:
        await c.aclose()


async def test_the_journal_holds_each_scored_event_and_joined_label_once(
    scorer: Scorer, settings: Settings
) -> None:
    batch = [message(tx(f"e{i}", amount=10.0 + i), i) for i in range(3)]
    await scorer.score(FRAUD, batch)
    await scorer.score(FRAUD, batch)  # redelivered: no new entries
    label = message(b'{"event_id": "e1", "is_fraud": true}', 0, "transactions.labels")
    await scorer.join(FRAUD, [label, label])
    entries = await journal(scorer)
    assert [(e.y, e.source, e.pending["model_version"]) for e in entries] == [
        (None, None, "fraud.0"),
        (None, None, "fraud.0"),
        (None, None, "fraud.0"),
        (1.0, "transactions.labels/0/0", "fraud.0"),
    ]
    assert entries[3].pending == entries[1].pending  # the label brings its event's features
    assert entries[0].time <= entries[3].time
