"""The model registry in Redis: published versions, the live pointer, checkpoints, the lease.

Models are published as data: the learner of a use case writes each new version as a
signed snapshot (see :mod:`models.snapshot`) with a record of where it came from, and
moves the *live* pointer to it; every worker polls the pointer and loads the snapshot
it names. Redis rather than a compacted Kafka topic, because a publication must change
the snapshot, its record, the live pointer and the learner's checkpoint in one atomic
step (a Lua script), the workers already share this Redis, and reading one small key
every half second is how they notice a rollback as well as a new version.

Keys (under the namespace prefix), per use case ``<m>``:

- ``model:<m>:live``: the version workers score with, ``<m>.<n>``;
- ``model:<m>:canary``: the version that serves the canary's fraction of entities, if one does
  (its record's ``canary_fraction`` says which fraction);
- ``model:<m>:seq``: the next version number;
- ``model:<m>:records`` hash and ``model:<m>:order`` sorted set: each kept version's
  record (parent, time, reason, pipeline, labels learned, metrics, label offsets, the
  gate's verdict), the candidates the gate held included (reason ``held``, never live);
- ``model:<m>:snapshot:<version>``: the signed snapshot of each kept version;
- ``model:<m>:checkpoint`` hash: the learner's signed state, the live version and the canary
  it goes with;
- ``model:<m>:lease``: which worker's learner owns the model's updates;
- ``model:<m>:history``: rollbacks and canaries' outcomes, newest first;
- ``model:<m>:audit`` hash and ``model:<m>:audit:due`` sorted set: the audit records of
  rollbacks, canaries' outcomes and bootstraps not delivered yet, by id, and when others
  than their actor may deliver them. A call that does one of those keeps its record in the
  same atomic step, and its actor delivers it at once (:meth:`ModelRegistry.deliver_audit`);
  if the actor dies or the broker does not answer, the model's learner delivers it
  :data:`AUDIT_GRACE_SECONDS` later: a record is never lost (and is delivered twice, with one
  id, only by an actor slower than that).

On a Redis Cluster ``<m>`` is a hash tag (``model:{<m>}:live``): a use case's registry lives
in one slot, as every call of ``lua/registry.lua`` touches all of it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast

import orjson

from models import snapshot
from models.online import OnlineModel
from stream.kafka import ProducerRecord
from stream.records import AuditRecord
from stream.redis_client import RedisClient
from stream.runtime.keys import hash_tagged
from stream.settings import Settings
from stream.usecases import AUDIT_TOPIC, UseCase

_SCRIPT = resources.files("stream.runtime").joinpath("lua/registry.lua").read_text()


def audit_message(settings: Settings, record: AuditRecord) -> ProducerRecord:
    """``record`` as it is published on the audit topic: keyed by its id."""
    return settings.topic(AUDIT_TOPIC), record.id.encode(), record.to_json()


Publish = Callable[[Sequence[ProducerRecord]], Awaitable[None]]
"""Publishes records (topic, key, value) and returns once the broker has them."""

AUDIT_GRACE_SECONDS = 60.0
"""How long an action's actor has to deliver its audit record before the learner does: longer
than a command waits for the broker (:data:`stream.kafka.ADMIN_TIMEOUT_SECONDS`)."""


class RegistryError(RuntimeError):
    """A registry request that cannot be carried out (unknown version, wrong model...)."""


class DeclarationMismatch(RegistryError):
    """A version or checkpoint trained under another declaration than this worker's."""

    def __init__(self, model: str, what: str, theirs: str, ours: str) -> None:
        super().__init__(
            f"{model}: {what} was trained under declaration {theirs}, this worker declares {ours}: "
            "its features would not mean what the model learned (publish a version under this "
            "declaration, e.g. with `scoring bootstrap`, or deploy the declaration it was trained with)"
        )


def check_declaration(use_case: UseCase[Any, Any], version: str, record: dict[str, Any]) -> None:
    """Refuse (:class:`DeclarationMismatch`) a version whose record names another declaration."""
    theirs = record.get("declaration")
    if theirs != use_case.fingerprint:
        raise DeclarationMismatch(use_case.name, f"version {version}", str(theirs), use_case.fingerprint)


