"""``python -m bench.api``: the scoring API's latency and throughput next to a do-nothing floor.

On a fresh broker and Redis, both use cases are bootstrapped from a day of simulated history
(the API is ready and its entities have state), then two servers run side by side, each
measured alone in turn, in one run:

- ``scoring api`` (:mod:`stream.api`), scoring ``POST /v1/score/fraud``: validation, the
  entity state's Lua call, the model, the record and journal, then the prediction handed to
  the producer (the answer does not wait for the broker);
- the floor (:mod:`bench.api_floor`): a do-nothing ``POST`` on the same stack (FastAPI on
  uvicorn, as :func:`stream.api.app.serve` runs it).

Phases: **latency** at a fixed offered rate (``--rate`` requests/s for ``--seconds``, an
open loop: each latency runs from when its request was due to its answer read whole), and
**throughput**, the most requests/s one process answers (``--connections`` requests in
flight for ``--saturate-seconds``). Each fraud request is a new simulated transaction (a
new event id, an account with history). The load comes from this process
(:mod:`bench.http_load`), on the same machine as the servers, Redis and the broker: read
the ratios to the floor. CPU is the server process's user + system time per request. It
never asserts on speed.

Examples
--------
.venv/bin/python -m bench.api                                  # ~1 minute on 2 cores
.venv/bin/python -m bench.api --rate 200 --seconds 2 --saturate-seconds 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import io
import itertools
import sys
import tempfile
import time
import urllib.request
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any, TextIO

import orjson

from bench import measure
from bench.http_load import Exchanges, paced, post, saturating
from stream.settings import Settings
from stream.tools import localstack, simulator
from stream.tools.demo import bootstrap_from_history

START = dt.datetime(2026, 3, 4, 12, tzinfo=dt.UTC)
"""Where the simulated transactions end: every run sends the same ones, whatever the hour."""
HISTORY_DAYS = 1
WARMUP_REQUESTS = 300
SATURATING_RATE = 3000
"""Fresh transactions a second of the throughput phase (the API answers fewer; past them, repeats)."""
READY_TIMEOUT_SECONDS = 60.0

Result = dict[str, Any]


@dataclass(frozen=True)
class Server:
    """A server under test: how to start it, the route it is loaded on."""

    name: str
    command: list[str]
    path: str


SERVERS = (
    Server("api", ["-m", "stream.tools.cli", "api"], "/v1/score/fraud"),
    Server("floor", ["-m", "bench.api_floor"], "/v1/floor"),
)
TITLES = {"api": "POST /v1/score/fraud", "floor": "floor: do-nothing POST"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rate", type=float, default=500.0, help="offered load of the latency phase, requests/s"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the latency phase")
    parser.add_argument(
        "--connections", type=int, default=16, help="requests in flight in the throughput phase"
    )
    parser.add_argument(
        "--saturate-seconds", type=float, default=5.0, help="duration of the throughput phase"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/api-results.json"), help="JSON result")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="keep logs here (default: a temporary folder)"
    )
    args = parser.parse_args(argv)
    if min(args.rate, args.seconds, args.saturate_seconds) <= 0 or args.connections < 1:
        parser.error("--rate, --seconds and --saturate-seconds > 0, --connections >= 1")
    return args


def transactions(n: int) -> list[bytes]:
    """``n`` simulated transactions (distinct event ids), as the stream would carry them."""
    config = simulator.SimulationConfig(transactions=n, sales=0, rate=0, malformed_rate=0, seed=2)
    return [m.value for m in simulator.generate(config, start=START) if m.kind == "event"]


def wait_ready(port: int, process: Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer,
        ):
            if answer.status == 200:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server on :{port} did not get ready:\n{measure.log_tail(log)}")
        time.sleep(0.1)


def stats(exchanges: Exchanges, cpu_seconds: float) -> Result:
    ms = [x * 1000.0 for x in exchanges.latencies]
    n = len(ms)
    return {
        "requests": n,
        "errors": sum(status != 200 for status in exchanges.statuses),
        "seconds": exchanges.seconds,
        "requests_per_second": n / exchanges.seconds,
        "p50_ms": measure.percentile(ms, 50),
        "p99_ms": measure.percentile(ms, 99),
        "max_ms": max(ms),
        "cpu_ms_per_request": cpu_seconds / n * 1000.0,
    }


def measured(pid: int, load: Coroutine[Any, Any, Exchanges]) -> Result:
    """Run ``load``; its statistics with the server's CPU time over it."""
    cpu = measure.cpu_seconds(pid)
    exchanges = asyncio.run(load)
    return stats(exchanges, measure.cpu_seconds(pid) - cpu)


