"""The worker's one error policy: what is retried, how long it waits, and what is logged.

- **Transient** errors are outages of Redis or the broker, which end by themselves
  (:data:`TRANSIENT_ERRORS`): the call is tried again until it succeeds — a batch is
  neither acknowledged nor dead-lettered meanwhile.
- Any other error is not retried by :meth:`ErrorPolicy.retrying`: the caller decides what
  it means (a batch dead-letters the failing message as ``internal_error``, a model
  refresh keeps the version it has, a learner restores its checkpoint after a pause).
- Waits follow one :class:`Backoff`: 0.5 s, doubled after each failure up to 10 s, and
  back to 0.5 s after a success.
- An outage is logged once per try, naming the service and its address, whatever the
  number of callers waiting on it (they share one :class:`Outage` and its next try), and
  once when it ends. librdkafka's own log lines and errors go through Python logging
  (:class:`stream.kafka.KafkaLog`), and a warning repeated by the clients' retries is let
  through once per backoff step (:class:`stream.backoff.Repeats`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

import redis.exceptions
from confluent_kafka import KafkaError, KafkaException

from stream.backoff import Backoff
from stream.runtime import metrics
from stream.settings import Settings

log = logging.getLogger(__name__)

REDIS_OUTAGES = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,  # a restarted Redis reading its append-only file
    # A Redis Cluster failing over, or resharding: a slot without a master for a while.
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
)
BROKER_OUTAGES = (KafkaException,)  # the publisher's undelivered records are one too
TRANSIENT_ERRORS = REDIS_OUTAGES + BROKER_OUTAGES

T = TypeVar("T")


class Outage:
    """A service the worker needs (Redis, the broker) as its callers see it: answering, or out.

    Every caller that meets the outage waits for the same next try, so it is logged once
    per try however many batches, learners and timers wait on it, and once when it ends.
    """

    def __init__(self, service: str, address: str) -> None:
        self.service, self.address = service, address
        self._backoff = Backoff()
        self._since: float | None = None  # when it stopped answering (monotonic); None: it answers
        self._next_try = 0.0

    def failed(self, exc: BaseException) -> float:
        """A call failed with ``exc``: the seconds to wait before trying again."""
        now = time.monotonic()
        if self._since is None:
            self._since = now
        if now >= self._next_try:  # the first failure of this try: schedule the next, and say so
            delay = self._backoff.next()
            self._next_try = now + delay
            log.warning(
                "%s at %s does not answer (%s); retrying in %.1f s",
                self.service,
                self.address,
                reason(exc),
                delay,
            )
        return self._next_try - now

    def answered(self) -> None:
        """A call succeeded: the outage, if there was one, is over."""
        if self._since is None:
            return
        log.info(
            "%s at %s answers again (after %.1f s)",
            self.service,
            self.address,
            time.monotonic() - self._since,
        )
        self._since = None
        self._next_try = 0.0
        self._backoff.reset()


class Retry:
    """The failures of one caller (a topic's batches, a learner) and how long it waits after each."""

    def __init__(self, policy: ErrorPolicy, what: str) -> None:
        self._policy, self.what = policy, what
        self._backoff = Backoff()  # for errors that are no outage
        self._outage: Outage | None = None

    def failed(self, exc: Exception) -> float:
        """Count and log ``exc``; the seconds to wait before trying again.

        An outage waits for its next try (and is logged there, once per try); any other
        error is logged with its traceback and waits on this caller's own backoff.
        """
        metrics.RETRIES.labels(self.what, type(exc).__name__).inc()
        self._outage = self._policy.outage(exc)
        if self._outage is not None:
            return self._outage.failed(exc)
        delay = self._backoff.next()
        log.error("%s failed (%s); trying again in %.1f s", self.what, reason(exc), delay, exc_info=exc)
        return delay

    def succeeded(self) -> None:
        if self._outage is not None:
            self._outage.answered()
            self._outage = None
        self._backoff.reset()


class ErrorPolicy:
    """The error policy of one worker: the outages of its Redis and broker, and the retry helper."""

    def __init__(self, settings: Settings) -> None:
        self.redis = Outage("redis", redis_address(settings.redis_url))
        self.broker = Outage("the broker", settings.kafka_bootstrap)

    def outage(self, exc: BaseException) -> Outage | None:
        """The outage ``exc`` is a sign of; None when it is not transient."""
        if isinstance(exc, REDIS_OUTAGES):
            return self.redis
        if isinstance(exc, BROKER_OUTAGES):
            return self.broker
        return None

    def retry(self, what: str) -> Retry:
        """The retries of a caller that runs its own loop (``what`` labels its metric)."""
        return Retry(self, what)

    async def retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()``, tried again after each transient error until it succeeds; others raise."""
        retry = self.retry(what)
        while True:
            try:
                result = await attempt()
            except TRANSIENT_ERRORS as exc:
                await asyncio.sleep(retry.failed(exc))
            else:
                retry.succeeded()
                return result


def reason(exc: BaseException) -> str:
    """``Type: message``, with a Kafka error's own message rather than its repr.

    >>> reason(KafkaException(KafkaError(KafkaError._TRANSPORT, "Connection refused")))
    'KafkaException: Connection refused'
    """
    detail = exc.args[0].str() if exc.args and isinstance(exc.args[0], KafkaError) else str(exc)
    return f"{type(exc).__name__}: {detail}"


def redis_address(url: str) -> str:
    """``host:port`` of a Redis URL (the socket path of a ``unix://`` one).

    >>> redis_address("redis://cache/0"), redis_address("unix:///run/redis.sock")
    ('cache:6379', '/run/redis.sock')
    """
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}" if parts.hostname else parts.path
