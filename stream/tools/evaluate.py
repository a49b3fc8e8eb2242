"""``scoring evaluate``: choose each use case's pipeline by prequential evaluation.

The simulated stream goes through the service's own features (entity state in Redis,
via the same Lua script), so the candidates are compared on exactly what they would see
in production. Labels are folded into the entity state one batch after their events,
like labels that arrive a little later.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from models.evaluation import EvaluationResult, compare, format_table
from models.online import Features
from stream.records import Rejection, parse
from stream.redis_client import redis_client
from stream.runtime.keys import entity_key, observed
from stream.runtime.state import Arrival, StateStore
from stream.settings import Settings
from stream.tools.simulator import SimulationConfig, labelled_events
from stream.usecases import USE_CASES, UseCase

BATCH = 500


async def feature_stream(
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
    client = redis_client(settings)
    store = StateStore(client, settings)
    secret = settings.pii_secret
    events: list[tuple[Any, float]] = []
    for topic, payload, label in labelled_events(config, start=start):
        if topic == use_case.event_topic:
            event = parse(use_case.event_type, orjson.dumps(payload))
            if isinstance(event, Rejection):
                raise ValueError(f"the simulator produced an invalid event: {event.detail}")
            events.append((event, float(label)))
    rows: list[tuple[Features, float]] = []
    try:
        for first in range(0, len(events), BATCH):
            batch = events[first : first + BATCH]
            claims = await store.observe(
                use_case,
                [
                    Arrival(
                        e.event_id,
                        entity_key(use_case.entity(e), secret),
                        f"eval/{i}",
                        observed(use_case.features, e, secret),
                    )
                    for i, (e, _) in enumerate(batch)
                ],
            )
            rows += [
                (use_case.features.compute(e, c.prior), y) for (e, y), c in zip(batch, claims, strict=True)
            ]
            await store.learn_labels(
                use_case, [(entity_key(use_case.entity(e), secret), y) for e, y in batch]
            )
    finally:
        keys = [k async for k in client.scan_iter(match=f"{settings.namespace}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    return rows


def evaluate(
    settings: Settings, config: SimulationConfig, *, start: dt.datetime | None = None
) -> dict[str, Sequence[EvaluationResult]]:
    """Every candidate of every use case, on the simulated stream of ``config`` ending at ``start``."""
    scratch = settings.replace(namespace=f"eval{uuid.uuid4().hex[:8]}")
    results: dict[str, Sequence[EvaluationResult]] = {}
    for use_case in USE_CASES:
        rows = asyncio.run(feature_stream(scratch, use_case, config, start=start))
        results[use_case.name] = compare(use_case.task, lambda: rows)  # noqa: B023 (called at once)
    return results


def report(results: dict[str, Sequence[EvaluationResult]]) -> str:
    return "\n\n".join(f"{name}\n{format_table(rs)}" for name, rs in results.items())
