"""The worker on a Redis Cluster, what each component costs per event, and a projected scale-out.

``python -m bench --redis-cluster N`` adds this phase: a Redis Cluster of ``N`` masters is
started, and the worker scores the same prefilled events with one process, then with
``--processes``, in cluster mode (``SCORING_REDIS_CLUSTER``). Each run reports events/s,
the worker's and the broker's CPU per event, each master's Redis CPU per event and its
share of the commands (those the scripts run included), and the balance across masters
(max / mean commands). Every figure is over the span from the first to the last prediction,
like the throughput phase's.

This machine has 2 cores: it cannot show a scale-out curve. :func:`project` turns the
measured costs into events/s for a cluster of machines, on paper: each component's capacity
is the cores it is given divided by its CPU per event, and the deployment runs at the
smallest of them (:data:`ASSUMPTIONS` says where that stops holding).

Examples
--------
>>> costs = Costs(worker_us=100.0, redis_us=60.0, broker_us=40.0, imbalance=1.1,
...               learned_per_second=20_000.0, buckets=16)
>>> bound = project(costs, workers=2, shards=3)
>>> round(bound.events_per_second), bound.limit
(20000, 'workers')
>>> project(costs, workers=64, shards=3).limit
'redis'
>>> project(costs, workers=64, shards=32).shards_used
16
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis

from bench import measure
from bench.run import Bench, Dataset, Result, prediction_reader, prefilled, throughput
from stream.tools import localstack

WORKERS = (4, 16, 64)
"""Worker cores of the projection's rows (one worker process per core)."""
SHARDS = (3, 6, 12, 16)
"""Redis masters of its columns."""
ASSUMPTIONS = (
    "one worker process per core, each at the CPU per event measured here;",
    "a master's load is the busiest master's share of the commands, as measured;",
    "at most SCORING_REDIS_CLUSTER_BUCKETS masters (16) get work: an entity stays in its bucket;",
    "the broker costs Tansu's CPU per event here, over a core per 4 worker cores;",
)


@dataclass(frozen=True)
class Costs:
    """What one event costs each component, measured on this machine."""

    worker_us: float
    """The worker's CPU per event (one process)."""
    redis_us: float
    """Redis CPU per event, summed over the masters."""
    broker_us: float
    """The broker's CPU per event (its input, the prediction and the offsets)."""
    imbalance: float
    """The busiest master's commands over the mean."""
    learned_per_second: float
    """Labels one worker's learners learn a second (both use cases)."""
    buckets: int
    """Hash-tag buckets of a use case (``SCORING_REDIS_CLUSTER_BUCKETS``)."""


@dataclass(frozen=True)
class Bound:
    """The events/s a deployment of that shape sustains, and the component that sets it."""

    events_per_second: float
    limit: str
    shards_used: int


