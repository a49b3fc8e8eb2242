"""``python -m bench.state_cost``: Redis CPU per scored event and per joined label, and Redis
bytes per waiting event, one Redis or a cluster.

The worker's Redis work without the broker: the simulator's events go through
:class:`stream.runtime.scoring.Scorer` (read the entities, then record) and their labels
through :class:`stream.runtime.joining.LabelJoiner` (join, and the entity's label
statistic), in groups of ``--group`` messages of one topic-partition as a worker handles
them, first on a single ``redis-server``, then on a Redis Cluster of three masters. Redis
CPU is the servers' user + system time (``INFO cpu``), summed over the nodes.

Bytes per event, for each use case in turn: once its events are scored and before any
label (*waiting*: what Redis holds for each until its label comes), then once their labels
are joined (*learned*: what it holds until the record's TTL, to recognise a redelivery):
the growth of ``used_memory`` (``INFO memory``, summed over the nodes) since the use case
started, less the journal (trimmed by the learner ``SCORING_JOURNAL_RETENTION_SECONDS``
after it checkpoints) and the entities' state (one per entity, not per event), both
counted with ``MEMORY USAGE``.

``python -m bench`` runs the one-Redis part as its phase ``redis_state`` (:func:`phase`),
and prints it with its table.

``--against REV`` compares this checkout with another commit's, as issue 12 asks ("measured
against a checkout of today's main on the same machine, one run after the other"): it checks
REV out in a git worktree and runs each checkout's own ``python -m bench.state_cost``, in
turn, ``--pairs`` times (which one goes first alternates: a shared machine's noise drifts),
then prints each pair and the ratios over the sums (:func:`compare`). REV needs a
``bench.state_cost`` of its own printing these lines (c58f4f4, main before issue 12's
second item, has one).

``--instructions`` counts where it would time: one Redis, run under ``valgrind
--tool=callgrind``, and Redis's instructions per scored event and per joined label
(:func:`count_instructions`), which repeat from run to run (within 1 % in runs here). With
``--against REV`` it counts each checkout's own steps in turn, once each, and prints the
ratios (:func:`compare_instructions`; REV's ``bench.state_cost`` needs a ``measure`` and a
``redis_cpu_seconds`` as c58f4f4's).

Examples
--------
.venv/bin/python -m bench.state_cost                    # 10,000 transactions and 10,000 sales, ~1 min
.venv/bin/python -m bench.state_cost --against c58f4f4  # 4 pairs, ~8 min
.venv/bin/python -m bench.state_cost --instructions --against c58f4f4  # ~2 min
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis

from bench.report import sizes
from bench.run import START, Bench, Dataset, Result
from stream.redis_client import redis_client
from stream.runtime.joining import LabelJoiner
from stream.runtime.keys import buckets
from stream.runtime.outbox import Message, Outbox
from stream.runtime.registry import ModelRegistry
from stream.runtime.scoring import Scorer
from stream.runtime.served import ServedModels
from stream.runtime.state import StateStore
from stream.settings import Settings
from stream.tools import simulator
from stream.tools.localstack import free_port, redis_server_program, running_redis, running_redis_cluster
from stream.usecases import USE_CASES, UseCase

Step = Callable[[UseCase[Any, Any], Sequence[Message]], Awaitable[Outbox]]

GROUP = 250
"""Messages of one topic-partition per step, as a worker handles them."""

REPO = Path(__file__).resolve().parents[1]
"""This checkout."""

PROBE = REPO / "bench" / "redis_instructions.py"
"""What :func:`count_instructions` runs in the checkout it measures."""

REDIS_START_SECONDS = 60.0
"""How long a ``redis-server`` under callgrind may take to answer."""

_COST = re.compile(
    r"^(one Redis|3-master cluster).*?: ([\d.]+) µs of Redis CPU per scored event .*?, "
    r"([\d.]+) per joined label",
    re.MULTILINE,
)
"""A setup's line as :func:`main` prints it: µs per scored event and per joined label."""
_INSTRUCTIONS = re.compile(
    r"^(\d+) instructions of Redis per scored event, (\d+) per joined label", re.MULTILINE
)
"""What ``bench/redis_instructions.py`` prints: instructions per scored event and per joined label."""


