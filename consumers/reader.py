"""Typed reading of the service's topics, for downstream services and ops.

Topics are named by their logical name (``"predictions.fraud"``), as the use cases declare
them (:mod:`stream.usecases`); the deployment's namespace is added with
:meth:`Settings.topic`. Every message comes back as a :class:`Delivered` that knows which
record type its topic carries.

Examples
--------
>>> record_type("predictions.demand").__name__
'Prediction'
>>> record_type("alerts.drift").__name__
'Alert'
>>> Delivered("deadletter", 0, 7, None, b"{}", None).parse().reason
'missing_field'
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaException,
    Message,
    TopicPartition,
)

from stream.kafka import ensure_topics, kafka_config
from stream.records import Alert, AuditRecord, DeadLetter, Prediction, Record, Rejection, parse, payload_text
from stream.settings import Settings
from stream.usecases import ALERTS_TOPIC, AUDIT_TOPIC, DEADLETTER_TOPIC, USE_CASES

_RECORD_TYPES: dict[str, type[Record]] = {
    DEADLETTER_TOPIC: DeadLetter,
    ALERTS_TOPIC: Alert,
    AUDIT_TOPIC: AuditRecord,
    **{uc.prediction_topic: Prediction for uc in USE_CASES},
    **{uc.label_topic: uc.label_type for uc in USE_CASES},
    **{uc.event_topic: uc.event_type for uc in USE_CASES},
}
_POLL_SECONDS = 0.1
_PLAIN = re.compile(r"\S{1,80}")


def record_type(topic: str) -> type[Record]:
    """The record type carried by a logical topic.

    Parameters
    ----------
    topic
        Logical topic name, without namespace.

    Returns
    -------
    type[Record]
        :class:`Prediction` for the prediction topics, :class:`DeadLetter` for the dead
        letters, :class:`Alert` for the alerts, and each use case's event and label records
        for its event and label topics.

    Raises
    ------
    ValueError
        If the topic is not one this package knows how to read.
    """
    try:
        return _RECORD_TYPES[topic]
    except KeyError:
        raise ValueError(f"unknown topic {topic!r}: expected one of {', '.join(_RECORD_TYPES)}") from None


@dataclass(frozen=True)
class Delivered:
    """One message read from a service topic.

    Attributes
    ----------
    topic
        Logical topic name (without namespace).
    partition, offset
        Where the message sits in the topic.
    key
        Message key, ``None`` when unkeyed.
    value
        Raw payload (empty for a tombstone).
    timestamp
        Message timestamp (UTC), ``None`` when the broker gives none.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp: dt.datetime | None

    def parse(self) -> Record | Rejection:
        """Validate the payload into the record type of its topic.

        Returns
        -------
        Record or Rejection
            The record, or why the payload does not match the contract.
        """
        return parse(record_type(self.topic), self.value)


