"""Scoring and label joining against a real Redis: dedup, redelivery, exactly-once learning,
atomic state, and ids that are data, never key syntax."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from stream.records import DeadLetter, Prediction
from stream.redis_client import RedisClient, redis_client
from stream.runtime.joining import LabelJoiner
from stream.runtime.keys import entity_key
from stream.runtime.outbox import Message, Outbox
from stream.runtime.registry import ModelRegistry
from stream.runtime.scoring import Scorer
from stream.runtime.served import ServedModels
from stream.runtime.state import JournalEntry, ScriptError, StateStore
from stream.settings import Settings
from stream.usecases import DEMAND, FRAUD, USE_CASES, UseCase

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("redis_mode", ["single", "cluster"], indirect=True),
]

NOW = dt.datetime.now(dt.UTC)


def tx(
    event_id: str, account: str = "acc-1", amount: float = 20.0, ts: dt.datetime = NOW, merchant: str = "m-1"
) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "ts": ts.isoformat(),
            "account_id": account,
            "merchant_id": merchant,
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


ACC_1 = entity_key(("acc-1",))


@dataclass(frozen=True)
class Steps:
    """A worker's two steps on one Redis: scoring events, joining labels."""

    scorer: Scorer
    joiner: LabelJoiner
    state: StateStore


def new_steps(
    settings: Settings, client: RedisClient, use_cases: Sequence[UseCase[Any, Any]] = USE_CASES
) -> Steps:
    state = StateStore(client, settings)
    served = ServedModels(settings, ModelRegistry(client, settings), use_cases)
    return Steps(Scorer(settings, state, served), LabelJoiner(settings, state), state)


async def journal(steps: Steps, use_case: UseCase[Any, Any] = FRAUD) -> list[JournalEntry]:
    """Every entry written so far. On a cluster the merged read returns an entry only once
    every node's clock has passed it, so read on until two reads 50 ms apart bring nothing."""
    entries: list[JournalEntry] = []
    quiet = 0
    while quiet < 2:
        more = await steps.state.read_journal(use_case, entries[-1].position if entries else "0-0", 100_000)
        entries += more
        quiet = 0 if more else quiet + 1
        if not more:
            await asyncio.sleep(0.05)
    return entries


async def joined(steps: Steps, use_case: UseCase[Any, Any] = FRAUD) -> list[tuple[str, float]]:
    """(label source, target) of each label in the journal, in journal order."""
    return [(e.source or "", e.y) for e in await journal(steps, use_case) if e.y is not None]


async def test_one_prediction_per_event_and_duplicates_dead_lettered(
    steps: Steps, settings: Settings
) -> None:
    batch = [message(tx(f"e{i}"), i) for i in range(5)] + [message(tx("e0"), 5)]
    outbox = await steps.scorer.score(FRAUD, batch)

    scored = predictions(outbox, settings)
    assert [p.event_id for p in scored] == [f"e{i}" for i in range(5)]
    assert all(p.score is not None and 0.0 <= p.score <= 1.0 for p in scored)
    assert {(p.model, p.model_version, p.entity) for p in scored} == {("fraud", "fraud.0", "acc-1")}
    deadletter = settings.topic("deadletter")
    dead = [DeadLetter.model_validate_json(v) for t, _, v in outbox.records if t == deadletter]
    assert [(d.reason, d.offset) for d in dead] == [("duplicate_event", 5)]
    assert "transactions/0/0" in dead[0].detail


async def test_an_event_id_read_again_with_another_entity_is_a_duplicate(
    steps: Steps, settings: Settings
) -> None:
    await steps.scorer.score(FRAUD, [message(tx("e1", account="acc-1"), 0)])
    outbox = await steps.scorer.score(FRAUD, [message(tx("e1", account="acc-2"), 1)])
    assert [d["reason"] for d in published(outbox, settings, "deadletter")] == ["duplicate_event"]
    assert await steps.state.entity(FRAUD, entity_key(("acc-2",))) == {}