def port_of(url: str) -> int:
    """The port of a Redis URL."""
    return urlsplit(url).port or 6379


def redis_cpu_seconds(ports: Sequence[int]) -> float:
    """User + system CPU of the Redis servers at ``ports`` so far."""
    total = 0.0
    for port in ports:
        with redis.Redis(port=port) as node:
            cpu = node.info("cpu")
            total += float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
    return total


def redis_memory(ports: Sequence[int]) -> int:
    """``used_memory`` of the Redis servers at ``ports``, summed."""
    total = 0
    for port in ports:
        with redis.Redis(port=port) as node:
            total += int(node.info("memory")["used_memory"])
    return total


def memory_by_kind(settings: Settings, ports: Sequence[int], use_case: str) -> Counter[str]:
    """``MEMORY USAGE`` of ``use_case``'s keys, by kind (``entity``, ``journal``, ``event``, ...)."""
    prefixes = buckets(settings, use_case).prefixes
    usage: Counter[str] = Counter()
    for port in ports:
        with redis.Redis(port=port) as node:
            keys = [key.decode() for key in node.scan_iter(match=f"{prefixes[0].split('{')[0]}*", count=1000)]
            pipe = node.pipeline(transaction=False)
            for key in keys:
                pipe.memory_usage(key, samples=0)
            for key, size in zip(keys, pipe.execute(), strict=True):
                bucket = next(prefix for prefix in prefixes if key.startswith(prefix))
                usage[key.removeprefix(bucket).split(":", 1)[0]] += size or 0
    return usage


async def measure(
    settings: Settings, ports: Sequence[int], messages: Sequence[simulator.Message], group: int
) -> tuple[dict[str, tuple[float, float]], dict[str, dict[str, float]]]:
    """Per kind (``event``, ``label``): Redis CPU (µs) per message, and messages/s; and Redis
    bytes per event once the use case's events are scored (waiting) and once their labels are
    joined, by use case."""
    client = redis_client(settings)
    try:
        state = StateStore(client, settings)
        scorer = Scorer(settings, state, ServedModels(settings, ModelRegistry(client, settings), USE_CASES))
        joiner = LabelJoiner(settings, state)
        steps: dict[str, tuple[Step, Callable[[UseCase[Any, Any]], str]]] = {
            "event": (scorer.score, lambda use_case: use_case.event_topic),
            "label": (joiner.join, lambda use_case: use_case.label_topic),
        }
        cpu = dict.fromkeys(steps, 0.0)
        seconds = dict.fromkeys(steps, 0.0)
        held: dict[str, dict[str, float]] = {kind: {} for kind in steps}
        for use_case in USE_CASES:
            memory = redis_memory(ports)
            for kind, (step, topic_of) in steps.items():
                batch = [
                    Message(settings.topic(m.topic), 0, offset, m.value, time.time())
                    for offset, m in enumerate(
                        m for m in messages if m.kind == kind and m.topic == topic_of(use_case)
                    )
                ]
                began, cpu_before = time.perf_counter(), redis_cpu_seconds(ports)
                for first in range(0, len(batch), group):
                    await step(use_case, batch[first : first + group])
                seconds[kind] += time.perf_counter() - began
                cpu[kind] += redis_cpu_seconds(ports) - cpu_before
                usage = memory_by_kind(settings, ports, use_case.name)
                grown = redis_memory(ports) - memory - usage["journal"] - usage["entity"]
                held[kind][use_case.name] = grown / len(batch)
        counts = Counter(m.kind for m in messages)
        measured = {kind: (cpu[kind] / counts[kind] * 1e6, counts[kind] / seconds[kind]) for kind in steps}
        return measured, held
    finally:
        await client.aclose()