def read(
    settings: Settings,
    topics: Sequence[str],
    *,
    group: str | None = None,
    from_beginning: bool = True,
    idle_timeout: float = 5.0,
    max_messages: int | None = None,
    stop: Callable[[], bool] | None = None,
) -> Iterator[Delivered]:
    """Read messages of logical topics, in order within each partition.

    Missing topics are created first (a consumer only notices a topic created after it
    subscribed at its next metadata refresh). The consumer is closed however the
    iteration ends.

    Parameters
    ----------
    settings
        Broker address, namespace, partitions of created topics, group session timings.
    topics
        Logical topic names (see :func:`record_type`).
    group
        Consumer group (namespaced) whose committed offsets are resumed, and advanced past
        a message once the caller asks for the next one (a message in hand when the
        iteration is abandoned is read again next time). ``None``: a throwaway group that
        commits nothing.
    from_beginning
        Start at the earliest offset, else at the end, where the group has no committed
        offset (always, for a throwaway group).
    idle_timeout
        Stop after this many seconds without a message (``float("inf")``: never). Until
        partitions are first assigned, the group join time (up to the session timeout)
        is granted on top.
    max_messages
        Stop after this many messages.
    stop
        Called between polls; stop when it returns ``True``.

    Yields
    ------
    Delivered
        Each message, with its logical topic name.

    Raises
    ------
    ValueError
        If a topic is unknown.
    confluent_kafka.KafkaException
        If topics cannot be created or the consumer reports an error.
    """
    names = {settings.topic(topic): topic for topic in topics}
    for topic in topics:
        record_type(topic)
    ensure_topics(settings, topics)
    consumer = Consumer(_consumer_config(settings, group, from_beginning))
    last = time.monotonic()
    grace = settings.session_timeout_seconds

    def assigned(_consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        nonlocal last, grace
        last, grace = time.monotonic(), 0.0

    count = 0
    try:
        consumer.subscribe(list(names), on_assign=assigned)
        while max_messages is None or count < max_messages:
            if stop is not None and stop():
                return
            message = consumer.poll(_POLL_SECONDS)
            if message is None:
                if time.monotonic() - last > idle_timeout + grace:
                    return
                continue
            error = message.error()
            if error is not None:
                raise KafkaException(error)
            last = time.monotonic()
            count += 1
            yield _delivered(message, names)
            if group is not None:
                consumer.store_offsets(message)
    finally:
        consumer.close()


def tail(
    settings: Settings,
    topics: Sequence[str],
    *,
    out: TextIO | None = None,
    from_beginning: bool = False,
) -> None:
    """Print one line per message of logical topics until interrupted (Ctrl-C).

    A payload that does not parse is printed raw after a warning.

    Parameters
    ----------
    settings
        Deployment settings.
    topics
        Logical topic names (see :func:`record_type`).
    out
        Where lines go; ``None``: the current ``sys.stdout``.
    from_beginning
        Also print what the topics already hold.
    """
    try:
        for delivered in read(settings, topics, from_beginning=from_beginning, idle_timeout=float("inf")):
            print(describe(delivered), file=out or sys.stdout, flush=True)
    except KeyboardInterrupt:
        return


def describe(delivered: Delivered) -> str:
    """One readable line for a message: where it sits, then its fields.

    Parameters
    ----------
    delivered
        The message.

    Returns
    -------
    str
        ``"<time> <topic>[<partition>]@<offset> field=value ..."``, or a ``WARNING`` line
        with the raw payload when it does not parse.

    Examples
    --------
    >>> describe(Delivered("sales.labels", 1, 9, None, b'{"event_id":"s-1","units_sold":3}', None))
    '- sales.labels[1]@9 event_id=s-1 units_sold=3'
    >>> describe(Delivered("sales.labels", 1, 10, None, b"oops", None))
    '- sales.labels[1]@10 WARNING unparseable (invalid_json): raw utf-8 payload "oops"'
    """
    when = delivered.timestamp.isoformat(timespec="milliseconds") if delivered.timestamp is not None else "-"
    where = f"{when} {delivered.topic}[{delivered.partition}]@{delivered.offset}"
    record = delivered.parse()
    if isinstance(record, Rejection):
        text, encoding = payload_text(delivered.value)
        return f"{where} WARNING unparseable ({record.reason}): raw {encoding} payload " + json.dumps(
            text, ensure_ascii=False
        )
    fields = record.model_dump(mode="json", exclude_none=True)
    return " ".join([where, *(f"{name}={_show(value)}" for name, value in fields.items())])


def _show(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        if _PLAIN.fullmatch(value):
            return value
        return json.dumps(value if len(value) <= 80 else value[:77] + "...", ensure_ascii=False)
    return json.dumps(value)


def _consumer_config(settings: Settings, group: str | None, from_beginning: bool) -> dict[str, Any]:
    own = {
        "group.id": settings.topic(group or f"reader-{uuid.uuid4().hex}"),
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        # A named group commits (in the background and at close) only the offsets stored
        # after the caller is done with a message: at-least-once for the caller.
        "enable.auto.commit": group is not None,
        "enable.auto.offset.store": False,
        "session.timeout.ms": round(settings.session_timeout_seconds * 1000),
        "heartbeat.interval.ms": round(settings.heartbeat_interval_seconds * 1000),
        # Notice new topics and partitions quickly, and do not sit on small fetches.
        "topic.metadata.refresh.interval.ms": 1000,
        "fetch.wait.max.ms": 50,
    }
    return kafka_config(settings, own)


def _delivered(message: Message, names: dict[str, str]) -> Delivered:
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None
    kind, millis = message.timestamp()
    return Delivered(
        topic=names[topic],
        partition=partition,
        offset=offset,
        key=message.key(),
        value=message.value() or b"",
        timestamp=None
        if kind == TIMESTAMP_NOT_AVAILABLE
        else dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC),
    )
