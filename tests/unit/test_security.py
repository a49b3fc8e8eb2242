"""Secure connections as configuration: the settings' checks, the one Kafka mapping every client
uses (librdkafka's names, Faust's credentials), and the signing-key rule.

Against real servers: ``tests/integration/test_secure_kafka.py`` (TLS) and
``tests/integration/test_secure_redis.py`` (AUTH and TLS).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

import bench.confluent_loop
import bench.stock_faust
import bench.traffic
import consumers.reader
import stream.kafka
import stream.runtime.batches
import stream.runtime.publisher
import stream.tools.localstack
from stream.kafka import deliver, ensure_topics, kafka_config, tls_context
from stream.runtime.app import broker_credentials, faust_app
from stream.settings import Settings, problems
from stream.tools import cli
from tests.tls import Certificates, certificates

SASL = {
    "kafka_sasl_mechanism": "SCRAM-SHA-256",
    "kafka_sasl_username": "scoring",
    "kafka_sasl_password": "pw",
}


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return certificates(tmp_path_factory.mktemp("pem"))


def refused(**values: Any) -> list[str]:
    with pytest.raises(ValidationError) as refusal:
        Settings.defaults().replace(**values)
    return problems(refusal.value)


# The settings' checks ----------------------------------------------------------------------------


@pytest.mark.parametrize("missing", list(SASL))
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_needs_a_mechanism_a_user_and_a_password(protocol: str, missing: str) -> None:
    given = {**SASL, missing: ""}
    assert refused(kafka_security_protocol=protocol, **given) == [
        f"SCORING_{missing.upper()}: required with SCORING_KAFKA_SECURITY_PROTOCOL={protocol}"
    ]


def test_security_settings_the_protocol_would_ignore_are_refused(pem: Certificates) -> None:
    [line] = refused(kafka_sasl_username="scoring")
    assert line.startswith("SCORING_KAFKA_SASL_USERNAME: would be ignored with ")
    [line] = refused(kafka_security_protocol="SASL_PLAINTEXT", kafka_ssl_ca_file=str(pem.ca), **SASL)
    assert line.startswith("SCORING_KAFKA_SSL_CA_FILE: would be ignored with ")
    [line] = refused(redis_ca_file=str(pem.ca))  # redis:// is not TLS
    assert line == "SCORING_REDIS_CA_FILE: applies to a rediss:// SCORING_REDIS_URL only (TLS)"


def test_certificate_files_must_exist_and_go_in_pairs(pem: Certificates, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    assert refused(kafka_security_protocol="SSL", kafka_ssl_ca_file=missing) == [
        f"SCORING_KAFKA_SSL_CA_FILE: no such file (got {missing!r})"
    ]
    [line] = refused(kafka_security_protocol="SSL", kafka_ssl_cert_file=str(pem.client_cert))
    assert line.startswith("SCORING_KAFKA_SSL_KEY_FILE: a client certificate and its key go together")


def test_the_password_is_hidden_but_reaches_child_processes() -> None:
    settings = Settings.defaults().replace(kafka_security_protocol="SASL_SSL", **SASL)
    assert "pw" not in repr(settings)
    assert settings.environment()["SCORING_KAFKA_SASL_PASSWORD"] == "pw"
    assert Settings.from_env(settings.environment()) == settings


# The development signing key ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kafka", "redis_url"),
    [
        ("127.0.0.1:9092", "redis://127.0.0.1:6379/0"),
        ("localhost:9092,127.0.0.2:9093", "redis://:pw@localhost:6380/1"),
        ("[::1]:9092", "rediss://[::1]:6379/0"),
        ("PLAINTEXT://127.0.0.1:9092", "unix:///run/redis.sock"),
    ],
)
def test_the_development_key_is_accepted_on_loopback(kafka: str, redis_url: str) -> None:
    assert Settings.defaults().replace(kafka_bootstrap=kafka, redis_url=redis_url).signing_key


@pytest.mark.parametrize(
    ("kafka", "redis_url", "named"),
    [
        ("kafka:9092", "redis://127.0.0.1:6379/0", "SCORING_KAFKA_BOOTSTRAP names kafka"),
        ("127.0.0.1:9092,10.1.2.3:9092", "redis://127.0.0.1/0", "SCORING_KAFKA_BOOTSTRAP names 10.1.2.3"),
        ("127.0.0.1:9092", "redis://:pw@cache.internal:6379/0", "SCORING_REDIS_URL names cache.internal"),
        ("127.0.0.1:9092", "rediss://[2001:db8::1]:6379/0", "SCORING_REDIS_URL names 2001:db8::1"),
        ("0.0.0.0:9092", "redis://127.0.0.1/0", "SCORING_KAFKA_BOOTSTRAP names 0.0.0.0"),
    ],
)
def test_the_development_key_is_refused_when_a_service_is_elsewhere(
    kafka: str, redis_url: str, named: str
) -> None:
    [line] = refused(kafka_bootstrap=kafka, redis_url=redis_url)
    assert line.startswith("SCORING_MODEL_SIGNING_KEY: the published development key is allowed only ")
    assert named in line and "openssl rand -hex 32" in line
    assert ":pw@" not in line  # the address is named, never the URL's password
    assert Settings.defaults().replace(kafka_bootstrap=kafka, redis_url=redis_url, model_signing_key="s3cret")


@pytest.mark.parametrize(
    ("host", "named"), [("0.0.0.0", "0.0.0.0"), ("10.1.2.3", "10.1.2.3"), ("api.internal", "api.internal")]
)
def test_the_development_key_is_refused_when_the_api_listens_beyond_loopback(host: str, named: str) -> None:
    [line] = refused(api_host=host)
    assert f"SCORING_API_HOST listens on {named}" in line
    assert Settings.defaults().replace(api_host=host, model_signing_key="s3cret")
    assert Settings.defaults().replace(api_host="::1").signing_key


def test_the_cli_stops_on_the_development_key_off_loopback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SCORING_KAFKA_BOOTSTRAP", "kafka:9092")
    monkeypatch.delenv("SCORING_MODEL_SIGNING_KEY", raising=False)
    assert cli.main(["models", "list"]) == 2
    assert capsys.readouterr().err.startswith("scoring: invalid setting SCORING_MODEL_SIGNING_KEY: ")


# One mapping for every client --------------------------------------------------------------------


def modes(pem: Certificates) -> dict[str, dict[str, Any]]:
    ca = {"kafka_ssl_ca_file": str(pem.ca)}
    client = {"kafka_ssl_cert_file": str(pem.client_cert), "kafka_ssl_key_file": str(pem.client_key)}
    return {
        "plaintext": {},
        "ssl, system CAs": {"kafka_security_protocol": "SSL"},
        "ssl, CA and client certificate": {"kafka_security_protocol": "SSL", **ca, **client},
        "sasl plain": {"kafka_security_protocol": "SASL_PLAINTEXT", **SASL, "kafka_sasl_mechanism": "PLAIN"},
        "sasl scram-256": {"kafka_security_protocol": "SASL_PLAINTEXT", **SASL},
        "sasl_ssl scram-512": {
            "kafka_security_protocol": "SASL_SSL",
            **ca,
            **SASL,
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
        },
    }


def test_librdkafka_gets_each_mode_in_its_own_names(pem: Certificates) -> None:
    configs = {
        name: kafka_config(Settings.defaults().replace(**values)) for name, values in modes(pem).items()
    }
    base = {"bootstrap.servers": "127.0.0.1:9092"}
    sasl = {"sasl.username": "scoring", "sasl.password": "pw"}
    client = {"ssl.certificate.location": str(pem.client_cert), "ssl.key.location": str(pem.client_key)}
    assert configs == {
        "plaintext": {**base, "security.protocol": "PLAINTEXT"},
        "ssl, system CAs": {**base, "security.protocol": "SSL"},
        "ssl, CA and client certificate": {
            **base,
            "security.protocol": "SSL",
            "ssl.ca.location": str(pem.ca),
            **client,
        },
        "sasl plain": {**base, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN", **sasl},
        "sasl scram-256": {
            **base,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "SCRAM-SHA-256",
            **sasl,
        },
        "sasl_ssl scram-512": {
            **base,
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": "SCRAM-SHA-512",
            **sasl,
            "ssl.ca.location": str(pem.ca),
        },
    }


def test_fausts_clients_get_the_same_security_as_librdkafkas(pem: Certificates) -> None:
    for mode, values in modes(pem).items():
        settings = Settings.defaults().replace(**values)
        config = kafka_config(settings)
        aiokafka = credentials_to_aiokafka_auth(broker_credentials(settings))  # as Faust builds its clients
        assert aiokafka["security_protocol"] == config["security.protocol"], mode
        assert aiokafka.get("sasl_mechanism") == config.get("sasl.mechanisms"), mode
        assert aiokafka.get("sasl_plain_username") == config.get("sasl.username"), mode
        assert aiokafka.get("sasl_plain_password") == config.get("sasl.password"), mode
        context = aiokafka.get("ssl_context")
        assert (context is not None) == config["security.protocol"].endswith("SSL"), mode
        if context is not None:
            assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True), mode
            issuers = [dict(field[0] for field in c["issuer"]) for c in context.get_ca_certs()]
            assert ({"commonName": "scoring test CA"} in issuers) == ("ssl.ca.location" in config), mode


def test_the_tls_context_loads_the_client_certificate_and_refuses_a_bad_key(pem: Certificates) -> None:
    values = modes(pem)["ssl, CA and client certificate"]
    assert tls_context(Settings.defaults().replace(**values)) is not None
    mismatched = Settings.defaults().replace(**{**values, "kafka_ssl_key_file": str(pem.server_key)})
    with pytest.raises(ssl.SSLError):
        tls_context(mismatched)


class Built(Exception):
    """Raised in place of building a confluent-kafka client, carrying its configuration."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__("built")
        self.config = config