def phase(bench: Bench, data: Dataset) -> Result:
    """``python -m bench``'s ``redis_state``: :func:`measure` of ``--state-events`` transactions
    and as many sales on a Redis of its own (the stack's holds the variants' keys, and the
    growth of its tables would be charged to these events). Bytes per event include the
    growth of this Redis's own tables: 10,000 events a use case spread it (fraud 271 bytes,
    where 2,000 gave 401)."""
    events = bench.opts.state_events
    config = simulator.SimulationConfig(transactions=events, sales=events, rate=0, seed=bench.opts.seed + 3)
    messages = list(simulator.generate(config, start=START))
    with running_redis(bench.work / "redis_state") as url:
        settings = bench.settings("state").replace(redis_url=url)
        measured, held = asyncio.run(measure(settings, [port_of(url)], messages, GROUP))
    bench.say(f"redis_state: {measured['event'][0]:.1f} µs of Redis CPU per scored event")
    return {
        "status": "ok",
        "events": 2 * events,
        "redis_cpu_us_per_event": measured["event"][0],
        "redis_cpu_us_per_label": measured["label"][0],
        "bytes_per_waiting_event": held["event"],
        "bytes_per_learned_event": held["label"],
    }


def run_checkout(folder: Path, events: int) -> dict[str, tuple[float, float]]:
    """``python -m bench.state_cost --events N`` of the checkout at ``folder`` (its own code,
    in a process of its own): per setup (``one Redis``, ``3-master cluster``), Redis µs per
    scored event and per joined label."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.state_cost", "--events", str(events)],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    )
    costs = {match[1]: (float(match[2]), float(match[3])) for match in _COST.finditer(done.stdout)}
    if "one Redis" not in costs:
        raise RuntimeError(f"{folder}: bench.state_cost printed no cost per scored event:\n{done.stdout}")
    return costs


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """A checkout of ``rev`` (a git worktree of this repository) for the ``with`` block, then removed."""
    with tempfile.TemporaryDirectory(prefix="state-cost-") as tmp:
        checkout = Path(tmp) / "checkout"
        git = ["git", "-C", str(REPO), "worktree"]
        subprocess.run([*git, "add", "--detach", "--quiet", str(checkout), rev], check=True)
        try:
            yield checkout
        finally:
            subprocess.run([*git, "remove", "--force", str(checkout)], check=True)


def count_instructions(folder: Path, events: int, group: int = GROUP) -> tuple[float, float]:
    """Redis's instructions per scored event and per joined label for the checkout at ``folder``:
    ``bench/redis_instructions.py`` run there, against a ``redis-server`` started here under
    ``valgrind --tool=callgrind`` (user-space instructions: a Redis's system time, its network
    calls, is not in them)."""
    with tempfile.TemporaryDirectory(prefix="callgrind-") as tmp:
        port, dumps, log = free_port(), Path(tmp) / "callgrind.out", Path(tmp) / "valgrind.log"
        redis_server = [redis_server_program(), "--save", "", "--appendonly", "no", "--dir", tmp]
        redis_server += ["--bind", "127.0.0.1", "--port", str(port)]
        with log.open("wb") as output:
            server = subprocess.Popen(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dumps}", *redis_server],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_for_redis(server, port, log)
            probe = [sys.executable, str(PROBE), "--port", str(port), "--pid", str(server.pid)]
            probe += ["--dumps", str(dumps), "--events", str(events), "--group", str(group)]
            env = {**os.environ, "PYTHONPATH": str(folder)}
            done = subprocess.run(probe, cwd=folder, env=env, capture_output=True, text=True, check=True)
        finally:
            server.terminate()
            server.wait(timeout=60)
    counted = _INSTRUCTIONS.search(done.stdout)
    if counted is None:
        raise RuntimeError(f"{folder}: {PROBE.name} printed no count:\n{done.stdout}{done.stderr}")
    return float(counted[1]), float(counted[2])


def compare_instructions(rev: str, events: int) -> dict[str, tuple[float, float]]:
    """:func:`count_instructions` of this checkout and of ``rev``'s, then their ratios printed.
    The counts repeat from run to run, so one run of each is the comparison."""
    with worktree(rev) as checkout:
        counts = {"this": count_instructions(REPO, events), rev: count_instructions(checkout, events)}
    for j, what in enumerate(("scored event", "joined label")):
        ours, theirs = counts["this"][j], counts[rev][j]
        print(
            f"per {what}: {ours:,.0f} instructions of Redis against {rev}'s {theirs:,.0f}, "
            f"{ours / theirs:.2f} of {rev}'s"
        )
    return counts


def _wait_for_redis(server: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Wait until the Redis of ``server`` answers at ``port`` (under valgrind it takes seconds)."""
    deadline = time.monotonic() + REDIS_START_SECONDS
    while True:
        with contextlib.suppress(redis.RedisError), redis.Redis(port=port) as node:
            if node.ping():
                return
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"redis-server under valgrind did not answer at {port}:\n{log.read_text()}")
        time.sleep(0.1)


