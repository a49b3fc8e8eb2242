"""``scoring evaluate``: choose each use case's pipeline by prequential evaluation.

The simulated stream goes through the service's own features (each event applied to its
entity's state by :class:`~stream.features.EntityState`, as a worker does before scoring it),
so the candidates are compared on exactly what they would see in production. Labels are
folded into the entity state one batch after their events, like labels that arrive a little
later.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import orjson

from models.evaluation import EvaluationResult, compare, format_table
from models.online import Features
from stream.features import EntityState
from stream.records import Rejection, parse
from stream.runtime.keys import EntityKey, entity_key, observed
from stream.settings import Settings
from stream.tools.simulator import SimulationConfig, labelled_events
from stream.usecases import USE_CASES, UseCase

BATCH = 500


def feature_stream(
    settings: Settings,
    use_case: UseCase[Any, Any],
    config: SimulationConfig,
    *,
    start: dt.datetime | None = None,
) -> list[tuple[Features, float]]:
    """The (features, label) pairs the service would learn from, in stream order.

    ``start`` is passed to :func:`~stream.tools.simulator.labelled_events` (default now): fix it
    for the same stream, time of day included, on every call.
    """
    secret, features = settings.pii_secret, use_case.features
    events: list[tuple[Any, float]] = []
    for topic, payload, label in labelled_events(config, start=start):
        if topic == use_case.event_topic:
            event = parse(use_case.event_type, orjson.dumps(payload))
            if isinstance(event, Rejection):
                raise ValueError(f"the simulator produced an invalid event: {event.detail}")
            events.append((event, float(label)))
    entities: dict[EntityKey, EntityState] = {}
    rows: list[tuple[Features, float]] = []
    for first in range(0, len(events), BATCH):
        batch = [(entity_key(use_case.entity(e), secret), e, y) for e, y in events[first : first + BATCH]]
        for key, event, y in batch:
            prior = entities.setdefault(key, EntityState()).observe(
                observed(features, event, secret), features.decay
            )
            rows.append((features.compute(event, prior), y))
        for key, _, y in batch:
            entities[key].learn(y, features.decay)
    return rows


def evaluate(
    settings: Settings, config: SimulationConfig, *, start: dt.datetime | None = None
) -> dict[str, Sequence[EvaluationResult]]:
    """Every candidate of every use case, on the simulated stream of ``config`` ending at ``start``."""
    results: dict[str, Sequence[EvaluationResult]] = {}
    for use_case in USE_CASES:
        rows = feature_stream(settings, use_case, config, start=start)
        results[use_case.name] = compare(use_case.task, lambda: rows)  # noqa: B023 (called at once)
    return results


def report(results: dict[str, Sequence[EvaluationResult]]) -> str:
    return "\n\n".join(f"{name}\n{format_table(rs)}" for name, rs in results.items())