def run(args: argparse.Namespace, work: Path, out: TextIO = sys.stderr) -> Result:
    """Every phase; the result as JSON-ready data."""
    latency_requests = round(args.rate * args.seconds)
    print(f"generating {latency_requests + WARMUP_REQUESTS:,} transactions, and more to saturate", file=out)
    events = transactions(latency_requests + WARMUP_REQUESTS + round(SATURATING_RATE * args.saturate_seconds))
    fresh = iter(events)
    result: Result = {
        "machine": measure.machine(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "latency": {},
        "throughput": {},
    }
    with localstack.running_stack(work / "stack") as stack, contextlib.ExitStack() as running:
        base = Settings.defaults().replace(
            kafka_bootstrap=stack.kafka_bootstrap,
            redis_url=stack.redis_url,
            namespace="benchapi",
            max_event_age_seconds=0,  # the transactions end at START, in the past
            log_level="WARNING",
            metrics_port=0,
            state_dir=str(work),
        )
        print("bootstrapping both use cases from a day of history", file=out)
        bootstrap_from_history(base, simulator.SimulationConfig(), START, HISTORY_DAYS, work, io.StringIO())
        pids, ports = {}, {}
        for server in SERVERS:
            settings = base.replace(api_port=localstack.free_port())
            env = settings.child_environment()
            log = work / f"{server.name}.log"
            process = running.enter_context(measure.child([sys.executable, *server.command], env, log, work))
            wait_ready(settings.api_port, process, log)
            pids[server.name], ports[server.name] = process.pid, settings.api_port
        gc.collect()
        gc.freeze()  # the load lives until the end: no collector pauses in this client mid-measurement

        def requests_of(server: Server) -> Iterator[bytes]:
            """The API's: a fresh transaction each (repeats only should they run out); the floor's: any."""
            cycling = itertools.cycle(events)
            bodies = itertools.chain(fresh, cycling) if server.name == "api" else cycling
            return (post(server.path, body) for body in bodies)

        for server in SERVERS:
            port, requests = ports[server.name], requests_of(server)
            asyncio.run(_warm(port, requests))
            print(f"{server.name}: {args.rate:g} requests/s for {args.seconds:g} s", file=out)
            load = list(itertools.islice(requests, latency_requests))
            result["latency"][server.name] = measured(pids[server.name], paced(port, load, args.rate))
            print(
                f"{server.name}: {args.connections} requests in flight for {args.saturate_seconds:g} s",
                file=out,
            )
            result["throughput"][server.name] = measured(
                pids[server.name], saturating(port, requests, args.connections, args.saturate_seconds)
            )
    for phase in ("latency", "throughput"):
        api, floor = result[phase]["api"], result[phase]["floor"]
        for key in ("p50_ms", "p99_ms", "requests_per_second", "cpu_ms_per_request"):
            api[f"{key}_vs_floor"] = api[key] / floor[key]
    return result


async def _warm(port: int, requests: Iterator[bytes]) -> None:
    """A few hundred requests first: connections, caches and the model's first calls warm."""
    await saturating(port, itertools.islice(requests, WARMUP_REQUESTS), 4, READY_TIMEOUT_SECONDS)


def table(result: Result) -> str:
    m, o = result["machine"], result["options"]
    lines = [f"scoring API benchmark: {m['nproc']} x {m['cpu_model']}, Python {m['python']}, {m['date']}", ""]
    rows: list[tuple[str, str, list[str]]] = [
        (
            "latency",
            f"at {o['rate']:g} requests/s for {o['seconds']:g} s",
            ["p50_ms", "p99_ms", "requests", "errors", "cpu_ms_per_request"],
        ),
        (
            "throughput",
            f"{o['connections']} in flight for {o['saturate_seconds']:g} s",
            ["requests_per_second", "p50_ms", "p99_ms", "errors", "cpu_ms_per_request"],
        ),
    ]
    heads = {
        "p50_ms": "p50 ms",
        "p99_ms": "p99 ms",
        "requests": "requests",
        "errors": "errors",
        "cpu_ms_per_request": "CPU ms/req",
        "requests_per_second": "requests/s",
    }
    for phase, title, keys in rows:
        lines.append(f"{phase + ' ' + title:<40}" + "".join(f"{heads[k]:>12}" for k in keys))
        for name in ("api", "floor"):
            r = result[phase][name]
            lines.append(f"{TITLES[name]:<40}" + "".join(f"{_number(r[k]):>12}" for k in keys))
        api = result[phase]["api"]
        lines.append(
            f"{'API / floor':<40}"
            + "".join(
                f"{api[k + '_vs_floor']:>11.2f}x" if k + "_vs_floor" in api else f"{'':>12}" for k in keys
            )
        )
        lines.append("")
    return "\n".join(lines).rstrip()


def _number(value: float) -> str:
    return f"{value:,.0f}" if isinstance(value, int) or value >= 100 else f"{value:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="scoring-bench-api-") as tmp:
        work = args.work_dir.resolve() if args.work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = run(args, work)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(table(result))
    print(f"\nresult: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