def _build(config: dict[str, Any], *args: Any, **kwargs: Any) -> None:
    raise Built(config)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every confluent-kafka client class the project's modules build, replaced by :func:`_build`."""
    for module, names in [
        (confluent_kafka, ["Producer", "Consumer"]),  # imported where used: the CLI's simulator
        (stream.kafka, ["AdminClient", "Producer"]),
        (stream.runtime.publisher, ["Producer"]),
        (stream.runtime.batches, ["Consumer"]),
        (consumers.reader, ["Consumer"]),
        (stream.tools.localstack, ["AdminClient"]),
        (bench.traffic, ["Producer", "Consumer"]),
        (bench.confluent_loop, ["Producer", "Consumer"]),
    ]:
        for name in names:
            monkeypatch.setattr(module, name, _build)
    monkeypatch.setattr(stream.kafka, "ensure_topics", lambda *args, **kwargs: None)
    monkeypatch.setattr(consumers.reader, "ensure_topics", lambda *args, **kwargs: None)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # the plain loop's handlers stay off pytest


@pytest.fixture
def listening() -> Iterator[str]:
    """An address that accepts connections (the local stack's probe connects before it asks)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"127.0.0.1:{server.getsockname()[1]}"


async def _no_batches(_batch: Any) -> None:
    return None


CLIENTS: dict[str, Callable[[Settings], object]] = {
    "topic creation (worker, reader, simulator, demo)": lambda s: ensure_topics(s, ["x"]),  # not the no-op
    "audit records (scoring models rollback, scoring bootstrap)": lambda s: deliver(s, []),
    "worker publisher": stream.runtime.publisher.Publisher,
    "worker batch consumer": lambda s: asyncio.run(
        stream.runtime.batches.BatchConsumer(s, ["x"], _no_batches).run()
    ),
    "consumers.reader (tail, alerts, audit)": lambda s: next(consumers.reader.read(s, ["alerts.drift"])),
    "scoring simulate": lambda s: cli.main(["simulate", "--transactions", "1", "--sales", "0"]),
    "scoring up/status probe": lambda s: stream.tools.localstack.status(s),
    "bench producer": bench.traffic.producer,
    "bench prediction reader": lambda s: bench.traffic.PredictionReader(s, ["x"]),
    "bench broker floor": lambda s: bench.traffic.broker_floor(s, "x", 1.0, 1.0),
    "bench plain confluent loop": bench.confluent_loop.run,
}


# Over options the clients set themselves (the publisher's idempotence and linger, the consumers' wait).
OPERATORS_OPTIONS = (
    '{"enable.idempotence": false, "linger.ms": 77, "fetch.wait.max.ms": 77, "client.rack": "r1"}'
)


@pytest.mark.parametrize("client", list(CLIENTS))
def test_every_client_starts_from_kafka_config_and_ends_with_the_operators_options(
    client: str, pem: Certificates, recorded: None, listening: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {
        **modes(pem)["sasl_ssl scram-512"],
        "kafka_bootstrap": listening,
        "kafka_options": OPERATORS_OPTIONS,
    }
    settings = Settings.defaults().replace(**values)
    for variable, value in settings.environment().items():  # for the CLI, which reads the environment
        monkeypatch.setenv(variable, value)
    with pytest.raises(Built) as built:
        CLIENTS[client](settings)
    assert kafka_config(settings).items() <= built.value.config.items()


def test_every_faust_app_gets_the_credentials(pem: Certificates, tmp_path: Path) -> None:
    settings = Settings.defaults().replace(**modes(pem)["sasl_ssl scram-512"], state_dir=str(tmp_path))
    for app in (faust_app(settings, "security-test"), bench.stock_faust.create_app(settings)):
        credentials = app.conf.broker_credentials
        assert (credentials.username, credentials.password) == ("scoring", "pw")
        assert (credentials.mechanism.value, credentials.protocol.value) == ("SCRAM-SHA-512", "SASL_SSL")
