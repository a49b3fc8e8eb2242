"""The Faust app: topics and agents, wired to the scoring service. Logic lives elsewhere.

Per use case, one agent scores its event topic and one joins its label topic to the
scored events; a learner task learns from the journal they both write:

    transactions         -> score_fraud  -> predictions.fraud  (+ deadletter) -> journal
    transactions.labels  -> learn_fraud  -> journal            (+ deadletter)
                            (a label that comes before its event is scored waits for it)
    journal              -> learner (the lease holder's) -> model versions, alerts.drift
    (same for sales, sales.labels, predictions.demand)

Agents take batches with manual acknowledgement: a batch is acknowledged only after
everything it produced is delivered, so nothing is lost when a worker dies mid-batch.
Every worker follows the live model version (``refresh_models``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import faust
import prometheus_client
from mode.types.signals import BaseSignalT

from stream import faust_patches
from stream.scoring import Message
from stream.service import ScoringService
from stream.settings import Settings
from stream.topics import ensure_topics
from stream.usecases import USE_CASES, all_topics

log = logging.getLogger(__name__)

Handler = Callable[[Sequence[Message]], Awaitable[None]]

# How often labels that arrived before their event are tried again.
PARKED_LABELS_INTERVAL_SECONDS = 1.0


def faust_app(settings: Settings, app_id: str) -> faust.App:
    """A Faust app on the deployment's broker, without agents: raw bytes, no web server."""
    datadir = faust_datadir(settings)
    datadir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        app_id,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=settings.heartbeat_interval_seconds,
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.topic_partitions,
        topic_disable_leader=True,
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
        datadir=str(datadir),
    )


def create_app(settings: Settings) -> faust.App:
    """A Faust app for ``settings``, with one scoring and one learning agent per use case."""
    app = faust_app(settings, settings.consumer_group)
    faust_patches.apply()
    setattr(app, faust_patches.ATTRIBUTE, settings.fetch_max_wait_ms)
    service = ScoringService(settings)

    for use_case in USE_CASES:
        for topic_name, name, handle in (
            (use_case.event_topic, f"score_{use_case.name}", partial(service.handle_events, use_case)),
            (use_case.label_topic, f"learn_{use_case.name}", partial(service.handle_labels, use_case)),
        ):
            topic = app.topic(settings.topic(topic_name), key_type=bytes, value_type=bytes)
            app.agent(topic, name=name)(_batch_agent(name, handle, settings))

        app.timer(PARKED_LABELS_INTERVAL_SECONDS, name=f"unpark_{use_case.name}")(
            partial(service.handle_parked_labels, use_case)
        )

    app.timer(settings.model_poll_seconds, name="refresh_models")(service.refresh_models)
    for learner in service.learners:
        app.task(learner.run)

    @app.on_before_shutdown.connect
    async def _close(sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any) -> None:
        await service.close()

    return app


def _batch_agent(name: str, handle: Handler, settings: Settings) -> Callable[[Any], Awaitable[None]]:
    async def agent(stream: Any) -> None:
        events: AsyncIterator[Sequence[Any]] = stream.noack_take(
            settings.batch_size, within=settings.batch_window_seconds
        )
        async for batch in events:
            await handle(
                [
                    Message(
                        e.message.topic,
                        e.message.partition,
                        e.message.offset,
                        e.message.value,
                        e.message.timestamp,
                    )
                    for e in batch
                ]
            )
            for event in batch:
                await stream.ack(event)

    agent.__qualname__ = name  # what Faust's logs call it
    return agent


def faust_datadir(settings: Settings) -> Path:
    """Where Faust keeps its files (it would litter the working folder otherwise)."""
    return Path(settings.state_dir) / "faust"


def run_worker(settings: Settings) -> None:
    """Run a worker until it is stopped (SIGINT/SIGTERM)."""
    ensure_topics(settings, all_topics())
    if settings.model_signing_key == Settings().model_signing_key:
        log.warning("model snapshots are signed with the development key: set SCORING_MODEL_SIGNING_KEY")
    if settings.metrics_port:
        prometheus_client.start_http_server(settings.metrics_port)
        log.info("metrics on :%d/metrics", settings.metrics_port)
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
