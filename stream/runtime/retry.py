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
  (:class:`KafkaLog`), and a warning repeated by the clients' retries is let through once
  per backoff step (:class:`Repeats`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis.exceptions
from confluent_kafka import KafkaError, KafkaException

from stream.runtime import metrics
from stream.settings import Settings

log = logging.getLogger(__name__)

REDIS_OUTAGES = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,  # a restarted Redis reading its append-only file
)
BROKER_OUTAGES = (KafkaException,)  # the publisher's undelivered records are one too
TRANSIENT_ERRORS = REDIS_OUTAGES + BROKER_OUTAGES

FIRST_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 10.0

T = TypeVar("T")


class Backoff:
    """Exponential delays with a cap; :meth:`reset` after a success starts over.

    >>> backoff = Backoff()
    >>> [backoff.next() for _ in range(7)]
    [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    >>> backoff.reset(); backoff.next()
    0.5
    """

    def __init__(self, first: float = FIRST_DELAY_SECONDS, cap: float = MAX_DELAY_SECONDS) -> None:
        self.first, self.cap = first, cap
        self._next = first

    def next(self) -> float:
        """The delay before the next try: twice the previous one, at most the cap."""
        delay = self._next
        self._next = min(2 * delay, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.first


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


# librdkafka's log lines and errors ------------------------------------------------------------


@dataclass
class _Repeated:
    last: float  # when it was last seen
    next_at: float  # when a repeat is let through again
    backoff: Backoff = field(default_factory=Backoff)
    held: int = 0  # repeats held back since the last one let through


class Repeats(logging.Filter):
    """Lets a warning or error through, then its repeats at most once per backoff step.

    The repeat let through says how many were held back before it. A line not seen for
    longer than the backoff's cap starts over.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()  # librdkafka's callbacks come from several threads
        self._lines: dict[str, _Repeated] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        line, now = record.getMessage(), time.monotonic()
        with self._lock:
            seen = self._lines.get(line)
            if seen is None or now - seen.last > MAX_DELAY_SECONDS:
                self._lines = {k: v for k, v in self._lines.items() if now - v.last <= MAX_DELAY_SECONDS}
                seen = self._lines[line] = _Repeated(now, now)
            seen.last = now
            if now < seen.next_at:
                seen.held += 1
                return False
            seen.next_at = now + seen.backoff.next()
            held, seen.held = seen.held, 0
        if held:
            record.msg, record.args = f"{line} ({held} more like it held back)", ()
        return True


KAFKA_LOG = logging.getLogger("stream.kafka")
KAFKA_LOG.addFilter(Repeats())

# Parts of librdkafka's lines that change from one repeat to the next.
_VARYING = re.compile(r"^\[thrd:[^\]]*\]: | \(after \d+ms in state \w+[^)]*\)")


class KafkaLog:
    """Where the librdkafka clients of one broker send their log lines and errors.

    Without it, librdkafka prints to stderr on its own: a broker that does not answer
    gives a line per connection attempt, every ~50 ms. Through :data:`KAFKA_LOG`, each
    line names the broker and its repeats are let through once per backoff step.
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def options(self) -> dict[str, Any]:
        """The client options that send them here."""
        return {"logger": self, "error_cb": self.error}

    def log(self, level: int, _format: str, _facility: str, _client: str, text: str) -> None:
        """librdkafka's log callback: ``logger.log(level, "%s [%s] %s", facility, client, text)``."""
        self._line(level, text)

    def error(self, error: KafkaError) -> None:
        """librdkafka's error callback, and the errors a consumer gets in place of messages."""
        self._line(logging.ERROR if error.fatal() else logging.WARNING, error.str())

    def _line(self, level: int, text: str) -> None:
        KAFKA_LOG.log(level, "kafka %s: %s", self.bootstrap, _VARYING.sub("", text))
