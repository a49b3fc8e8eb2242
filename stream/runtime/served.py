"""The model version a worker scores each use case with, following the registry.

Every worker polls the live pointer of each use case (one small Redis read every
``model_poll_seconds``) and, when it moved, loads the snapshot it names: a new version
from the learner, or an earlier one after a rollback. Until a version is published, a
worker scores with version ``<model>.0``: the configured champion pipeline, untrained,
which is also what the learner publishes first. A new version is checked and unpickled
off the event loop, then swapped in whole: scoring never waits for it, and never sees half of it.

A use case with a canary (``SCORING_CANARY``) may have a second version beside the live one:
it serves the entities :func:`in_canary` picks (a stable hash of the entity, the same in
every worker and for every event of the entity while that canary lasts), the live version
the others.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from models.lifecycle import Pipeline
from models.online import OnlineModel
from models.pipelines import CANDIDATES
from models.release import version_number
from models.snapshot import SnapshotError
from stream.backoff import Repeats
from stream.records import Arm
from stream.runtime import metrics
from stream.runtime.registry import ModelRegistry, RegistryError, check_declaration
from stream.runtime.retry import TRANSIENT_ERRORS
from stream.settings import Settings
from stream.usecases import UseCase

log = logging.getLogger(__name__)
log.addFilter(Repeats())  # a refused version is met again at every poll


@dataclass(frozen=True)
class Served:
    """A model, the version it was published as, and the arm it serves (a canary: the
    fraction of entities)."""

    version: str
    model: OnlineModel
    arm: Arm = "live"
    fraction: float = 1.0

    def serves(self, entity: str) -> bool:
        """Whether this canary serves ``entity`` (the clear entity name of the predictions)."""
        return in_canary(entity, self.version, self.fraction)


_HASH_RANGE = float(2**64)


def in_canary(entity: str, version: str, fraction: float) -> bool:
    """Whether canary ``version`` serving ``fraction`` of entities serves ``entity``.

    A keyed hash (BLAKE2b, keyed by the version) rather than Python's ``hash``: the same in
    every process, and each canary picks other entities, so none is always the first served
    by a new version.

    >>> picked = [in_canary(f"acc-{i}", "fraud.7", 0.1) for i in range(10_000)]
    >>> sum(picked), in_canary("acc-1", "fraud.7", 0.1) == picked[1]
    (985, True)
    """
    digest = hashlib.blake2b(entity.encode(), digest_size=8, key=version.encode()).digest()
    return int.from_bytes(digest, "big") < fraction * _HASH_RANGE


def configured_pipeline(settings: Settings, use_case: UseCase[Any, Any], role: str) -> Pipeline | None:
    """The pipeline ``role`` (``"champions"`` or ``"challengers"``) names for a use case, if any.

    The settings checked every name when they were read: this cannot fail.
    """
    name = settings.pipelines(role)[use_case.name]
    return None if name is None else (name, CANDIDATES[use_case.task][name])


def configured_champion(settings: Settings, use_case: UseCase[Any, Any]) -> Pipeline:
    """The pipeline a use case starts serving."""
    chosen = configured_pipeline(settings, use_case, "champions")
    assert chosen is not None, "every use case declares a champion"
    return chosen


def untrained(settings: Settings, use_case: UseCase[Any, Any]) -> OnlineModel:
    """Version ``.0`` of a use case: its champion pipeline, untrained."""
    return OnlineModel(use_case.name, use_case.task, configured_champion(settings, use_case)[1]())


class ServedModels:
    """The served versions of each use case (live, and a canary if any); :meth:`refresh`
    follows the registry."""

    def __init__(
        self, settings: Settings, registry: ModelRegistry, use_cases: Iterable[UseCase[Any, Any]]
    ) -> None:
        self._registry = registry
        self._use_cases = {uc.name: uc for uc in use_cases}
        self._served = {uc.name: Served(f"{uc.name}.0", untrained(settings, uc)) for uc in use_cases}
        self._canaries: dict[str, Served | None] = dict.fromkeys(self._use_cases)
        self._published: set[str] = set()  # use cases serving a version the registry published
        for name in self._served:
            metrics.SERVED_VERSION.labels(name, "live").set(0)  # exported from the start: a worker serves .0

    @property
    def use_cases(self) -> tuple[str, ...]:
        """The names of the use cases served."""
        return tuple(self._served)

    def __getitem__(self, use_case: str) -> Served:
        """The live version of ``use_case``."""
        return self._served[use_case]

    def canary(self, use_case: str) -> Served | None:
        """The canary of ``use_case``, if one serves."""
        return self._canaries[use_case]

    def published(self, use_case: str) -> bool:
        """Whether ``use_case`` is served by a version the registry published, not the untrained
        ``.0`` a worker starts with before the registry has a live version."""
        return use_case in self._published

    async def refresh(self) -> None:
        """Load the live version and the canary of each use case, if they changed since the last call.

        A snapshot that fails its signature check, or a version trained under another
        declaration than the worker's, is refused: the worker keeps scoring with the
        version it has (or without the canary) and logs the error until it is fixed (once
        per backoff step, as the polls meet it again). An outage raises: the caller retries it.
        """
        for name, served in self._served.items():
            live = await self._registry.live(name)
            if live == served.version:  # a learner's first version is the untrained .0 itself
                self._published.add(name)
            elif live is not None and (loaded := await self._load(name, live, "live")) is not None:
                self._served[name] = loaded
                self._published.add(name)
                log.info("%s: now scoring with %s (was %s)", name, live, served.version)
            canary, current = await self._registry.canary_of(name), self._canaries[name]
            if canary == (current.version if current else None):
                continue
            self._canaries[name] = None if canary is None else await self._load(name, canary, "canary")
            if current is not None:
                metrics.SERVED_VERSION.remove(name, "canary")
            if (now := self._canaries[name]) is not None:
                log.info("%s: %s serves %.0f%% of entities as canary", name, now.version, 100 * now.fraction)

    async def _load(self, name: str, version: str, arm: Arm) -> Served | None:
        try:
            record = await self._registry.record(version)
            check_declaration(self._use_cases[name], version, record)
            blob = await self._registry.snapshot(version)
            # Checked and unpickled in a thread: scoring goes on meanwhile, with the version it has.
            model = await asyncio.to_thread(self._registry.unpickled, version, blob)
        except (SnapshotError, RegistryError) as exc:
            log.error("%s: refusing %s version %s: %s", name, arm, version, exc)
            return None
        except TRANSIENT_ERRORS:
            raise
        except Exception:  # e.g. a snapshot of code this worker does not have
            log.exception("%s: cannot load %s version %s", name, arm, version)
            return None
        metrics.SERVED_VERSION.labels(name, arm).set(version_number(version))
        return Served(version, model, arm, record.get("canary_fraction", 0.0) if arm == "canary" else 1.0)
