"""The declared state in Redis: a worker's scoring keeps its entities' states as the offline
replay does (labels folded in by the script too), and an implicit label policy learns each
unlabelled event once."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Sequence

import orjson
import pytest

from stream.features import MEMBERS_KEPT, EntityState, Features
from stream.records import DeadLetter, Rejection, Transaction
from stream.redis_client import redis_client
from stream.runtime.keys import EntityKey, entity_key
from stream.runtime.scoring import Accepted, Predicted
from stream.settings import Settings
from stream.usecases import DEMAND, FRAUD, IMPLICIT_SOURCE
from tests.integration.test_scoring import Steps, joined, journal, message, new_steps, tx

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("redis_mode", ["single", "cluster"], indirect=True),
]

ACCOUNTS = ("a", "b", "c")
START = dt.datetime(2026, 3, 4, 12, tzinfo=dt.UTC)
NOW = (START + dt.timedelta(days=1)).timestamp()  # when the events are accepted: none is late


def same(x: Features, y: Features) -> bool:
    """Equal features, numbers to 12 digits: the script folds labels in Lua's arithmetic."""
    return x.keys() == y.keys() and all(
        v == y[k] if isinstance(v, str) else v == pytest.approx(y[k], rel=1e-12, abs=1e-12)
        for k, v in x.items()
    )


def transactions(n: int, seed: int = 3) -> list[bytes]:
    rng = random.Random(seed)
    return [
        tx(
            f"t{i}",
            account=rng.choice(ACCOUNTS),
            amount=round(rng.lognormvariate(3, 1), 2),
            ts=START + (rng.random() - 0.5) * dt.timedelta(hours=12),  # out of order too
            merchant=rng.choice(("m1", "m2", "m3", "m4")),
        )
        for i in range(n)
    ]


async def score(steps: Steps, payloads: Sequence[bytes], first: int = 0) -> list[Transaction]:
    """Score ``payloads`` as a worker's batch of offsets ``first``...; their events."""
    accepted = [steps.scorer.accept(FRAUD, p, f"t/0/{first + i}", None, NOW) for i, p in enumerate(payloads)]
    assert not any(isinstance(a, Rejection) for a in accepted)
    events = [a for a in accepted if isinstance(a, Accepted)]
    outcomes = await steps.scorer.predict(FRAUD, events, NOW)
    assert all(isinstance(outcome, Predicted) for outcome in outcomes)
    return [a.event for a in events]


async def scored_features(steps: Steps) -> dict[EntityKey, list[Features]]:
    """The features each entity's events were scored with, in order, from the journal."""
    by_entity: dict[EntityKey, list[Features]] = {}
    for entry in await journal(steps):
        if entry.y is None:
            by_entity.setdefault(entry.pending["entity"], []).append(entry.pending["x"])
    return by_entity


async def test_the_worker_and_the_offline_replay_keep_the_same_state(steps: Steps) -> None:
    payloads = transactions(300)
    offline = {account: EntityState() for account in ACCOUNTS}
    expected: dict[EntityKey, list[Features]] = {}
    decay = FRAUD.features.decay
    for first in range(0, len(payloads), 50):
        batch = await score(steps, payloads[first : first + 50], first)
        for event in batch:
            prior = offline[event.account_id].observe(FRAUD.features.observe(event), decay)
            expected.setdefault(entity_key((event.account_id,)), []).append(
                FRAUD.features.compute(event, prior)
            )
        labels = [(e, float(e.amount > 40)) for e in batch[::3]]
        await steps.state.learn_labels(FRAUD, [(entity_key((e.account_id,)), y) for e, y in labels])
        for event, y in labels:
            offline[event.account_id].learn(y, decay)
    served = await scored_features(steps)
    assert served.keys() == expected.keys()
    for entity, xs in expected.items():
        assert len(served[entity]) == len(xs) and all(map(same, served[entity], xs))
    for account, state in offline.items():
        stored = await steps.state.entity(FRAUD, entity_key((account,)))
        document = state.document()
        assert stored["n"] == document["n"] and float(stored["last_ts"]) == float(document["last_ts"])
        assert stored["stats"].keys() == document["stats"].keys()
        for name, stat in document["stats"].items():
            assert stored["stats"][name] == pytest.approx(stat, rel=1e-12)


