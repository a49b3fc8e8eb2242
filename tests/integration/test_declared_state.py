"""The declared state in Redis: the script folds as the offline replay does, and an implicit
label policy learns each unlabelled event once."""

from __future__ import annotations

import asyncio
import datetime as dt
import random

import orjson
import pytest

from stream.features import MEMBERS_KEPT, EntityState, Features
from stream.records import DeadLetter, Transaction
from stream.redis_client import redis_client
from stream.runtime.keys import entity_key
from stream.runtime.state import Arrival
from stream.settings import Settings
from stream.usecases import DEMAND, FRAUD, IMPLICIT_SOURCE
from tests.integration.test_scoring import Steps, joined, message, new_steps, tx

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("redis_mode", ["single", "cluster"], indirect=True),
]

ACCOUNTS = ("a", "b", "c")
START = dt.datetime(2026, 3, 4, 12, tzinfo=dt.UTC)  # the state script takes any time: none is late


def same(x: Features, y: Features) -> bool:
    """Equal features, numbers to 12 digits: the script keeps its statistics to 14."""
    return x.keys() == y.keys() and all(
        v == y[k] if isinstance(v, str) else v == pytest.approx(y[k], rel=1e-12, abs=1e-12)
        for k, v in x.items()
    )


def transactions(n: int, seed: int = 3) -> list[Transaction]:
    rng = random.Random(seed)
    return [
        Transaction.model_validate_json(
            tx(
                f"t{i}",
                account=rng.choice(ACCOUNTS),
                amount=round(rng.lognormvariate(3, 1), 2),
                ts=START + (rng.random() - 0.5) * dt.timedelta(hours=12),  # out of order too
                merchant=rng.choice(("m1", "m2", "m3", "m4")),
            )
        )
        for i in range(n)
    ]


async def test_the_script_and_the_offline_replay_keep_the_same_state(steps: Steps) -> None:
    events = transactions(300)
    offline = {account: EntityState() for account in ACCOUNTS}
    decay = FRAUD.features.decay
    for first in range(0, len(events), 50):
        batch = events[first : first + 50]
        arrivals = [
            Arrival(e.event_id, entity_key((e.account_id,)), f"t/0/{i + first}", FRAUD.features.observe(e))
            for i, e in enumerate(batch)
        ]
        claims = await steps.state.observe(FRAUD, arrivals)
        for event, claim in zip(batch, claims, strict=True):
            prior = offline[event.account_id].observe(FRAUD.features.observe(event), decay)
            assert same(FRAUD.features.compute(event, claim.prior), FRAUD.features.compute(event, prior))
        labels = [(e, float(e.amount > 40)) for e in batch[::3]]
        await steps.state.learn_labels(FRAUD, [(entity_key((e.account_id,)), y) for e, y in labels])
        for event, y in labels:
            offline[event.account_id].learn(y, decay)
    for account, state in offline.items():
        stored = await steps.state.entity(FRAUD, entity_key((account,)))
        expected = state.document()
        assert stored["n"] == expected["n"] and float(stored["last_ts"]) == float(expected["last_ts"])
        assert stored["stats"].keys() == expected["stats"].keys()
        for name, stat in expected["stats"].items():
            assert stored["stats"][name] == pytest.approx(stat, rel=1e-12)


async def test_an_entity_remembers_its_latest_values_as_the_offline_replay_does(steps: Steps) -> None:
    # 1.5 x MEMBERS_KEPT merchants, the first again, then each again from the latest: the
    # first ones were forgotten (new again), the latest are known.
    names = [f"m{i}" for i in range(MEMBERS_KEPT + MEMBERS_KEPT // 2)]
    visits = [*names, "m0", *names[::-1]]
    events = [
        Transaction.model_validate_json(
            tx(f"v{i}", account="a", merchant=m, ts=START + dt.timedelta(seconds=i))
        )
        for i, m in enumerate(visits)
    ]
    arrivals = [
        Arrival(e.event_id, entity_key(("a",)), f"t/0/{i}", FRAUD.features.observe(e))
        for i, e in enumerate(events)
    ]
    claims = [
        claim
        for first in range(0, len(arrivals), 40)
        for claim in await steps.state.observe(FRAUD, arrivals[first : first + 40])
    ]
    offline = EntityState()
    expected = [offline.observe(FRAUD.features.observe(e), FRAUD.features.decay).seen for e in events]
    assert [claim.prior.seen for claim in claims] == expected
    assert [seen["merchant_id"] for seen in expected[: len(names)]] == [False] * len(names)
    assert expected[len(names)]["merchant_id"] is False  # m0 was forgotten
    again = [seen["merchant_id"] for seen in expected[len(names) + 1 :]]  # the latest first
    kept = MEMBERS_KEPT - 1  # m0 took one place
    assert again == [True] * kept + [False] * (len(names) - kept)
    assert len(offline.seen["merchant_id"]) == MEMBERS_KEPT


async def test_restored_entities_continue_in_the_stream(steps: Steps) -> None:
    events = transactions(40)
    offline = {account: EntityState() for account in ACCOUNTS}
    for event in events[:30]:
        offline[event.account_id].observe(FRAUD.features.observe(event), FRAUD.features.decay)
    written = await steps.state.restore_entities(
        FRAUD, ((entity_key((account,)), state) for account, state in offline.items())
    )
    assert written == len(ACCOUNTS)
    arrivals = [
        Arrival(e.event_id, entity_key((e.account_id,)), f"t/0/{i}", FRAUD.features.observe(e))
        for i, e in enumerate(events[30:])
    ]
    claims = await steps.state.observe(FRAUD, arrivals)
    for event, claim in zip(events[30:], claims, strict=True):
        prior = offline[event.account_id].observe(FRAUD.features.observe(event), FRAUD.features.decay)
        assert claim.prior.n == prior.n and claim.prior.seen == prior.seen
        assert FRAUD.features.compute(event, claim.prior) == pytest.approx(
            FRAUD.features.compute(event, prior)
        )


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