async def test_redelivery_republishes_the_same_prediction_without_touching_state(
    steps: Steps, settings: Settings
) -> None:
    first = await steps.scorer.score(FRAUD, [message(tx("e1"), 7)])
    state_before = await steps.state.entity(FRAUD, ACC_1)
    again = await steps.scorer.score(FRAUD, [message(tx("e1"), 7)])
    assert again.records == first.records
    assert await steps.state.entity(FRAUD, ACC_1) == state_before


@pytest.mark.parametrize(("partition", "offset"), [(0, 0), (9, 10), (123, 124), (2, 2**40 + 10)])
async def test_a_source_is_kept_whatever_bytes_it_packs_into(
    steps: Steps, settings: Settings, partition: int, offset: int
) -> None:
    # A record (and on a cluster an id's route) packs a source of its use case's event topic
    # into varints: here they hold newlines (10), '|' (124) and zero bytes, which the
    # script must not read as separators.
    topic = settings.topic(FRAUD.event_topic)
    first = await steps.scorer.score(FRAUD, [message(tx("e1"), offset, topic, partition)])
    again = await steps.scorer.score(FRAUD, [message(tx("e1"), offset, topic, partition)])
    assert again.records == first.records
    duplicate = await steps.scorer.score(FRAUD, [message(tx("e1"), offset + 1, topic, partition)])
    (dead,) = published(duplicate, settings, "deadletter")
    assert dead["reason"] == "duplicate_event"
    assert dead["detail"].endswith(f" {topic}/{partition}/{offset}")
    await steps.joiner.join(
        FRAUD, [message(b'{"event_id": "e1", "is_fraud": true}', 3, "transactions.labels")]
    )
    assert await joined(steps) == [("transactions.labels/0/3", 1.0)]


async def test_a_record_of_the_earlier_layout_is_never_read_as_this_ones(
    steps: Steps, settings: Settings
) -> None:
    await steps.scorer.score(FRAUD, [message(tx("e1"), 0)])
    layout = steps.state.buckets(FRAUD.name)
    key = f"{layout.prefixes[layout.of(ACC_1)]}event:e1"
    client = redis_client(settings)
    try:
        record = await client.get(key)
        assert record is not None and record.startswith(b"S" + ACC_1.encode() + b"\n")
        # Before the header was packed: status `s`, the source as text, then the entity.
        _, _, pending = record.split(b"\n", 2)  # the source read from "transactions" is text
        earlier = b"s" + b"transactions/0/0\n" + ACC_1.encode() + b"\n" + pending
        await client.set(key, earlier)
        await steps.joiner.join(
            FRAUD, [message(b'{"event_id": "e1", "is_fraud": true}', 0, "transactions.labels")]
        )
        assert await joined(steps) == [] and await client.get(key) == earlier  # waits, as for no event
        with pytest.raises(ScriptError, match="status b's'"):
            await steps.scorer.score(FRAUD, [message(tx("e1"), 0)])
    finally:
        await client.aclose()


