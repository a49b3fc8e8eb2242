"""What only a Redis Cluster has: every key in its bucket's slot whatever its ids, the
buckets' journals read as one order, a cluster that does not answer as an outage."""

from __future__ import annotations

import orjson
import pytest
import redis.exceptions
from redis.crc import key_slot

from stream.redis_client import redis_client
from stream.runtime.keys import buckets
from stream.runtime.retry import ErrorPolicy
from stream.runtime.state import JournalEntry, StateStore
from stream.settings import Settings
from stream.tools.localstack import free_port
from stream.usecases import FRAUD
from tests.integration.test_scoring import CRAFTED_IDS, Steps, journal, message, tx

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("redis_mode", ["cluster"], indirect=True),
]


async def test_every_key_is_in_its_bucket_slot_whatever_the_ids_hold(
    steps: Steps, settings: Settings
) -> None:
    batch = [
        message(tx(f"{account}/{n}", account=account, merchant=account), 2 * i + n)
        for i, account in enumerate(CRAFTED_IDS)
        for n in range(2)
    ]
    await steps.scorer.score(FRAUD, batch)
    labels = [f"{account}/0" for account in CRAFTED_IDS] + [f"{{never}}{account}" for account in CRAFTED_IDS]
    await steps.joiner.join(
        FRAUD,
        [
            message(orjson.dumps({"event_id": event_id, "is_fraud": False}), i, "transactions.labels")
            for i, event_id in enumerate(labels)
        ],
    )
    prefixes = buckets(settings, FRAUD.name).prefixes
    keys = [key.decode() async for key in steps.state._redis.scan_iter(match=f"{settings.namespace}:fraud:*")]
    kinds = {
        key.removeprefix(next(p for p in prefixes if key.startswith(p))).split(":", 1)[0] for key in keys
    }
    assert kinds == {"route", "event", "entity", "journal", "parked"}
    for key in keys:
        [prefix] = [p for p in prefixes if key.startswith(p)]
        assert key_slot(key.encode()) == key_slot(prefix.encode()), key


async def test_the_buckets_journals_read_as_one_order_in_any_slices(steps: Steps, settings: Settings) -> None:
    accounts = [f"acc-{i}" for i in range(40)]
    await steps.scorer.score(FRAUD, [message(tx(f"e{i}", account=accounts[i % 40]), i) for i in range(200)])
    labels = [orjson.dumps({"event_id": f"e{i}", "is_fraud": i % 3 == 0}) for i in range(0, 200, 2)]
    await steps.joiner.join(
        FRAUD, [message(label, i, "transactions.labels") for i, label in enumerate(labels)]
    )

    # Read until nothing more comes: the merged read holds back what a master's clock has not passed.
    whole = await journal(steps)
    assert len(whole) == 300 and len({e.position for e in whole}) == 300
    assert [e.time for e in whole] == sorted(e.time for e in whole)
    sliced: list[JournalEntry] = []
    while len(sliced) < len(whole):
        after = sliced[-1].position if sliced else "0-0"
        sliced += await steps.state.read_journal(FRAUD, after, 7)
    assert sliced == whole
    assert whole[-1].position == await steps.state.journal_head(FRAUD.name)


async def test_a_cluster_that_does_not_answer_is_an_outage(settings: Settings) -> None:
    nowhere = settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    client = redis_client(nowhere, socket_connect_timeout=1)
    policy = ErrorPolicy(nowhere)
    with pytest.raises(redis.exceptions.ConnectionError) as raised:
        await StateStore(client, nowhere).read_journal(FRAUD, "0-0", 1)
    assert policy.outage(raised.value) is policy.redis
    await client.aclose()
