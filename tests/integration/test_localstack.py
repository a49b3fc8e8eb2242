"""The local stack really serves Kafka and Redis, and up/down manage only their own processes."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from stream.runtime.registry import ModelRegistry
from stream.settings import Settings
from stream.tools.localstack import down, free_port, running_redis, running_stack, status, up
from tests.integration.test_registry import demand_model, publish

pytestmark = pytest.mark.integration


def _settings(state_dir: Path, kafka_bootstrap: str = "", redis_url: str = "") -> Settings:
    """Settings for the stack in ``state_dir``; free loopback ports where none is given."""
    return Settings.defaults().replace(
        kafka_bootstrap=kafka_bootstrap or f"127.0.0.1:{free_port()}",
        redis_url=redis_url or f"redis://127.0.0.1:{free_port()}/0",
        state_dir=str(state_dir),
    )


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def _running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _consume(bootstrap: str, topic: str, count: int) -> list[bytes | None]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}.group",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 2000,
            "heartbeat.interval.ms": 500,
            "topic.metadata.refresh.interval.ms": 1000,
        }
    )
    values: list[bytes | None] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 15
        while len(values) < count and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                values.append(message.value())
    finally:
        consumer.close()
    return values


def test_running_stack_serves_kafka_and_redis_then_stops_them(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        topic = "localstack.smoke"
        admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
        admin.create_topics([NewTopic(topic, num_partitions=1)])[topic].result(timeout=10)
        producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
        for i in range(3):
            producer.produce(topic, key=b"k", value=f"v{i}".encode())
        assert producer.flush(10) == 0

        assert _consume(stack.kafka_bootstrap, topic, 3) == [b"v0", b"v1", b"v2"]
        with redis.Redis.from_url(stack.redis_url) as client:
            assert client.ping()
        running = status(_settings(tmp_path, stack.kafka_bootstrap, stack.redis_url))
        assert all(s.answering and s.pid is not None for s in running)

    for service in running:
        assert not _listening(service.address)
        assert service.pid is not None and not _running(service.pid)


def test_running_redis_serves_an_empty_redis_then_stops_it(tmp_path: Path) -> None:
    with running_redis(tmp_path) as url, redis.Redis.from_url(url) as client:
        assert client.ping() and client.dbsize() == 0
        address = f"127.0.0.1:{client.connection_pool.connection_kwargs['port']}"
    assert not _listening(address)


def test_up_status_down(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "state")
    try:
        assert [(s.answering, s.pid) for s in status(settings)] == [(False, None), (False, None)]

        started = up(settings)
        assert [s.name for s in started] == ["broker", "redis"]
        assert all(s.answering and s.pid is not None for s in started)
        assert status(settings) == started
        assert up(settings) == started  # idempotent: nothing new is started
        assert "answering" in str(started[0]) and f"pid {started[0].pid}" in str(started[0])

        stopped = down(settings)
        assert [(s.answering, s.pid) for s in stopped] == [(False, None), (False, None)]
        assert not any(_running(s.pid) for s in started if s.pid is not None)
        assert not list((tmp_path / "state").glob("*.pid"))
    finally:
        down(settings)


def test_up_reports_an_answering_redis_as_external_and_down_leaves_it(tmp_path: Path) -> None:
    with running_stack(tmp_path / "theirs") as theirs:
        settings = _settings(tmp_path / "ours", redis_url=theirs.redis_url)
        try:
            broker, cache = up(settings)
            assert broker.pid is not None
            assert cache.answering and cache.pid is None
            assert str(cache).endswith("external")

            # A pid file naming a process that is not our redis-server is not obeyed.
            (tmp_path / "ours" / "redis.pid").write_text(f"{os.getpid()}\n")
            assert status(settings)[1].pid is None

            broker, cache = down(settings)
            assert not broker.answering
            assert cache.answering and cache.pid is None
            with redis.Redis.from_url(theirs.redis_url) as client:
                assert client.ping()
        finally:
            down(settings)


async def test_up_keeps_the_model_registry_across_down_and_up(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "state")
    try:
        first = up(settings)
        client = aioredis.Redis.from_url(settings.redis_url)
        assert await publish(ModelRegistry(client, settings), "", demand_model(3)) == (
            "published",
            "demand.0",
        )
        await client.aclose()
        down(settings)

        again = up(settings)
        assert again[1].pid != first[1].pid  # a new redis-server, which read the append-only file
        client = aioredis.Redis.from_url(settings.redis_url)
        registry = ModelRegistry(client, settings)
        assert await registry.live("demand") == "demand.0"
        assert (await registry.load("demand.0")).labels_learned == 3
        await client.aclose()
        assert list((tmp_path / "state" / "redis").rglob("*.aof"))
    finally:
        down(settings)