async def test_labels_are_joined_exactly_once(steps: Steps, settings: Settings) -> None:
    await steps.scorer.score(FRAUD, [message(tx(f"e{i}"), i) for i in range(3)])
    label = b'{"event_id": "e0", "is_fraud": true}'
    outbox = await steps.joiner.join(
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
    assert await joined(steps) == [("transactions.labels/0/0", 1.0), ("transactions.labels/0/4", 0.0)]
    reasons = [d["reason"] for d in published(outbox, settings, "deadletter")]
    assert reasons == ["bad_type", "duplicate_label"]  # the label of "nope" waits for its event
    _, fraud_rate, _ = (await steps.state.entity(FRAUD, ACC_1))["stats"]["label"]
    assert 0 < fraud_rate < 1


async def test_a_label_before_its_event_waits_for_it(steps: Steps, settings: Settings) -> None:
    label = message(b'{"event_id": "e9", "is_fraud": true}', 0, "transactions.labels")
    assert (await steps.joiner.join(FRAUD, [label])).records == []
    assert (await steps.joiner.join(FRAUD, [label])).records == []  # redelivered while parked
    second = await steps.joiner.join(FRAUD, [message(label.value, 1, "transactions.labels")])
    assert [d["reason"] for d in published(second, settings, "deadletter")] == ["duplicate_label"]

    assert (await steps.joiner.unpark(FRAUD)).records == []  # still waiting
    await steps.scorer.score(FRAUD, [message(tx("e9"), 0)])
    assert (await steps.joiner.unpark(FRAUD)).records == []
    assert await joined(steps) == [("transactions.labels/0/0", 1.0)]
    assert await steps.state.unpark(FRAUD, 10) == []


async def test_a_label_whose_event_never_comes_is_dead_lettered(settings: Settings) -> None:
    impatient = settings.replace(label_wait_seconds=0)
    client = redis_client(impatient)
    steps = new_steps(impatient, client)
    label = b'{"event_id": "never", "is_fraud": false}'
    assert (await steps.joiner.join(FRAUD, [message(label, 5, "transactions.labels")])).records == []
    [(_, _, value)] = (await steps.joiner.unpark(FRAUD)).records
    dead = DeadLetter.model_validate_json(value)
    assert (dead.reason, dead.source_topic, dead.offset, dead.payload) == (
        "unknown_event",
        "transactions.labels",
        5,
        label.decode(),
    )
    assert (await steps.joiner.unpark(FRAUD)).records == []
    await client.aclose()


async def test_label_after_the_ttl_is_expired(settings: Settings) -> None:
    short = settings.replace(label_ttl_seconds=1)
    client = redis_client(short)
    steps = new_steps(short, client)
    await steps.scorer.score(FRAUD, [message(tx("old"), 0)])
    await asyncio.sleep(1.2)
    outbox = await steps.joiner.join(
        FRAUD, [message(b'{"event_id": "old", "is_fraud": true}', 0, "transactions.labels")]
    )
    assert [d["reason"] for d in published(outbox, settings, "deadletter")] == ["expired_event"]
    assert await joined(steps) == []
    await client.aclose()


async def test_late_and_future_events(steps: Steps, settings: Settings) -> None:
    outbox = await steps.scorer.score(
        FRAUD,
        [
            message(tx("late", ts=NOW - dt.timedelta(days=8)), 0),
            message(tx("future", ts=NOW + dt.timedelta(hours=1)), 1),
        ],
    )
    assert [d["reason"] for d in published(outbox, settings, "deadletter")] == ["late_event", "out_of_range"]


def sale(event_id: str, store: str = "st", product: str = "p") -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "ts": NOW.isoformat(),
            "store_id": store,
            "product_id": product,
            "product_name": "Milk",
            "category": "dairy",
            "price": 1.0,
            "cost": None,
            "purchase_date": None,
            "sale_date": NOW.date().isoformat(),
            "expiry_date": None,
        }
    )


async def test_demand_forecasts_are_non_negative_and_learn(steps: Steps, settings: Settings) -> None:
    outbox = await steps.scorer.score(DEMAND, [message(sale("s1"), 0, "sales")])
    [prediction] = predictions(outbox, settings, "predictions.demand")
    assert prediction.forecast is not None and prediction.forecast >= 0 and prediction.score is None
    await steps.joiner.join(DEMAND, [message(b'{"event_id": "s1", "units_sold": 4}', 0, "sales.labels")])
    assert await joined(steps, DEMAND) == [("sales.labels/0/0", 4.0)]


async def test_two_workers_never_corrupt_one_entity(settings: Settings) -> None:
    rescored_before = REGISTRY.get_sample_value("scoring_rescored_events_total", {"model": FRAUD.name}) or 0
    clients = [redis_client(settings) for _ in range(2)]
    workers = [new_steps(settings, c) for c in clients]
    batches = [
        [message(tx(f"w{w}-{i}", amount=10.0 + i), i, partition=w) for i in range(200)] for w in range(2)
    ]
    # Many small batches from both workers at once, interleaving on the one entity.
    await asyncio.gather(
        *(
            s.scorer.score(FRAUD, batches[w][i : i + 10])
            for w, s in enumerate(workers)
            for i in range(0, 200, 10)
        )
    )
    state = await workers[0].state.entity(FRAUD, ACC_1)
    assert state["n"] == 400 and state["stats"]["amount"][0] == 400
    rescored = REGISTRY.get_sample_value("scoring_rescored_events_total", {"model": FRAUD.name})
    assert rescored and rescored > rescored_before  # the two raced: some were read and scored again
    for c in clients:
        await c.aclose()


