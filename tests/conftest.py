"""Fixtures shared by all tests: one broker and Redis per session, a namespace per test.

Where the broker and Redis come from, in order:

1. ``SCORING_TEST_KAFKA_BOOTSTRAP`` and ``SCORING_TEST_REDIS_URL``, when both are set;
2. Docker containers (Apache Kafka and Redis, via testcontainers), when a Docker daemon
   answers;
3. otherwise a Tansu broker and a ``redis-server`` started by :func:`running_stack`.

Each test works in its own namespace, so tests never see each other's topics, groups
or keys, and the namespace is cleaned away when the test ends.

A test parametrized with ``@pytest.mark.parametrize("redis_mode", ["single", "cluster"],
indirect=True)`` runs its settings against a Redis Cluster as well: three masters started
on free loopback ports the first time a test asks for it, stopped at the end of the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from stream.redis_client import redis_client
from stream.settings import Settings
from stream.tools.localstack import running_redis_cluster, running_stack


def _docker_answers() -> bool:
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@contextlib.contextmanager
def _containers() -> Iterator[tuple[str, str]]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.redis import RedisContainer

    # Apache Kafka refuses session timeouts under 6 s by default; the tests use 2 s.
    kafka = KafkaContainer().with_kraft().with_env("KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS", "1000")
    with kafka, RedisContainer("redis:7") as cache:
        host, port = cache.get_container_host_ip(), cache.get_exposed_port(6379)
        yield kafka.get_bootstrap_server(), f"redis://{host}:{port}/0"


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``(kafka_bootstrap, redis_url)`` of a broker and Redis shared by the session."""
    kafka = os.environ.get("SCORING_TEST_KAFKA_BOOTSTRAP")
    redis_url = os.environ.get("SCORING_TEST_REDIS_URL")
    if kafka and redis_url:
        yield kafka, redis_url
    elif _docker_answers():
        with _containers() as addresses:
            yield addresses
    else:
        with running_stack(tmp_path_factory.mktemp("stack")) as stack:
            yield stack.kafka_bootstrap, stack.redis_url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a node of a Redis Cluster of three masters shared by the session."""
    with running_redis_cluster(tmp_path_factory.mktemp("cluster"), masters=3) as cluster:
        yield cluster.url


@pytest.fixture
def redis_mode(request: pytest.FixtureRequest) -> str:
    """``single`` (the session's Redis), or ``cluster`` when a test is parametrized with it."""
    return str(getattr(request, "param", "single"))


@pytest.fixture
def namespace(services: tuple[str, str]) -> Iterator[str]:
    """A fresh namespace; its Kafka topics are deleted afterwards (its keys by :func:`settings`)."""
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    admin = AdminClient({"bootstrap.servers": services[0]})
    with contextlib.suppress(KafkaException):
        topics = [t for t in admin.list_topics(timeout=5).topics if t.startswith(f"{name}.")]
        if topics:
            for future in admin.delete_topics(topics, operation_timeout=5).values():
                with contextlib.suppress(KafkaException):
                    future.result()


@pytest.fixture
def settings(
    services: tuple[str, str], namespace: str, redis_mode: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Settings]:
    """Settings of the shared services in the test's namespace, tuned for fast groups; the
    namespace's Redis keys are deleted afterwards."""
    kafka, redis_url = services
    cluster = redis_mode == "cluster"
    settings = Settings.defaults().replace(
        kafka_bootstrap=kafka,
        redis_url=request.getfixturevalue("redis_cluster") if cluster else redis_url,
        redis_cluster=cluster,
        namespace=namespace,
        session_timeout_seconds=2.0,
        heartbeat_interval_seconds=0.5,
        metrics_port=0,
        state_dir=str(tmp_path / "state"),
    )
    yield settings
    asyncio.run(_delete_keys(settings))


async def _delete_keys(settings: Settings) -> None:
    client = redis_client(settings)
    try:
        keys = [key async for key in client.scan_iter(match=f"{settings.namespace}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