def project(costs: Costs, workers: int, shards: int) -> Bound:
    """Events/s scored by ``workers`` worker cores on ``shards`` Redis masters and a broker of a core
    per 4 worker cores: the least of each component's capacity (cores over CPU per event)."""
    used = min(shards, costs.buckets)
    # With more buckets than masters, the busiest master holds ceil(b/s) of them.
    spread = -(-costs.buckets // used) / (costs.buckets / used)
    capacity = {
        "workers": workers * 1e6 / costs.worker_us,
        "redis": used * 1e6 / (costs.redis_us * costs.imbalance * spread),
        "broker": max(1, workers // 4) * 1e6 / costs.broker_us,
    }
    limit = min(capacity, key=lambda name: capacity[name])
    return Bound(capacity[limit], limit, used)


@dataclass
class _Sampler:
    """The masters' CPU seconds and commands so far, sampled every ~50 ms in a thread."""

    ports: Sequence[int]
    pids: Sequence[int]
    cpu: list[tuple[float, list[float]]]
    commands: list[tuple[float, list[float]]]

    def sample(self) -> None:
        now = time.time()
        self.cpu.append((now, [measure.cpu_seconds(pid) for pid in self.pids]))
        self.commands.append((now, [_commands(port) for port in self.ports]))

    @staticmethod
    def used(series: list[tuple[float, list[float]]], node: int, first: float, last: float) -> float:
        """How much of ``series`` the node at index ``node`` used from ``first`` to ``last``."""
        values = [(t, v[node]) for t, v in series]
        return measure.interpolate(values, last) - measure.interpolate(values, first)


def _commands(port: int) -> float:
    """Commands the node at ``port`` ran (a script's own calls included), ours excepted."""
    with redis.Redis(port=port) as node:
        stats = node.info("commandstats")
    ours = ("cmdstat_info", "cmdstat_cluster", "cmdstat_ping")
    return float(sum(v["calls"] for k, v in stats.items() if k not in ours))


@contextmanager
def _sampling(cluster: localstack.RedisClusterStack) -> Iterator[_Sampler]:
    pids = [cluster.pid(port) for port in cluster.ports]
    sampler = _Sampler(cluster.ports, [pid for pid in pids if pid is not None], [], [])
    if len(sampler.pids) != len(cluster.ports):
        raise RuntimeError(f"a node of {cluster.ports} has no pid")
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.05):
            sampler.sample()

    sampler.sample()
    thread = threading.Thread(target=loop, name="cluster-sampler", daemon=True)
    thread.start()
    try:
        yield sampler
    finally:
        stop.set()
        thread.join()
        sampler.sample()


def _run(bench: Bench, cluster: localstack.RedisClusterStack, data: Dataset, workers: int) -> Result:
    namespace = f"cluster{workers}"
    first = prefilled(bench, namespace, data)
    on_cluster = {"redis_url": cluster.url, "redis_cluster": True}
    settings = [first.replace(**on_cluster)]
    settings += [bench.settings(namespace).replace(**on_cluster) for _ in range(workers - 1)]
    reader = prediction_reader(first)
    try:
        with _sampling(cluster) as sampler, bench.processes("worker", settings) as processes:
            out = throughput(bench, processes, reader, data)
            time.sleep(0.1)  # a sample after the last prediction, for the interpolation
    finally:
        reader.close()
    n = out["events"]
    masters = range(len(cluster.ports))
    out["workers"] = workers
    out["redis_cpu_us_per_event_per_shard"] = [
        sampler.used(sampler.cpu, m, reader.first, reader.last) / n * 1e6 for m in masters
    ]
    commands = [sampler.used(sampler.commands, m, reader.first, reader.last) for m in masters]
    out["commands_per_event_per_shard"] = [c / n for c in commands]
    out["redis_cpu_us_per_event"] = sum(out["redis_cpu_us_per_event_per_shard"])
    out["balance"] = max(commands) / (sum(commands) / len(commands)) if sum(commands) else 0.0
    bench.say(
        f"cluster of {len(cluster.ports)}, {workers} worker(s): {out['events_per_second']:,.0f} events/s, "
        f"Redis {out['redis_cpu_us_per_event']:.1f} us/event, balance {out['balance']:.2f}"
    )
    return out


def cluster(bench: Bench, data: Dataset, masters: int) -> Result:
    """The worker with one process, then with ``--processes``, on a fresh cluster of ``masters``."""
    counts = sorted({1, bench.opts.processes})
    with localstack.running_redis_cluster(bench.work / "cluster", masters=masters) as stack:
        runs = [_run(bench, stack, data, workers) for workers in counts]
    return {"status": "ok", "masters": masters, "runs": runs}


def add_projection(result: Result, buckets: int) -> None:
    """The projection table from the cluster phase's one-worker run and the labels phase."""
    section = result.get("cluster", {})
    labels = result["labels"].get("worker", {})
    if section.get("status") != "ok" or labels.get("status") != "ok":
        return
    one = section["runs"][0]
    costs = Costs(
        worker_us=one["cpu_us_per_event"],
        redis_us=one["redis_cpu_us_per_event"],
        broker_us=one["broker_cpu_us_per_event"],
        imbalance=one["balance"],
        learned_per_second=labels["labels_learned_per_second"],
        buckets=buckets,
    )
    section["projection"] = {
        "costs": vars(costs),
        "assumptions": list(ASSUMPTIONS),
        "rows": [{"workers": w, "shards": s, **vars(project(costs, w, s))} for w in WORKERS for s in SHARDS],
    }


def table(section: dict[str, Any]) -> list[str]:
    """The cluster phase's lines of the printed table."""
    if section.get("status") != "ok":
        reason = section.get("reason", "").splitlines()
        return [f"cluster: {section.get('status', 'missing')}: {reason[0] if reason else ''}"]
    lines = [
        "",
        f"cluster of {section['masters']} masters"
        + "".join(f"{h:>15}" for h in ("events/s", "worker us/ev", "broker us/ev", "Redis us/ev", "balance")),
    ]
    for r in section["runs"]:
        lines.append(
            f"{r['workers']} worker(s){'':<{22 - len(str(r['workers'])) - 11}}"
            + "".join(
                f"{c:>15}"
                for c in (
                    f"{r['events_per_second']:,.0f}",
                    f"{r['cpu_us_per_event']:,.1f}",
                    f"{r['broker_cpu_us_per_event']:,.1f}",
                    f"{r['redis_cpu_us_per_event']:,.1f}",
                    f"{r['balance']:.2f}",
                )
            )
        )
        per_shard = ", ".join(f"{us:.1f}" for us in r["redis_cpu_us_per_event_per_shard"])
        lines.append(f"  Redis us/event per master: {per_shard}")
    projection = section.get("projection")
    if projection:
        header = "".join(f"{f'{s} masters':>21}" for s in SHARDS)
        lines += ["", f"{'projected events/s (limit)':<27}{header}"]
        for w in WORKERS:
            row = [r for r in projection["rows"] if r["workers"] == w]
            cells = [f"{r['events_per_second']:,.0f} ({r['limit']})" for r in row]
            lines.append(f"{f'{w} worker cores':<27}" + "".join(f"{c:>21}" for c in cells))
        lines += ["assuming " + ASSUMPTIONS[0], *(f"  {a}" for a in ASSUMPTIONS[1:])]
        lines.append(
            f"learning: one learner per use case, {projection['costs']['learned_per_second']:,.0f} labels/s "
            "here; beyond it the journal grows (up to SCORING_JOURNAL_MAX_ENTRIES) and the model lags"
        )
    return lines
