"""How every Kafka client the project ships is set up: where and how it connects, its log, its topics.

- Every confluent-kafka client starts from :func:`kafka_config` (bootstrap servers, TLS and
  SASL, in librdkafka's names); Faust's aiokafka clients get the same from
  :func:`stream.runtime.app.broker_credentials`, built on :func:`tls_context`.
- librdkafka prints to stderr on its own: :class:`KafkaLog` sends its lines and errors
  through Python logging instead, each naming the broker, repeats paced by
  :class:`stream.backoff.Repeats`.
- A librdkafka consumer notices a topic created after it subscribed only at its next
  metadata refresh (5 minutes by default), and a broker's auto-created topics get the
  broker's partition count: :func:`ensure_topics` creates them up front.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # not re-exported by .admin for type checkers

from stream.backoff import Repeats
from stream.settings import Settings

ADMIN_TIMEOUT_SECONDS = 15.0

KAFKA_LOG = logging.getLogger("stream.kafka")
KAFKA_LOG.addFilter(Repeats())

# Parts of librdkafka's lines that change from one repeat to the next.
_VARYING = re.compile(r"^\[thrd:[^\]]*\]: | \(after \d+ms in state \w+[^)]*\)")


def kafka_config(settings: Settings, own: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The options of a confluent-kafka client of the deployment: servers, TLS and SASL, then the
    client's ``own``, then ``SCORING_KAFKA_OPTIONS`` over both (the operator's word is the last).

    Examples
    --------
    >>> kafka_config(Settings(kafka_bootstrap="127.0.0.1:9092"))
    {'bootstrap.servers': '127.0.0.1:9092', 'security.protocol': 'PLAINTEXT'}
    >>> sasl = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
    ...                 kafka_sasl_username="scoring", kafka_sasl_password="s3cret")
    >>> {k: v for k, v in kafka_config(sasl).items() if k.startswith("sasl")}
    {'sasl.mechanisms': 'SCRAM-SHA-512', 'sasl.username': 'scoring', 'sasl.password': 's3cret'}
    >>> kafka_config(Settings(kafka_options='{"linger.ms": 20}'), {"linger.ms": 5})["linger.ms"]
    '20'
    """
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "security.protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol.startswith("SASL_"):
        config["sasl.mechanisms"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_sasl_username
        config["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_ssl_ca_file:
        config["ssl.ca.location"] = settings.kafka_ssl_ca_file
    if settings.kafka_ssl_cert_file:
        config["ssl.certificate.location"] = settings.kafka_ssl_cert_file
        config["ssl.key.location"] = settings.kafka_ssl_key_file
    return {**config, **(own or {}), **settings.kafka_client_options}


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the Python (aiokafka) clients; ``None`` when the protocol has no TLS.

    It checks the brokers' certificates and host names as librdkafka does with
    :func:`kafka_config`: against ``kafka_ssl_ca_file``, else the system's CAs.
    """
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    context = ssl.create_default_context(cafile=settings.kafka_ssl_ca_file or None)
    if settings.kafka_ssl_cert_file:
        context.load_cert_chain(settings.kafka_ssl_cert_file, settings.kafka_ssl_key_file)
    return context


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


ProducerRecord = tuple[str, bytes, bytes]
"""A record to produce: its (namespaced) topic, key and value."""


def deliver(
    settings: Settings, records: Iterable[ProducerRecord], timeout: float = ADMIN_TIMEOUT_SECONDS
) -> None:
    """Produce ``(namespaced topic, key, value)`` records and wait until the broker has each.

    For the commands' few records (an audit record); the worker has its own publisher. Raises
    :class:`KafkaException` when one is not delivered within ``timeout`` seconds.
    """
    failed: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failed.append(error)

    own = {"enable.idempotence": True, "message.timeout.ms": int(timeout * 1000)}
    producer = Producer({**kafka_config(settings, own), **KafkaLog(settings.kafka_bootstrap).options()})
    for topic, key, value in records:
        producer.produce(topic, value, key, on_delivery=delivered)
    left = producer.flush(timeout)
    if failed or left:
        raise KafkaException(failed[0] if failed else KafkaError(KafkaError._MSG_TIMED_OUT))


def ensure_topics(settings: Settings, names: Iterable[str], timeout: float = ADMIN_TIMEOUT_SECONDS) -> None:
    """Create the namespaced topics that do not exist yet (logical names given).

    Raises :class:`KafkaException` when the broker does not answer within ``timeout`` seconds.
    """
    admin = AdminClient({**kafka_config(settings), **KafkaLog(settings.kafka_bootstrap).options()})
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
