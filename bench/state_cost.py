"""``python -m bench.state_cost``: Redis CPU per scored event and per joined label, one Redis or a cluster.

The worker's Redis work without the broker: the simulator's events go through
:class:`stream.runtime.scoring.Scorer` (claim and observe, then record) and their labels
through :class:`stream.runtime.joining.LabelJoiner` (join, then the entity's label
statistic), in groups of ``--group`` messages of one topic-partition as a worker handles
them, first on a single ``redis-server``, then on a Redis Cluster of three masters. Redis
CPU is the servers' user + system time (``INFO cpu``), summed over the nodes.

Examples
--------
.venv/bin/python -m bench.state_cost                    # 10,000 transactions and 10,000 sales, ~1 min
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from stream.redis_client import redis_client
from stream.runtime.joining import LabelJoiner
from stream.runtime.outbox import Message, Outbox
from stream.runtime.registry import ModelRegistry
from stream.runtime.scoring import Scorer
from stream.runtime.served import ServedModels
from stream.runtime.state import StateStore
from stream.settings import Settings
from stream.tools import simulator
from stream.tools.localstack import running_redis_cluster, running_stack
from stream.usecases import USE_CASES, UseCase

START = dt.datetime(2026, 3, 4, 12, tzinfo=dt.UTC)

Step = Callable[[UseCase[Any, Any], Sequence[Message]], Awaitable[Outbox]]


def redis_cpu_seconds(ports: Sequence[int]) -> float:
    """User + system CPU of the Redis servers at ``ports`` so far."""
    total = 0.0
    for port in ports:
        with redis.Redis(port=port) as node:
            cpu = node.info("cpu")
            total += float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
    return total


async def measure(
    settings: Settings, ports: Sequence[int], messages: Sequence[simulator.Message], group: int
) -> dict[str, tuple[float, float]]:
    """Per kind (``event``, ``label``): Redis CPU (µs) per message, and messages/s."""
    client = redis_client(settings)
    try:
        state = StateStore(client, settings)
        scorer = Scorer(settings, state, ServedModels(settings, ModelRegistry(client, settings), USE_CASES))
        joiner = LabelJoiner(settings, state)
        steps: dict[str, tuple[Step, Callable[[UseCase[Any, Any]], str]]] = {
            "event": (scorer.score, lambda use_case: use_case.event_topic),
            "label": (joiner.join, lambda use_case: use_case.label_topic),
        }
        measured = {}
        for kind, (step, topic_of) in steps.items():
            of_kind = [m for m in messages if m.kind == kind]
            cpu, began = redis_cpu_seconds(ports), time.perf_counter()
            for use_case in USE_CASES:
                batch = [
                    Message(m.topic, 0, offset, m.value, time.time())
                    for offset, m in enumerate(m for m in of_kind if m.topic == topic_of(use_case))
                ]
                for first in range(0, len(batch), group):
                    await step(use_case, batch[first : first + group])
            seconds = time.perf_counter() - began
            measured[kind] = ((redis_cpu_seconds(ports) - cpu) / len(of_kind) * 1e6, len(of_kind) / seconds)
        return measured
    finally:
        await client.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.state_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="transactions, and as many sales")
    parser.add_argument("--group", type=int, default=250, help="messages of one topic-partition per step")
    args = parser.parse_args(argv)
    config = simulator.SimulationConfig(transactions=args.events, sales=args.events, rate=0, seed=4)
    messages = list(simulator.generate(config, start=START))
    settings = Settings.defaults().replace(namespace="bench", max_event_age_seconds=0)
    with tempfile.TemporaryDirectory() as tmp:
        with running_stack(Path(tmp) / "stack") as stack:
            port = int(stack.redis_url.rsplit(":", 1)[1].split("/", 1)[0])
            single = asyncio.run(
                measure(settings.replace(redis_url=stack.redis_url), [port], messages, args.group)
            )
        with running_redis_cluster(Path(tmp) / "cluster", masters=3) as cluster:
            on_cluster = settings.replace(redis_url=cluster.url, redis_cluster=True)
            clustered = asyncio.run(measure(on_cluster, cluster.ports, messages, args.group))
    print(f"{2 * args.events:,} events and their labels, steps of {args.group} messages")
    for what, measured in (("one Redis", single), ("3-master cluster (summed over the nodes)", clustered)):
        event_us, event_rate = measured["event"]
        label_us, label_rate = measured["label"]
        print(
            f"{what}: {event_us:.1f} µs of Redis CPU per scored event ({event_rate:,.0f}/s), "
            f"{label_us:.1f} per joined label ({label_rate:,.0f}/s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