@dataclass(frozen=True)
class Checkpoint:
    """The learner's last checkpoint: its signed state, the live version and the canary
    (``None``: none) it goes with."""

    state: bytes
    version: str
    at: float
    canary: str | None = None


def use_case_of(version: str) -> str:
    """The use case a version belongs to: ``"fraud.12"`` -> ``"fraud"``."""
    name, _, number = version.rpartition(".")
    if not name or not number.isdigit():
        raise RegistryError(f"{version!r} is not a model version (`<model>.<number>`)")
    return name


class ModelRegistry:
    """Published model versions of every use case, in the deployment's Redis."""

    def __init__(self, client: RedisClient, settings: Settings) -> None:
        self._redis = client
        self._settings = settings
        self._script = client.register_script(_SCRIPT)

    def _key(self, model: str, *parts: str) -> str:
        return self._settings.key("model", hash_tagged(self._settings, model), *parts)

    def _keys(self, model: str) -> list[str]:
        return (
            [self._key(model, part) for part in ("lease", "live", "seq", "records", "order", "checkpoint")]
            + [self._key(model, "history"), self._key(model, "canary")]
            + [self._key(model, "audit"), self._key(model, "audit", "due")]
        )

    async def _call(self, command: str, model: str, params: dict[str, Any], *blobs: bytes) -> Any:
        params = {**params, "snapshots": self._key(model, "snapshot", "")}
        return await self._script(keys=self._keys(model), args=[command, orjson.dumps(params), *blobs])

    # Learner side ---------------------------------------------------------------------

    async def lease(self, model: str, token: str) -> bool:
        """Take or renew the learner lease of ``model`` for ``learner_lease_seconds``."""
        ttl_ms = int(self._settings.learner_lease_seconds * 1000)
        return bool(await self._call("lease", model, {"token": token, "ttl_ms": ttl_ms}))

    async def release(self, model: str, token: str) -> None:
        await self._call("release", model, {"token": token})

    async def publish(
        self, model: str, token: str, parent: str, served: OnlineModel, record: dict[str, Any], state: bytes
    ) -> tuple[str, str]:
        """Publish ``served`` as the new live version, with the learner ``state`` as checkpoint.

        Returns ``("published", version)``; or ``("conflict", live)`` when the live version
        is no longer ``parent`` (a rollback), ``("lost_lease", live)`` when another learner
        owns the model now. Nothing is written in those cases.
        """
        return await self._add(model, token, parent, served, record, state, "live")

    async def canary(
        self,
        model: str,
        token: str,
        parent: str,
        candidate: OnlineModel,
        record: dict[str, Any],
        state: bytes,
    ) -> tuple[str, str]:
        """Publish ``candidate`` as the canary beside the live ``parent``, with the learner ``state``.

        Returns ``("canary", version)``; ``("conflict", live)`` when the live version is no
        longer ``parent`` or a canary serves already; ``("lost_lease", live)`` as :meth:`publish`.
        """
        return await self._add(model, token, parent, candidate, record, state, "canary")

    async def conclude(
        self,
        model: str,
        token: str,
        parent: str,
        canary: str,
        *,
        promote: bool,
        reason: str,
        state: bytes,
        audit: AuditRecord | None = None,
    ) -> tuple[str, str]:
        """End the ``canary`` beside the live ``parent``: promoted to every entity, or rolled back,
        with the learner ``state`` as checkpoint, an entry in the history and the ``audit`` record
        (its ``before`` and ``after`` the live versions), to deliver (:meth:`deliver_audit`).

        Returns ``("promoted" | "rolled_back", live)``; ``conflict`` or ``lost_lease`` (nothing
        written) as :meth:`publish`.
        """
        params = {
            "token": token,
            "parent": parent,
            "version": canary,
            "promote": promote,
            "at": time.time(),
            "entry": {"by": "canary", "reason": reason},
            **_audit_params(audit),
        }
        outcome, live = await self._call("conclude", model, params, state)
        return outcome.decode(), live.decode()

    async def hold(
        self, model: str, token: str, parent: str, candidate: OnlineModel, record: dict[str, Any]
    ) -> tuple[str, str]:
        """Keep a candidate the gate held, as a version that is not live (``record["reason"]``
        is ``held``): ``("held", version)``, or ``conflict``/``lost_lease`` as :meth:`publish`."""
        return await self._add(model, token, parent, candidate, record, None, "held")

    async def _add(
        self,
        model: str,
        token: str,
        parent: str,
        version: OnlineModel,
        record: dict[str, Any],
        state: bytes | None,
        role: str,
    ) -> tuple[str, str]:
        """A new version by the lease holder, ``role`` ``live`` or ``canary`` (with its checkpoint
        ``state``) or ``held`` (no state)."""
        params = {
            "token": token,
            "model": model,
            "parent": parent,
            "record": record,
            "keep": max(1, self._settings.model_versions_kept),
            "at": time.time(),
            "first": 0,
            "as": role,
        }
        blob = snapshot.dumps(version, self._settings.signing_key)
        command = {"live": "publish", "canary": "canary", "held": "hold"}[role]
        outcome, name = await self._call(command, model, params, blob, *([] if state is None else [state]))
        return outcome.decode(), name.decode()

    async def bootstrap(
        self,
        model: str,
        parent: str,
        served: OnlineModel,
        record: dict[str, Any],
        state: bytes,
        *,
        labels_learned_max: int,
        audit: AuditRecord | None = None,
    ) -> tuple[str, str]:
        """Publish a version learned offline (``scoring bootstrap``) with its learner ``state``
        and the ``audit`` record, as :meth:`conclude`.

        Needs no lease: the learner that holds it finds the live version moved and restores
        this checkpoint. Returns ``("published", version)``; ``("conflict", live)`` when the
        live version is no longer ``parent``; ``("learned", live)`` when the live version's
        lineage learned more than ``labels_learned_max`` labels (``-1``: allow any). Nothing
        is written in those cases.
        """
        params = {
            "model": model,
            "parent": parent,
            "record": record,
            "keep": max(1, self._settings.model_versions_kept),
            "at": time.time(),
            "labels_learned_max": labels_learned_max,
            "first": 1,  # never .0: that is the untrained champion a worker serves before any load
            "as": "live",
            **_audit_params(audit),
        }
        blob = snapshot.dumps(served, self._settings.signing_key)
        outcome, version = await self._call("bootstrap", model, params, blob, state)
        return outcome.decode(), version.decode()

    async def checkpoint(self, model: str, token: str, version: str, state: bytes) -> tuple[str, str]:
        """Store the learner ``state`` with the live ``version`` it goes with (see :meth:`publish`)."""
        params = {"token": token, "version": version, "at": time.time()}
        outcome, live = await self._call("checkpoint", model, params, state)
        return outcome.decode(), live.decode()

    async def last_checkpoint(self, model: str) -> Checkpoint | None:
        fields = cast(dict[bytes, bytes], await self._redis.hgetall(self._key(model, "checkpoint")))
        if not fields:
            return None
        canary = fields.get(b"canary", b"").decode()
        return Checkpoint(fields[b"state"], fields[b"version"].decode(), float(fields[b"at"]), canary or None)

    # Worker and operator side -----------------------------------------------------------

    async def latest(self, model: str) -> int:
        """The highest version number published or held so far (-1: none)."""
        raw = await self._redis.get(self._key(model, "seq"))
        return int(raw) - 1 if raw is not None else -1

    async def live(self, model: str) -> str | None:
        """The version workers should score ``model`` with, if one was published."""
        raw = cast(bytes | None, await self._redis.get(self._key(model, "live")))
        return raw.decode() if raw is not None else None

    async def canary_of(self, model: str) -> str | None:
        """The version serving ``model``'s canary entities, if one does."""
        raw = cast(bytes | None, await self._redis.get(self._key(model, "canary")))
        return raw.decode() if raw is not None else None

    async def load(self, version: str) -> OnlineModel:
        """The model of a kept version, its signature checked before it is unpickled."""
        return self.unpickled(version, await self.snapshot(version))

    def unpickled(self, version: str, blob: bytes) -> OnlineModel:
        """The model in ``blob``, the snapshot of ``version``, its signature checked first (no I/O:
        a worker runs it off its event loop)."""
        served = snapshot.loads(blob, self._settings.signing_key)
        if not isinstance(served, OnlineModel):
            raise RegistryError(f"snapshot of {version} holds a {type(served).__name__}, not a model")
        return served

    async def snapshot(self, version: str) -> bytes:
        """The signed snapshot of a kept version, as stored."""
        blob = await self._redis.get(self._key(use_case_of(version), "snapshot", version))
        if blob is None:
            raise RegistryError(f"no snapshot of {version}: never published, or pruned")
        return cast(bytes, blob)

    async def record(self, version: str) -> dict[str, Any]:
        """The record of a kept version."""
        raw = await self._redis.hget(self._key(use_case_of(version), "records"), version)
        if raw is None:
            raise RegistryError(f"no record of {version}: never published, or pruned")
        return cast(dict[str, Any], orjson.loads(raw))

    async def versions(self, model: str, limit: int) -> list[dict[str, Any]]:
        """Records of the newest ``limit`` kept versions, newest first."""
        names = cast(list[bytes], await self._redis.zrevrange(self._key(model, "order"), 0, limit - 1))
        if not names:
            return []
        raws = await self._redis.hmget(self._key(model, "records"), names)
        return [orjson.loads(raw) for raw in raws if raw is not None]

    async def lineage(self, version: str, limit: int = 10_000) -> list[dict[str, Any]]:
        """The records of ``version`` and its parents, as far as they are kept (this one first)."""
        records = [await self.record(version)]
        while (parent := records[-1].get("parent")) and len(records) < limit:
            try:
                records.append(await self.record(parent))
            except RegistryError:  # pruned
                break
        return records

    async def history(self, model: str, limit: int) -> list[dict[str, Any]]:
        """Rollbacks and canaries' outcomes of ``model``, newest first."""
        return [
            orjson.loads(raw) for raw in await self._redis.lrange(self._key(model, "history"), 0, limit - 1)
        ]

    async def rollback(
        self, version: str, by: str, reason: str = "", audit: AuditRecord | None = None
    ) -> str:
        """Make ``version`` live again, for every worker and the learner; returns the previous one.

        The snapshot's signature is checked first: a rollback never makes workers load
        a snapshot they would refuse. ``by`` (an operator, or ``watch`` for the learner's
        automatic rollbacks) and ``reason`` go in the history, the ``audit`` record as
        :meth:`conclude` keeps it.
        """
        model = use_case_of(version)
        await self.load(version)
        params = {
            "version": version,
            "at": time.time(),
            "entry": {"by": by, "reason": reason},
            **_audit_params(audit),
        }
        outcome, previous = await self._call("rollback", model, params)
        if outcome.decode() != "rolled_back":
            raise RegistryError(f"cannot roll back to {version}: {outcome.decode()}")
        return cast(bytes, previous).decode()

    async def deliver_audit(
        self, model: str, publish: Publish, record: AuditRecord | None = None
    ) -> list[AuditRecord]:
        """Deliver an audit record a registry call kept for ``model`` with ``publish``, then forget
        it: ``record``, by its actor; without one, every record its actor has not delivered
        within :data:`AUDIT_GRACE_SECONDS` (the learner's way). Returns those delivered."""
        kept, due = self._key(model, "audit"), self._key(model, "audit", "due")
        if record is None:
            ids = cast(list[bytes], await self._redis.zrangebyscore(due, "-inf", time.time()))
        else:
            ids = [record.id.encode()]
        if not ids:
            return []
        values = cast(list[bytes | None], await self._redis.hmget(kept, ids))
        found = [
            (record_id, value) for record_id, value in zip(ids, values, strict=True) if value is not None
        ]
        if found:
            topic = self._settings.topic(AUDIT_TOPIC)
            await publish([(topic, record_id, value) for record_id, value in found])
            await self._redis.hdel(kept, *(record_id for record_id, _ in found))
        await self._redis.zrem(due, *ids)
        return [AuditRecord.model_validate_json(value) for _, value in found]


def _audit_params(audit: AuditRecord | None) -> dict[str, Any]:
    """A registry call's parameter for the audit record it keeps, if any (``registry.lua``
    sets its ``before`` and ``after``)."""
    if audit is None:
        return {}
    return {"audit": audit.model_dump(mode="json"), "audit_due": time.time() + AUDIT_GRACE_SECONDS}
