"""The Faust app: the worker's tasks and timers, wired to the scoring service. Logic lives elsewhere.

Per use case, events are scored and labels joined to the scored events; a learner task
learns from the journal both write:

    transactions         -> score  -> predictions.fraud  (+ deadletter) -> journal
    transactions.labels  -> join   -> journal            (+ deadletter)
                            (a label that comes before its event is scored waits for it)
    journal              -> learner (the lease holder's) -> model versions, alerts.drift
    (same for sales, sales.labels, predictions.demand)

The input topics are consumed in batches by :class:`stream.runtime.batches.BatchConsumer`, a task
of the worker: a batch is acknowledged only after everything it produced is delivered,
so nothing is lost when a worker dies mid-batch. Every worker follows the live model
version (``refresh_models``). The learners run in the worker's learner processes, one per
use case (:mod:`stream.runtime.learning`), which a task of the worker starts and keeps running.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from functools import partial
from pathlib import Path
from typing import Any

import faust
import mode.loop
import prometheus_client
import redis
from faust.app.base import BootStrategy
from mode.types.signals import BaseSignalT

from stream import logs
from stream.kafka import ensure_topics, tls_context
from stream.redis_client import RedisClient, redis_client
from stream.runtime import collector
from stream.runtime.learning import worker_registry
from stream.runtime.retry import ErrorPolicy, reason
from stream.runtime.service import ScoringService
from stream.settings import DEVELOPMENT_SIGNING_KEY, Settings
from stream.usecases import all_topics

log = logging.getLogger(__name__)

# How often labels that arrived before their event are tried again, and matured events learned.
WAITING_LABELS_INTERVAL_SECONDS = 1.0
# How long a try at start waits for the broker or Redis to answer before it counts as failed.
START_TIMEOUT_SECONDS = 2.0


def faust_app(settings: Settings, app_id: str) -> faust.App:
    """A Faust app on the deployment's broker, without agents: raw bytes, no web server."""
    datadir = faust_datadir(settings)
    datadir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        app_id,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
        broker_credentials=broker_credentials(settings),
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


def broker_credentials(settings: Settings) -> faust.auth.Credentials | None:
    """Faust's form of :func:`stream.kafka.kafka_config`'s TLS and SASL; ``None`` for plaintext."""
    context = tls_context(settings)
    if settings.kafka_security_protocol.startswith("SASL_"):
        return faust.SASLCredentials(  # SASL_SSL when given a TLS context, else SASL_PLAINTEXT
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    return None if context is None else faust.SSLCredentials(context)


def create_app(service: ScoringService) -> faust.App:
    """A Faust app around ``service``: the batch consumer, the learner processes, and the timers."""
    settings = service.settings
    app = faust_app(settings, settings.consumer_group)
    # Faust's own Kafka clients stay off: the batch consumer and the publisher do the I/O.
    app.boot_strategy = BootStrategy(app, enable_kafka=False)

    app.task(service.consumer.run)
    for use_case in settings.use_cases:
        app.timer(WAITING_LABELS_INTERVAL_SECONDS, name=f"waiting_labels_{use_case.name}")(
            partial(service.handle_waiting_labels, use_case)
        )
    app.timer(settings.model_poll_seconds, name="refresh_models")(service.refresh_models)
    app.task(service.learning.run)

    @app.on_before_shutdown.connect
    async def _close(sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any) -> None:
        await service.close()

    return app


def faust_datadir(settings: Settings) -> Path:
    """Where Faust keeps its files (it would litter the working folder otherwise)."""
    return Path(settings.state_dir) / "faust"


def run_worker(settings: Settings) -> None:
    """Run a worker until it is stopped (SIGINT/SIGTERM), on uvloop's event loop."""
    mode.loop.use("uvloop")  # a faster event loop: see README Performance
    logs.setup(settings.log_level)  # as Faust will, for the lines before it
    try:
        asyncio.run(wait_for_services(settings))
    except KeyboardInterrupt:
        return  # stopped while it waited: there is nothing to shut down yet
    except ServiceRefused as refused:
        raise SystemExit(f"scoring worker: {refused}") from refused
    if settings.model_signing_key == DEVELOPMENT_SIGNING_KEY:
        log.warning(
            "model snapshots are signed with the development key (allowed on loopback only): "
            "set SCORING_MODEL_SIGNING_KEY"
        )
    service = ScoringService(settings)
    if settings.metrics_port:
        prometheus_client.start_http_server(settings.metrics_port, registry=worker_registry(service.learning))
        log.info("metrics on :%d/metrics", settings.metrics_port)
    app = create_app(service)
    collector.settle()
    faust_worker(app, settings).execute_from_commandline()


def faust_worker(app: faust.App, settings: Settings) -> faust.Worker:
    """Faust's worker for ``app``, logging at ``settings.log_level`` and nothing below it."""
    worker = faust.Worker(
        app, loglevel=settings.log_level, quiet=True, logging_config=logs.config(settings.log_level)
    )
    # At WARNING and above, Faust's terminal spinner would put the root logger at DEBUG, so
    # that every ``log.debug`` of the hot path builds a record for the spinner to discard.
    worker.spinner = None
    return worker


class ServiceRefused(Exception):
    """Redis answered but refused the connection as configured: trying again cannot help."""


async def wait_for_services(settings: Settings) -> None:
    """Return once the broker (the worker's topics created) and Redis answer.

    Until then each is tried again with the error policy's backoff, and each failed try
    logged as one line naming the address.

    Raises
    ------
    ServiceRefused
        When Redis refuses the password of ``SCORING_REDIS_URL``, or its TLS handshake
        fails (say, a certificate that ``SCORING_REDIS_CA_FILE`` does not vouch for).
    """
    policy = ErrorPolicy(settings)
    cache = redis_client(
        settings, socket_connect_timeout=START_TIMEOUT_SECONDS, socket_timeout=START_TIMEOUT_SECONDS
    )
    try:
        await asyncio.gather(
            policy.retrying(
                "start",
                lambda: asyncio.to_thread(ensure_topics, settings, all_topics(), START_TIMEOUT_SECONDS),
            ),
            policy.retrying("start", partial(_ping, cache, policy.redis.address)),
        )
    finally:
        await cache.aclose()


async def _ping(cache: RedisClient, address: str) -> None:
    try:
        await cache.ping()
    except redis.ConnectionError as exc:  # an outage, unless it is one of these refusals
        if isinstance(exc, redis.AuthenticationError) or isinstance(exc.__context__, ssl.SSLError):
            raise ServiceRefused(
                f"redis at {address} refused the connection ({reason(exc)}): "
                "check the password in SCORING_REDIS_URL and SCORING_REDIS_CA_FILE"
            ) from exc
        raise