async def test_an_entity_remembers_its_latest_values_as_the_offline_replay_does(steps: Steps) -> None:
    # 1.5 x MEMBERS_KEPT merchants, the first again, then each again from the latest: the
    # first ones were forgotten (new again), the latest are known.
    names = [f"m{i}" for i in range(MEMBERS_KEPT + MEMBERS_KEPT // 2)]
    visits = [*names, "m0", *names[::-1]]
    payloads = [
        tx(f"v{i}", account="a", merchant=m, ts=START + dt.timedelta(seconds=i)) for i, m in enumerate(visits)
    ]
    for first in range(0, len(payloads), 40):
        await score(steps, payloads[first : first + 40], first)
    offline = EntityState()
    events = [Transaction.model_validate_json(p) for p in payloads]
    expected = [offline.observe(FRAUD.features.observe(e), FRAUD.features.decay).seen for e in events]
    served = (await scored_features(steps))[entity_key(("a",))]
    assert [x["merchant_new"] for x in served] == [float(not seen["merchant_id"]) for seen in expected]
    assert [seen["merchant_id"] for seen in expected[: len(names)]] == [False] * len(names)
    assert expected[len(names)]["merchant_id"] is False  # m0 was forgotten
    again = [seen["merchant_id"] for seen in expected[len(names) + 1 :]]  # the latest first
    kept = MEMBERS_KEPT - 1  # m0 took one place
    assert again == [True] * kept + [False] * (len(names) - kept)
    assert len(offline.seen["merchant_id"]) == MEMBERS_KEPT


async def test_restored_entities_continue_in_the_stream(steps: Steps) -> None:
    payloads = transactions(40)
    events = [Transaction.model_validate_json(p) for p in payloads]
    offline = {account: EntityState() for account in ACCOUNTS}
    for event in events[:30]:
        offline[event.account_id].observe(FRAUD.features.observe(event), FRAUD.features.decay)
    written = await steps.state.restore_entities(
        FRAUD, ((entity_key((account,)), state) for account, state in offline.items())
    )
    assert written == len(ACCOUNTS)
    await score(steps, payloads[30:], 30)
    expected: dict[EntityKey, list[Features]] = {}
    for event in events[30:]:
        prior = offline[event.account_id].observe(FRAUD.features.observe(event), FRAUD.features.decay)
        expected.setdefault(entity_key((event.account_id,)), []).append(FRAUD.features.compute(event, prior))
    served = await scored_features(steps)
    assert served.keys() == expected.keys()
    for entity, xs in expected.items():
        assert len(served[entity]) == len(xs) and all(map(same, served[entity], xs))


async def test_an_unlabelled_event_matures_into_the_implicit_target_once(settings: Settings) -> None:
    implicit = FRAUD.declare(
        {
            **FRAUD.declaration.model_dump(),
            "labels": {"policy": "implicit", "maturity_seconds": 0.3, "implicit_target": 0},
        }
    )
    client = redis_client(settings)
    try:
        steps = new_steps(settings, client, [implicit, DEMAND])
        scorer, joiner, state = steps.scorer, steps.joiner, steps.state
        await scorer.score(implicit, [message(tx(f"e{i}"), i) for i in range(3)])
        label = orjson.dumps({"event_id": "e0", "is_fraud": True})
        await joiner.join(implicit, [message(label, 0, topic="transactions.labels")])
        await joiner.mature(implicit)  # not yet due: nothing happens
        assert await joined(steps) == [("transactions.labels/0/0", 1.0)]

        await asyncio.sleep(0.4)
        await joiner.mature(implicit)
        await joiner.mature(implicit)  # a second sweep learns nothing again
        assert await joined(steps) == [
            ("transactions.labels/0/0", 1.0),
            (IMPLICIT_SOURCE, 0.0),
            (IMPLICIT_SOURCE, 0.0),
        ]
        assert (await state.entity(FRAUD, entity_key(("acc-1",))))["stats"]["label"][0] == 3

        late = orjson.dumps({"event_id": "e1", "is_fraud": True})
        outbox = await joiner.join(implicit, [message(late, 1, topic="transactions.labels")])
        dead = [
            DeadLetter.model_validate_json(v)
            for t, _, v in outbox.records
            if t == settings.topic("deadletter")
        ]
        assert [(d.reason, d.offset) for d in dead] == [("matured_event", 1)]
        assert len(await joined(steps)) == 3
    finally:
        await client.aclose()
