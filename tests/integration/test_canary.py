"""The canary against a real Redis, through a worker's own scoring, joining and learning steps:
a good canary is promoted; a broken one serves only its fraction of entities, is rolled back
with one critical alert, and the champion starts over from the live version."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio as aioredis

from models import snapshot
from stream.records import Prediction
from stream.runtime.learner import Learner, version_record
from stream.runtime.registry import ModelRegistry
from stream.runtime.retry import ErrorPolicy
from stream.runtime.served import in_canary
from stream.settings import Settings
from stream.usecases import FRAUD
from tests.integration.test_learner_release import Inverted, Published
from tests.integration.test_scoring import Steps, message, new_steps, predictions, tx

pytestmark = pytest.mark.integration

FRACTION = 0.2
ACCOUNTS = [f"acc-{n}" for n in range(200)]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(
        model_publish_seconds=0.0,
        challengers="",
        first_version_min_labels=0,
        gate_min_labels=50,
        rollback_min_labels=50,
        canary=f"fraud={FRACTION}",
        canary_labels=150,
    )


class Worker:
    """One worker's steps on a real Redis: scoring, joining labels, the fraud learner."""

    def __init__(self, settings: Settings, client: aioredis.Redis) -> None:
        self.settings = settings
        self.steps: Steps = new_steps(settings, client, [FRAUD])
        published = Published()
        self.alerts, self.audit = published.alerts, published.audit
        self.registry = ModelRegistry(client, settings)
        self.learner = Learner(
            settings, FRAUD, self.steps.state, self.registry, published, ErrorPolicy(settings)
        )
        self.rng = random.Random(0)
        self.sent = 0
        self.served: list[Prediction] = []

    async def round(self, n: int = 200) -> list[Prediction]:
        """``n`` transactions scored (fraud: amounts above 400), their labels joined, one learner step."""
        await self.steps.scorer.models.refresh()
        events, labels = [], []
        for _ in range(n):
            amount = self.rng.lognormvariate(4.5, 1.2)
            event_id = f"e{self.sent}"
            events.append(
                message(tx(event_id, self.rng.choice(ACCOUNTS), amount=round(amount, 2)), self.sent)
            )
            label = {"event_id": event_id, "is_fraud": amount > 400}
            labels.append(message(orjson.dumps(label), self.sent, "transactions.labels"))
            self.sent += 1
        scored = predictions(await self.steps.scorer.score(FRAUD, events), self.settings)
        await self.steps.joiner.join(FRAUD, labels)
        assert await self.registry.lease("fraud", self.learner._token)
        for _ in range(10):  # learn every joined label; the last step publishes or checkpoints
            await self.learner.step()
        self.served += scored
        return scored

    async def canary(self) -> str | None:
        return await self.registry.canary_of("fraud")


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[Worker]:
    client = aioredis.Redis.from_url(settings.redis_url)
    yield Worker(settings, client)
    await client.aclose()


async def test_a_good_canary_is_promoted_and_a_broken_one_serves_only_its_fraction_then_is_rolled_back(
    worker: Worker,
) -> None:
    registry = worker.registry

    # The first learned version passes the gate and becomes the canary, beside the untrained fraud.0.
    await worker.round()
    first = await worker.canary()
    assert first is not None and await registry.live("fraud") == "fraud.0"
    assert (await registry.record(first))["canary_fraction"] == FRACTION

    # Serving its entities only, as good as it is: promoted after 150 of its labels.
    while await worker.canary() == first:
        scored = await worker.round()
        for p in scored:
            assert (p.model_version == first) == in_canary(p.entity, first, FRACTION)
            assert p.arm == ("canary" if p.model_version == first else "live")
        assert worker.sent < 20_000, "the canary was never concluded"
    assert await registry.live("fraud") == first
    history = await registry.history("fraud", 1)
    assert history[0]["action"] == "canary" and history[0]["outcome"] == "promoted"

    # A broken canary gets through the gate (a fault in publication, say): it serves inverted
    # scores. The learner finds it in its checkpoint, as after a restart.
    while await worker.canary() is not None:  # the next good canary, whatever it decides
        await worker.round()
    state = worker.learner.state
    assert state is not None
    champion = state.lifecycle.champion
    record = version_record(worker.settings, FRAUD, state, "learned") | {"canary_fraction": FRACTION}
    blob = snapshot.dumps(state, worker.settings.signing_key)
    inverted = Inverted(champion.name, champion.task, champion.estimator)
    live = await registry.live("fraud")
    outcome, broken = await registry.canary("fraud", worker.learner._token, live, inverted, record, blob)
    assert outcome == "canary"
    worker.learner._follow()

    during = len(worker.served)
    while await worker.canary() == broken:
        await worker.round()
        assert worker.sent < 60_000, "the canary was never concluded"
    served_while = worker.served[during:]
    by_broken = [p for p in served_while if p.model_version == broken]
    assert by_broken and all(in_canary(p.entity, broken, FRACTION) and p.arm == "canary" for p in by_broken)
    canary_entities = {a for a in ACCOUNTS if in_canary(a, broken, FRACTION)}
    assert {p.entity for p in by_broken} <= canary_entities and len(canary_entities) <= 0.3 * len(ACCOUNTS)
    assert len(by_broken) <= 0.3 * len(served_while)

    # Rolled back: the live version stays, with one critical alert.
    assert await registry.live("fraud") == live
    history = await registry.history("fraud", 1)
    assert history[0]["outcome"] == "rolled_back" and history[0]["version"] == broken
    assert [(a.state, a.severity) for a in worker.alerts if a.kind == "rollback"] == [("open", "critical")]
    audit = [(r.action, r.actor, r.target, r.before, r.after) for r in worker.audit]
    assert ("canary", "canary", first, "fraud.0", first) in audit
    assert ("canary", "canary", broken, live, live) in audit
    after = await worker.round()
    assert broken not in {p.model_version for p in after} and await worker.canary() != broken
    assert {p.model_version for p in after if p.arm == "live"} == {live}
