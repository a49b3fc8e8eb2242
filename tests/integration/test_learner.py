"""The learner against a real Redis: a promotion is published as a version and alerted; an
error ends in a restore of the checkpoint."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from river import dummy

from models.lifecycle import ModelLifecycle
from models.online import Features
from models.pipelines import logistic_regression_adam
from models.release import ReleaseConfig
from stream.records import Alert, AuditRecord
from stream.runtime.keys import EntityKey
from stream.runtime.learner import Learner, LearnerState
from stream.runtime.pending import Recorded, layout_of
from stream.runtime.registry import ModelRegistry
from stream.runtime.retry import ErrorPolicy
from stream.runtime.state import START, JournalEntry, Sources, StateStore
from stream.settings import Settings
from stream.usecases import ALERTS_TOPIC, AUDIT_TOPIC, FRAUD, UseCase

pytestmark = pytest.mark.integration

SIGNAL = FRAUD.declare(
    {**FRAUD.declaration.model_dump(), "features": {"signal": {"kind": "numeric", "field": "amount"}}}
)
"""Fraud with one feature, ``signal``: what the journal entries written below hold."""


def pending_record(x: Features, y_pred: float, version: str) -> bytes:
    """The pending record of an event of entity ``a`` scored ``y_pred`` from ``x`` by ``version``."""
    return layout_of(SIGNAL).encode(
        x, Recorded(version, "live", time.time(), 0.0, y_pred, "a"), EntityKey("a")
    )


async def journal_label(
    client: aioredis.Redis, settings: Settings, x: Features, y_pred: float, version: str, y: bool, source: str
) -> None:
    """Append a joined label to fraud's journal, as ``state.lua`` does (an event of entity ``a``)."""
    sources = Sources(settings.topic(FRAUD.event_topic) + "/")
    record = sources.scored(EntityKey("a"), "api", pending_record(x, y_pred, version))
    fields = {"r": record, "y": str(float(y)), "s": source}
    await client.xadd(settings.key("fraud", "journal"), fields)  # type: ignore[arg-type]


async def test_a_journal_written_before_entries_held_records_reads_as_one_written_since(
    settings: Settings,
) -> None:
    """An upgraded learner resumes over entries holding entity and pending record as two fields."""
    client = aioredis.Redis.from_url(settings.redis_url)
    x = {"signal": 1.5}
    before = {"e": "a", "p": pending_record(x, 0.25, "fraud.3"), "y": "1.0", "s": "l/0/1"}
    await client.xadd(settings.key("fraud", "journal"), before)  # type: ignore[arg-type]
    await journal_label(client, settings, x, 0.25, "fraud.3", True, "l/0/2")
    old, new = await StateStore(client, settings).read_journal(SIGNAL, START, 10)
    assert new.pending["x"] == x and new.pending["y_pred"] == 0.25 and new.pending["entity"] == "a"
    assert {k: v for k, v in old.pending.items() if k != "scored_at"} == {
        k: v for k, v in new.pending.items() if k != "scored_at"
    }
    assert (old.y, old.source, new.y, new.source) == (1.0, "l/0/1", 1.0, "l/0/2")
    await client.aclose()


