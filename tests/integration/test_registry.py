"""The model registry against a real Redis: versions, lease, compare-and-set, rollback, signatures."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

import pytest

from models import snapshot
from models.online import OnlineModel
from models.pipelines import linear_regression
from stream.backoff import Repeats
from stream.records import AuditRecord
from stream.redis_client import redis_client
from stream.runtime import registry as registry_module
from stream.runtime.keys import hash_tagged
from stream.runtime.registry import ModelRegistry, RegistryError
from stream.runtime.served import ServedModels
from stream.settings import Settings
from stream.usecases import AUDIT_TOPIC, DEMAND

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("redis_mode", ["single", "cluster"], indirect=True),
]


@pytest.fixture(autouse=True)
def fresh_repeats(monkeypatch: pytest.MonkeyPatch) -> None:
    """A filter of repeated lines of its own for each test: a refusal logged by the same test
    on another Redis a moment ago would be held back as a repeat."""
    monkeypatch.setattr(logging.getLogger("stream.runtime.served"), "filters", [Repeats()])


@pytest.fixture
async def registry(settings: Settings) -> AsyncIterator[ModelRegistry]:
    client = redis_client(settings)
    yield ModelRegistry(client, settings)
    await client.aclose()


def demand_model(labels: int) -> OnlineModel:
    model = OnlineModel("demand", "regression", linear_regression())
    for i in range(labels):
        model.learn_one({"log_price": float(i % 5)}, float(i % 7))
    return model


async def publish(
    registry: ModelRegistry,
    parent: str,
    model: OnlineModel,
    token: str = "a",
    declaration: str = DEMAND.fingerprint,
) -> tuple[str, str]:
    assert await registry.lease("demand", token)
    record = {
        "reason": "learned",
        "pipeline": "linear_regression",
        "labels_learned": model.labels_learned,
        "declaration": declaration,
    }
    return await registry.publish("demand", token, parent, model, record, b"state")


async def test_versions_chain_and_the_live_pointer_follows(registry: ModelRegistry) -> None:
    assert await registry.live("demand") is None
    assert await publish(registry, "", demand_model(0)) == ("published", "demand.0")
    assert await publish(registry, "demand.0", demand_model(10)) == ("published", "demand.1")
    assert await registry.live("demand") == "demand.1"
    record = await registry.record("demand.1")
    assert (record["parent"], record["labels_learned"], record["seq"]) == ("demand.0", 10, 1)
    assert [r["version"] for r in await registry.versions("demand", 10)] == ["demand.1", "demand.0"]
    loaded = await registry.load("demand.1")
    x = {"log_price": 2.0}
    assert loaded.predict_many([x]) == demand_model(10).predict_many([x])
    checkpoint = await registry.last_checkpoint("demand")
    assert checkpoint is not None and (checkpoint.state, checkpoint.version) == (b"state", "demand.1")


async def test_only_the_lease_holder_publishes_and_only_on_the_live_parent(registry: ModelRegistry) -> None:
    await publish(registry, "", demand_model(0), token="a")
    assert not await registry.lease("demand", "b")  # held by a
    assert await registry.publish("demand", "b", "demand.0", demand_model(1), {}, b"") == (
        "lost_lease",
        "demand.0",
    )
    assert await publish(registry, "demand.7", demand_model(1)) == ("conflict", "demand.0")
    assert await registry.checkpoint("demand", "a", "demand.3", b"s") == ("conflict", "demand.0")
    await registry.release("demand", "a")
    assert await registry.lease("demand", "b")
    assert await registry.live("demand") == "demand.0"


async def test_rollback_moves_the_live_pointer_back_and_is_recorded(registry: ModelRegistry) -> None:
    await publish(registry, "", demand_model(0))
    await publish(registry, "demand.0", demand_model(5))
    assert await registry.rollback("demand.0", by="ops") == "demand.1"
    assert await registry.live("demand") == "demand.0"
    [entry] = await registry.history("demand", 10)
    assert (entry["version"], entry["previous"], entry["by"]) == ("demand.0", "demand.1", "ops")
    # The learner's next publication, on its old parent, is refused: it must adopt demand.0.
    assert await publish(registry, "demand.1", demand_model(6)) == ("conflict", "demand.0")
    with pytest.raises(RegistryError, match=r"demand\.9"):
        await registry.rollback("demand.9", by="ops")


async def test_an_actions_audit_record_is_kept_with_it_until_delivered_once(
    registry: ModelRegistry, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    await publish(registry, "", demand_model(0))
    await publish(registry, "demand.0", demand_model(5))
    record = AuditRecord.now("rollback", "ops@host", model="demand", target="demand.0", detail="worse")
    assert await registry.rollback("demand.0", by="ops@host", audit=record) == "demand.1"
    published: list[tuple[str, bytes, bytes]] = []

    async def broker_down(records: Sequence[tuple[str, bytes, bytes]]) -> None:
        raise ConnectionError("no broker")

    async def broker(records: Sequence[tuple[str, bytes, bytes]]) -> None:
        published.extend(records)

    # Kept in the same step as the rollback: an actor that finds no broker (or dies) loses nothing.
    with pytest.raises(ConnectionError):
        await registry.deliver_audit("demand", broker_down, record)
    assert await registry.deliver_audit("demand", broker) == [], "its actor's, within its grace"
    [delivered] = await registry.deliver_audit("demand", broker, record)
    # The registry says what changed: the live version before and after.
    assert delivered == record.model_copy(update={"before": "demand.1", "after": "demand.0"})
    assert [(t, k) for t, k, _ in published] == [(settings.topic(AUDIT_TOPIC), record.id.encode())]
    assert AuditRecord.model_validate_json(published[0][2]) == delivered
    assert await registry.deliver_audit("demand", broker, record) == [] and len(published) == 1

    # Past its actor's grace, a record is anyone's to deliver (the learner's way).
    monkeypatch.setattr(registry_module, "AUDIT_GRACE_SECONDS", 0.0)
    late = AuditRecord.now("rollback", "ops@host", model="demand", target="demand.1")
    assert await registry.rollback("demand.1", by="ops@host", audit=late) == "demand.0"
    [overdue] = await registry.deliver_audit("demand", broker)
    assert (overdue.id, overdue.before, overdue.after) == (late.id, "demand.0", "demand.1")
    # A refused action keeps nothing.
    refused = AuditRecord.now("rollback", "ops@host", model="demand", target="demand.9")
    with pytest.raises(RegistryError):
        await registry.rollback("demand.9", by="ops@host", audit=refused)
    assert await registry.deliver_audit("demand", broker) == [] and len(published) == 2


async def test_one_canary_at_a_time_its_conclusion_checkpoints_and_a_rollback_ends_it(
    registry: ModelRegistry,
) -> None:
    await publish(registry, "", demand_model(0))
    record = {"reason": "learned", "pipeline": "linear_regression", "declaration": DEMAND.fingerprint}
    canary = await registry.canary("demand", "a", "demand.0", demand_model(5), record, b"with canary")
    assert canary == ("canary", "demand.1") and await registry.live("demand") == "demand.0"
    assert await registry.canary("demand", "a", "demand.0", demand_model(6), record, b"") == (
        "conflict",
        "demand.0",
    )
    checkpoint = await registry.last_checkpoint("demand")
    assert checkpoint is not None and (checkpoint.version, checkpoint.canary) == ("demand.0", "demand.1")
    await registry.checkpoint("demand", "a", "demand.0", b"later")
    checkpoint = await registry.last_checkpoint("demand")
    assert checkpoint is not None and (checkpoint.state, checkpoint.canary) == (b"later", "demand.1")

    promoted = await registry.conclude(
        "demand", "a", "demand.0", "demand.1", promote=True, reason="fine", state=b"promoted"
    )
    assert promoted == ("promoted", "demand.1") and await registry.canary_of("demand") is None
    checkpoint = await registry.last_checkpoint("demand")
    assert checkpoint is not None and (checkpoint.version, checkpoint.canary) == ("demand.1", None)
    assert (await registry.history("demand", 1))[0]["outcome"] == "promoted"

    assert (await registry.canary("demand", "a", "demand.1", demand_model(7), record, b""))[0] == "canary"
    assert await registry.rollback("demand.0", by="ops") == "demand.1"
    assert await registry.canary_of("demand") is None  # the learner adopts demand.0: no canary left


async def test_old_versions_are_pruned(settings: Settings) -> None:
    client = redis_client(settings)
    registry = ModelRegistry(client, settings.replace(model_versions_kept=2))
    parent = ""
    for labels in range(4):
        _, parent = await publish(registry, parent, demand_model(labels))
    assert [r["version"] for r in await registry.versions("demand", 10)] == ["demand.3", "demand.2"]
    with pytest.raises(RegistryError, match="pruned"):
        await registry.load("demand.1")
    await client.aclose()


async def test_a_tampered_snapshot_is_refused_and_workers_keep_their_version(
    registry: ModelRegistry, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    await publish(registry, "", demand_model(0))
    await publish(registry, "demand.0", demand_model(3))
    served = ServedModels(settings, registry, [DEMAND])
    await served.refresh()
    assert served["demand"].version == "demand.1"

    await publish(registry, "demand.1", demand_model(4))
    key = settings.key("model", hash_tagged(settings, "demand"), "snapshot", "demand.2")
    blob = await registry._redis.get(key)
    await registry._redis.set(key, blob[:-1] + bytes([blob[-1] ^ 1]))
    with caplog.at_level(logging.ERROR), pytest.raises(snapshot.SnapshotError, match="tampered"):
        await registry.load("demand.2")
    await served.refresh()
    assert served["demand"].version == "demand.1"
    assert "refusing live version demand.2: snapshot signature does not match" in caplog.text

    # Signed with another key: refused as well, never unpickled.
    other = ModelRegistry(registry._redis, settings.replace(model_signing_key="other"))
    with pytest.raises(snapshot.SnapshotError, match="another key"):
        await other.load("demand.1")


async def test_a_version_trained_under_another_declaration_is_refused(
    registry: ModelRegistry, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    await publish(registry, "", demand_model(3))
    served = ServedModels(settings, registry, [DEMAND])
    await served.refresh()
    assert served["demand"].version == "demand.0"
    await publish(registry, "demand.0", demand_model(4), declaration="0123456789abcdef")
    with caplog.at_level(logging.ERROR):
        await served.refresh()
    assert served["demand"].version == "demand.0"
    assert (
        f"refusing live version demand.1: demand: version demand.1 was trained under declaration "
        f"0123456789abcdef, this worker declares {DEMAND.fingerprint}"
    ) in caplog.text