async def test_the_journal_holds_each_scored_event_and_joined_label_once(
    steps: Steps, settings: Settings
) -> None:
    batch = [message(tx(f"e{i}", amount=10.0 + i), i) for i in range(3)]
    await steps.scorer.score(FRAUD, batch)
    await steps.scorer.score(FRAUD, batch)  # redelivered: no new entries
    label = message(b'{"event_id": "e1", "is_fraud": true}', 0, "transactions.labels")
    await steps.joiner.join(FRAUD, [label, label])
    entries = await journal(steps)
    assert [(e.y, e.source, e.pending["model_version"]) for e in entries] == [
        (None, None, "fraud.0"),
        (None, None, "fraud.0"),
        (None, None, "fraud.0"),
        (1.0, "transactions.labels/0/0", "fraud.0"),
    ]
    assert entries[3].pending == entries[1].pending  # the label brings its event's features
    assert entries[0].time <= entries[3].time


# Ids that are key syntax, or look like it, and ids at the contract's limits.
CRAFTED_IDS = [
    "x",
    "x:merchant",
    "x:country",
    "seen:merchant:x",
    "entity:x",
    "a:b",
    "a",
    "b:c",
    "{tag}x",
    "x%3Amerchant",
    "100%",
    " spaced id\t",
    "compte-été-账户-🙂",
    "z" * 200,
    "ü" * 200,
]


def crafted_event_id(n: int, account: str) -> str:
    return f"{n}:{account}"[:200]


async def test_crafted_ids_are_scored_and_never_share_state(steps: Steps, settings: Settings) -> None:
    # Two transactions per account, each at a merchant named like another account's key.
    batch = [
        message(tx(crafted_event_id(n, account), account=account, merchant=CRAFTED_IDS[-1 - i]), 2 * i + n)
        for i, account in enumerate(CRAFTED_IDS)
        for n in range(2)
    ]
    outbox = await steps.scorer.score(FRAUD, batch)
    assert published(outbox, settings, "deadletter") == []
    assert sorted(p.event_id for p in predictions(outbox, settings)) == sorted(
        crafted_event_id(n, account) for account in CRAFTED_IDS for n in range(2)
    )
    assert {p.entity for p in predictions(outbox, settings)} == set(CRAFTED_IDS)
    for account in CRAFTED_IDS:
        state = await steps.state.entity(FRAUD, entity_key((account,)))
        assert (state["n"], state["stats"]["amount"][0]) == (2, 2), account
    # Labels by crafted event ids join their own event only.
    labels = [
        message(
            orjson.dumps({"event_id": crafted_event_id(0, a), "is_fraud": i % 2 == 0}),
            i,
            "transactions.labels",
        )
        for i, a in enumerate(CRAFTED_IDS)
    ]
    assert published(await steps.joiner.join(FRAUD, labels), settings, "deadletter") == []
    assert len(await joined(steps)) == len(CRAFTED_IDS)


async def test_a_product_at_a_store_is_one_entity_however_its_ids_read(
    steps: Steps, settings: Settings
) -> None:
    pairs = [("a:b", "c"), ("a", "b:c"), ("a:b:c", "x"), ("a", "b"), ("a:", "b"), ("a", ":b")]
    batch = [message(sale(f"s{i}", store, product), i, "sales") for i, (store, product) in enumerate(pairs)]
    outbox = await steps.scorer.score(DEMAND, batch)
    assert len(predictions(outbox, settings, "predictions.demand")) == len(pairs)
    for store, product in pairs:
        assert (await steps.state.entity(DEMAND, entity_key((store, product))))["n"] == 1