def compare(rev: str, pairs: int, events: int) -> dict[str, list[dict[str, tuple[float, float]]]]:
    """Run this checkout's and ``rev``'s :func:`run_checkout` one after the other ``pairs``
    times (this one first, then ``rev`` first, ...), printing each pair and then the ratios of
    this checkout's sums to ``rev``'s; returns the runs of each (``this``, ``rev``)."""
    runs: dict[str, list[dict[str, tuple[float, float]]]] = {"this": [], rev: []}
    with worktree(rev) as checkout:
        for pair in range(pairs):
            order = [("this", REPO), (rev, checkout)][:: 1 if pair % 2 == 0 else -1]
            for name, folder in order:
                runs[name].append(run_checkout(folder, events))
            ours, theirs = runs["this"][-1]["one Redis"][0], runs[rev][-1]["one Redis"][0]
            first = order[0][0]
            print(
                f"pair {pair + 1}, {first} first: one Redis {ours:.1f} against {theirs:.1f} µs",
                flush=True,
            )
    for setup in ("one Redis", "3-master cluster"):
        for j, what in enumerate(("scored event", "joined label")):
            ours_all, theirs_all = (
                [run[setup][j] for run in runs[name] if setup in run] for name in ("this", rev)
            )
            if ours_all and len(ours_all) == len(theirs_all):
                print(
                    f"{setup}, per {what}: {sum(ours_all) / sum(theirs_all):.2f} of {rev}'s over the sums "
                    f"({_listed(ours_all)} against {_listed(theirs_all)} µs)"
                )
    return runs


def _listed(values: Sequence[float]) -> str:
    return " / ".join(f"{value:.1f}" for value in values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.state_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="transactions, and as many sales")
    parser.add_argument("--group", type=int, default=GROUP, help="messages of one topic-partition per step")
    parser.add_argument(
        "--against", metavar="REV", help="compare with REV's own bench.state_cost, run in turn"
    )
    parser.add_argument("--pairs", type=int, default=4, help="runs of each checkout with --against")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count Redis's instructions (callgrind) on one Redis instead of timing it",
    )
    args = parser.parse_args(argv)
    if args.instructions and args.against:
        compare_instructions(args.against, args.events)
        return 0
    if args.instructions:
        scored, joined = count_instructions(REPO, args.events, args.group)
        print(f"{scored:,.0f} instructions of Redis per scored event, {joined:,.0f} per joined label")
        return 0
    if args.against:
        compare(args.against, args.pairs, args.events)
        return 0
    config = simulator.SimulationConfig(transactions=args.events, sales=args.events, rate=0, seed=4)
    messages = list(simulator.generate(config, start=START))
    settings = Settings.defaults().replace(namespace="bench", max_event_age_seconds=0)
    with tempfile.TemporaryDirectory() as tmp:
        with running_redis(Path(tmp) / "redis") as url:
            single = asyncio.run(
                measure(settings.replace(redis_url=url), [port_of(url)], messages, args.group)
            )
        with running_redis_cluster(Path(tmp) / "cluster", masters=3) as cluster:
            on_cluster = settings.replace(redis_url=cluster.url, redis_cluster=True)
            clustered = asyncio.run(measure(on_cluster, cluster.ports, messages, args.group))
    print(f"{2 * args.events:,} events and their labels, steps of {args.group} messages")
    for what, (measured, held) in (
        ("one Redis", single),
        ("3-master cluster (summed over the nodes)", clustered),
    ):
        event_us, event_rate = measured["event"]
        label_us, label_rate = measured["label"]
        print(
            f"{what}: {event_us:.1f} µs of Redis CPU per scored event ({event_rate:,.0f}/s), "
            f"{label_us:.1f} per joined label ({label_rate:,.0f}/s); Redis bytes per event waiting "
            f"for its label: {sizes(held['event'])}, once learned: {sizes(held['label'])}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
