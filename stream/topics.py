"""Creating the deployment's topics before anything subscribes to them.

A librdkafka consumer notices a topic created after it subscribed only at its next
metadata refresh (5 minutes by default), and a broker's auto-created topics get the
broker's partition count: creating them up front avoids both.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # not re-exported by .admin for type checkers

from stream.runtime.retry import KafkaLog
from stream.settings import Settings

ADMIN_TIMEOUT_SECONDS = 15.0


def ensure_topics(settings: Settings, names: Iterable[str], timeout: float = ADMIN_TIMEOUT_SECONDS) -> None:
    """Create the namespaced topics that do not exist yet (logical names given).

    Raises :class:`KafkaException` when the broker does not answer within ``timeout`` seconds.
    """
    admin = AdminClient(
        {"bootstrap.servers": settings.kafka_bootstrap, **KafkaLog(settings.kafka_bootstrap).options()}
    )
    try:
        _create_missing(admin, settings, names, timeout)
    finally:
        admin.poll(0)  # hands librdkafka's log lines and errors over to Python logging


def _create_missing(admin: AdminClient, settings: Settings, names: Iterable[str], timeout: float) -> None:
    wanted = {settings.topic(name) for name in names}
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = sorted(wanted - existing)
    if not missing:
        return
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=settings.topic_partitions, replication_factor=-1) for name in missing],
        operation_timeout=timeout,
    )
    for future in futures.values():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
