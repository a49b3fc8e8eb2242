"""The learner's release against a real Redis: a broken candidate is held, a broken live version
is rolled back, each with one alert and a record in the registry."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence

import pytest
import redis.asyncio as aioredis

from models import snapshot
from models.online import OnlineModel
from stream.records import Alert, AuditRecord
from stream.runtime import registry as registry_module
from stream.runtime.learner import Learner, version_record
from stream.runtime.registry import ModelRegistry
from stream.runtime.retry import ErrorPolicy
from stream.runtime.state import StateStore
from stream.settings import Settings
from stream.usecases import AUDIT_TOPIC
from tests.integration.test_learner import SIGNAL, journal_label

pytestmark = pytest.mark.integration


class Inverted(OnlineModel):
    """A broken model: the probability of the other class."""

    def predict_one(self, x: dict[str, float | str]) -> float:
        return 1.0 - super().predict_one(x)

    def predict_many(self, xs: Sequence[dict[str, float | str]]) -> list[float]:
        return [self.predict_one(x) for x in xs]  # as a worker scores a batch


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(settings.redis_url)
    yield redis
    await redis.aclose()


class Published:
    """A learner's publish step that keeps what it is given: alerts, and audit records."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.audit: list[AuditRecord] = []

    async def __call__(self, records: Sequence[tuple[str, bytes, bytes]]) -> None:
        for topic, _, value in records:
            if topic.endswith(AUDIT_TOPIC):
                self.audit.append(AuditRecord.model_validate_json(value))
            else:
                self.alerts.append(Alert.model_validate_json(value))


class Stage:
    """A learner of fraud with its registry and the alerts it publishes."""

    def __init__(self, settings: Settings, client: aioredis.Redis) -> None:
        self.settings, self.client = settings, client
        self.registry = ModelRegistry(client, settings)
        published = Published()
        self.alerts, self.audit = published.alerts, published.audit
        self.learner = Learner(
            settings, SIGNAL, StateStore(client, settings), self.registry, published, ErrorPolicy(settings)
        )
        self.labels = 0

    async def label(self, n: int, served_version: str, served_by: OnlineModel | None, seed: int = 0) -> None:
        """``n`` labels of events that ``served_version`` (``served_by``; ``None``: untrained) scored."""
        rng = random.Random(seed)
        for _ in range(n):
            y = rng.random() < 0.3
            x: dict[str, float | str] = {"signal": (1.0 if y else -1.0) + rng.gauss(0, 0.5)}
            y_pred = 0.5 if served_by is None else served_by.predict_one(x)
            await journal_label(
                self.client, self.settings, x, y_pred, served_version, y, f"l/0/{self.labels}"
            )
            self.labels += 1

    async def learn(self) -> None:
        assert await self.registry.lease("fraud", self.learner._token)
        for _ in range(20):
            await self.learner.step()
            if self.learner.state is not None and self.learner.state.lifecycle.labels_learned == self.labels:
                await self.learner.step()  # the last step publishes or checkpoints
                return

    async def first_version(self) -> str:
        """A good first version, learned from 300 labels, live."""
        await self.label(300, "fraud.0", None)
        await self.learn()
        live = await self.registry.live("fraud")
        assert live is not None and live != "fraud.0"
        return live

    def of(self, kind: str) -> list[tuple[str, str]]:
        return [(a.state, a.severity) for a in self.alerts if a.kind == kind]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(
        model_publish_seconds=0.0, challengers="", first_version_min_labels=0, gate_min_labels=50
    )


async def test_a_broken_candidate_is_held_kept_in_the_registry_and_alerted_once(
    settings: Settings, client: aioredis.Redis
) -> None:
    stage = Stage(settings, client)
    live = await stage.first_version()

    # The champion breaks: every later candidate is worse than the live version.
    state = stage.learner.state
    assert state is not None
    champion = state.lifecycle.contest.champion
    broken = Inverted(champion.name, champion.task, champion.estimator)
    state.lifecycle.contest.champion = broken
    served = await stage.registry.load(live)
    for round_ in range(3):
        await stage.label(100, live, served, seed=round_ + 1)
        await stage.learn()
    assert await stage.registry.live("fraud") == live, "nothing broken went live"
    held = [r for r in await stage.registry.versions("fraud", 20) if r["reason"] == "held"]
    assert len(held) == 1 and held[0]["gate"]["decision"] == "held" and held[0]["gate"]["ratio"] > 1.05
    assert stage.of("version_held") == [("open", "warning")]


async def test_a_broken_live_version_is_rolled_back_to_its_reference_with_one_critical_alert(
    settings: Settings, client: aioredis.Redis
) -> None:
    stage = Stage(settings, client)
    good = await stage.first_version()

    # A broken version gets through (a fault in publication, say): it serves inverted scores.
    learner, registry = stage.learner, stage.registry
    state = learner.state
    assert state is not None
    champion = state.lifecycle.champion
    record = version_record(settings, SIGNAL, state, "learned")
    blob = snapshot.dumps(state, settings.signing_key)
    inverted = Inverted(champion.name, champion.task, champion.estimator)
    outcome, broken = await registry.publish("fraud", learner._token, good, inverted, record, blob)
    assert outcome == "published"
    await stage.label(400, broken, inverted, seed=7)
    await stage.learn()

    live = await registry.live("fraud")
    reference = state.lifecycle.release.reference_version
    assert live not in (broken, None), live
    history = await registry.history("fraud", 5)
    assert (
        history[0]["by"] == "watch"
        and history[0]["previous"] == broken
        and "rolled back" in history[0]["reason"]
    )
    # One alert, critical, opened once (it resolves when a candidate passes the gate again).
    assert (
        stage.of("rollback")[0] == ("open", "critical")
        and [s for s, _ in stage.of("rollback")].count("open") == 1
    )
    assert learner.version == live and reference in (live, "fraud.0")
    audit = [(r.action, r.actor, r.before, r.after) for r in stage.audit]
    assert audit == [("rollback", "watch", broken, history[0]["version"])]


async def test_an_audit_record_left_undelivered_by_its_actor_is_delivered_by_the_learner(
    settings: Settings, client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "AUDIT_GRACE_SECONDS", 0.0)  # the actor's grace is over
    stage = Stage(settings, client)
    good = await stage.first_version()
    await stage.label(10, good, await stage.registry.load(good))
    await stage.learn()
    # An operator's rollback whose command died before delivering its record (or found no broker).
    record = AuditRecord.now("rollback", "ops@host", model="fraud", target="fraud.0", detail="by hand")
    assert await stage.registry.rollback("fraud.0", by="ops@host", audit=record) == good
    assert stage.audit == []
    await stage.learner.step()
    assert stage.audit == [record.model_copy(update={"before": good, "after": "fraud.0"})]
    await stage.learner.step()
    assert len(stage.audit) == 1, "delivered once"
