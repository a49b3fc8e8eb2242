"""The model version a worker scores each use case with, following the registry.

Every worker polls the live pointer of each use case (one small Redis read every
``model_poll_seconds``) and, when it moved, loads the snapshot it names: a new version
from the learner, or an earlier one after a rollback. Until a version is published, a
worker scores with version ``<model>.0``: the configured champion pipeline, untrained,
which is also what the learner publishes first.
"""

from __future__ import annotations

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
from stream.runtime import metrics
from stream.runtime.registry import ModelRegistry, RegistryError, check_declaration
from stream.runtime.retry import TRANSIENT_ERRORS
from stream.settings import Settings
from stream.usecases import UseCase

log = logging.getLogger(__name__)
log.addFilter(Repeats())  # a refused version is met again at every poll


@dataclass(frozen=True)
class Served:
    """A model and the version it was published as."""

    version: str
    model: OnlineModel


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
    """The served version of each use case; :meth:`refresh` follows the registry."""

    def __init__(
        self, settings: Settings, registry: ModelRegistry, use_cases: Iterable[UseCase[Any, Any]]
    ) -> None:
        self._registry = registry
        self._use_cases = {uc.name: uc for uc in use_cases}
        self._served = {uc.name: Served(f"{uc.name}.0", untrained(settings, uc)) for uc in use_cases}
        self._published: set[str] = set()  # use cases serving a version the registry published
        for name in self._served:
            metrics.SERVED_VERSION.labels(name).set(0)  # exported from the start: a worker serves .0

    def __getitem__(self, use_case: str) -> Served:
        return self._served[use_case]

    def published(self, use_case: str) -> bool:
        """Whether ``use_case`` is served by a version the registry published, not the untrained
        ``.0`` a worker starts with before the registry has a live version."""
        return use_case in self._published

    async def refresh(self) -> None:
        """Load the live version of each use case, if it changed since the last call.

        A snapshot that fails its signature check, or a version trained under another
        declaration than the worker's, is refused: the worker keeps scoring with the
        version it has and logs the error until it is fixed (once per backoff step, as the
        polls meet it again). An outage raises: the caller retries it.
        """
        for name, served in self._served.items():
            live = await self._registry.live(name)
            if live is None:
                continue
            if live == served.version:  # a learner's first version is the untrained .0 itself
                self._published.add(name)
                continue
            try:
                check_declaration(self._use_cases[name], live, await self._registry.record(live))
                model = await self._registry.load(live)
            except (SnapshotError, RegistryError) as exc:
                log.error("%s: refusing live version %s: %s", name, live, exc)
                continue
            except TRANSIENT_ERRORS:
                raise
            except Exception:  # e.g. a snapshot of code this worker does not have
                log.exception("%s: cannot load live version %s", name, live)
                continue
            self._served[name] = Served(live, model)
            self._published.add(name)
            metrics.SERVED_VERSION.labels(name).set(version_number(live))
            log.info("%s: now scoring with %s (was %s)", name, live, served.version)
