"""The service around a batch, on a real broker and Redis: a bug is a dead letter that says what happened."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest
import redis.asyncio as aioredis

from consumers.reader import read
from stream.records import DeadLetter
from stream.runtime.keys import entity_key
from stream.runtime.outbox import Message
from stream.runtime.service import ScoringService
from stream.settings import Settings
from stream.usecases import DEADLETTER_TOPIC, FRAUD

pytestmark = pytest.mark.integration


def transaction(event_id: str, account: str) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "ts": dt.datetime.now(dt.UTC).isoformat(),
            "account_id": account,
            "merchant_id": "m-1",
            "amount": 12.5,
            "currency": "EUR",
            "channel": "pos",
            "country": "FR",
        }
    )


async def test_a_script_error_is_dead_lettered_with_the_redis_message(settings: Settings) -> None:
    # A key of the wrong type where an account's state lives (no id can put it there:
    # ids are encoded; a stray write can), next to a healthy account in the same batch.
    client = aioredis.Redis.from_url(settings.redis_url)
    await client.sadd(settings.key(FRAUD.name, "entity", entity_key(("broken",))), "not a state")
    await client.aclose()
    service = ScoringService(settings)
    topic = settings.topic(FRAUD.event_topic)
    batch = [
        Message(topic, 0, 0, transaction("t-broken", "broken")),
        Message(topic, 0, 1, transaction("t-healthy", "healthy")),
    ]
    try:
        await service.handle(batch)
    finally:
        await service.close()

    dead = [d.parse() for d in read(settings, [DEADLETTER_TOPIC], idle_timeout=2.0)]
    assert len(dead) == 1 and isinstance(dead[0], DeadLetter)
    assert (dead[0].reason, dead[0].offset) == ("internal_error", 0)
    assert dead[0].detail.startswith("ResponseError: WRONGTYPE"), dead[0].detail
    predicted = [d.parse() for d in read(settings, [FRAUD.prediction_topic], idle_timeout=2.0)]
    assert [getattr(p, "event_id", None) for p in predicted] == ["t-healthy"]