async def test_a_better_challenger_is_promoted_published_and_alerted(settings: Settings) -> None:
    settings = settings.replace(model_publish_seconds=0.0)
    client = aioredis.Redis.from_url(settings.redis_url)
    registry = ModelRegistry(client, settings)
    published: list[tuple[str, bytes, bytes]] = []

    async def publish(records: Sequence[tuple[str, bytes, bytes]]) -> None:
        published.extend(records)

    learner = Learner(
        settings, SIGNAL, StateStore(client, settings), registry, publish, ErrorPolicy(settings)
    )
    # A champion that only knows the base rate, against a model that reads the one feature.
    learner.state = LearnerState(
        ModelLifecycle(
            "fraud",
            "classification",
            ("prior", dummy.PriorClassifier),
            ("logistic_regression_adam", logistic_regression_adam),
            min_labels=200,
            warmup=0,
            release=ReleaseConfig(first_labels=0),  # the promoted champion may serve at once
        ),
        SIGNAL.fingerprint,
    )
    rng = random.Random(1)
    for i in range(600):
        y = rng.random() < 0.5
        x = {"signal": (1.0 if y else -1.0) + rng.gauss(0, 0.5)}
        await journal_label(client, settings, x, 0.5, "fraud.0", y, f"l/0/{i}")

    assert await registry.lease("fraud", learner._token)
    for _ in range(3):
        await learner.step()

    live = await registry.live("fraud")
    assert live is not None
    record = await registry.record(live)
    assert record["pipeline"] == "logistic_regression_adam" and record["challenger"] == "prior"
    reasons = [r["reason"] for r in await registry.versions("fraud", 10)]
    assert "promotion" in reasons
    alerts = [
        Alert.model_validate_json(value) for topic, _, value in published if topic.endswith(ALERTS_TOPIC)
    ]
    [audit] = [
        AuditRecord.model_validate_json(value) for topic, _, value in published if topic.endswith(AUDIT_TOPIC)
    ]
    assert (audit.action, audit.actor, audit.before, audit.after) == (
        "promotion",
        "learner",
        "prior",
        "logistic_regression_adam",
    )
    assert [(a.kind, a.state, a.severity) for a in alerts if a.kind == "promotion"] == [
        ("promotion", "open", "info"),
        ("promotion", "resolve", "info"),
    ]
    promotion = alerts[[a.kind for a in alerts].index("promotion")]
    assert promotion.statistic >= promotion.threshold and "replaces prior" in promotion.detail
    await client.aclose()


class FailingOnce(StateStore):
    """The real store, except that its first journal read fails as a bug would."""

    failed = False

    async def read_journal(
        self, use_case: UseCase[Any, Any], after: str, count: int, block_ms: int | None = None
    ) -> list[JournalEntry]:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug")
        return await super().read_journal(use_case, after, count, block_ms)


async def test_a_learner_that_fails_lets_its_state_go_and_restores_its_checkpoint(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    client = aioredis.Redis.from_url(settings.redis_url)
    registry = ModelRegistry(client, settings)

    async def publish(records: Sequence[tuple[str, bytes, bytes]]) -> None:
        pass

    learner = Learner(
        settings, FRAUD, FailingOnce(client, settings), registry, publish, ErrorPolicy(settings)
    )
    failures = REGISTRY.get_sample_value(
        "scoring_retries_total", {"topic": "learner:fraud", "error": "RuntimeError"}
    )
    with caplog.at_level(logging.INFO):
        running = asyncio.create_task(learner.run())
        for _ in range(300):
            if "fraud: learner restored fraud.0" in caplog.text:
                break
            await asyncio.sleep(0.1)
        await learner.stop()
        await running
    assert "fraud: learner starts from scratch at fraud.0" in caplog.text
    assert "learner:fraud failed (RuntimeError: a bug); trying again in 0.5 s" in caplog.text
    assert "fraud: learner restored fraud.0 at journal" in caplog.text
    assert (
        REGISTRY.get_sample_value(
            "scoring_retries_total", {"topic": "learner:fraud", "error": "RuntimeError"}
        )
        == (failures or 0) + 1
    )
    await client.aclose()


async def test_a_learner_whose_registry_was_lost_starts_over(settings: Settings) -> None:
    client = aioredis.Redis.from_url(settings.redis_url)
    registry = ModelRegistry(client, settings)

    async def publish(records: Sequence[tuple[str, bytes, bytes]]) -> None:
        pass

    learner = Learner(settings, FRAUD, StateStore(client, settings), registry, publish, ErrorPolicy(settings))
    assert await registry.lease("fraud", learner._token)
    await learner.step()
    assert await registry.live("fraud") == "fraud.0"

    # Redis comes back without its data (no persistence): the learner's state goes, as after any error.
    await client.delete(*[key async for key in client.scan_iter(match=f"{settings.namespace}:*")])
    learner._follow()
    assert await registry.lease("fraud", learner._token)
    await learner.step()
    assert await registry.live("fraud") == "fraud.0"
    await client.aclose()
