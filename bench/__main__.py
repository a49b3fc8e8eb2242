"""``python -m bench``: run the benchmark, print its table, write its JSON result.

Examples
--------
.venv/bin/python -m bench                                  # 200k events, ~15 minutes on 2 cores
.venv/bin/python -m bench --events 2000 --latency-seconds 2 --latency-rate 500
.venv/bin/python -m bench --rss-events 1000000             # and the worker's RSS, 100k vs 1M
.venv/bin/python -m bench --redis-cluster 3                # and the worker on a 3-master Redis Cluster
.venv/bin/python -m bench --broker apache-kafka            # on Apache Kafka 0.9.0.1 (its stock Faust skipped)
"""

from __future__ import annotations

import argparse
import functools
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from bench import scale, services, state_cost
from bench.report import table
from bench.run import Options, Phase, run
from stream.settings import Settings


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="valid events prefilled per variant")
    parser.add_argument("--latency-rate", type=float, default=2000.0, help="offered load, events/s")
    parser.add_argument(
        "--latency-seconds", type=float, default=60.0, help="duration of the offered load, at each rate"
    )
    parser.add_argument(
        "--no-half-max",
        dest="half_max",
        action="store_false",
        help="skip the second offered load, at half the worker's measured events/s",
    )
    parser.add_argument("--processes", type=int, default=2, help="worker processes of the scaling phase")
    parser.add_argument(
        "--rss-events",
        type=int,
        default=0,
        help="also measure the worker's RSS over this many events (0: skip)",
    )
    parser.add_argument(
        "--state-events",
        type=int,
        default=Options.state_events,
        metavar="N",
        help="transactions, and as many sales, of the Redis phase without a broker (bytes per event: "
        "fewer than 10,000 weigh the growth of Redis's tables more)",
    )
    parser.add_argument(
        "--redis-cluster",
        type=int,
        default=0,
        metavar="N",
        help="also run the worker on a Redis Cluster of N masters (at least 3), and project a scale-out",
    )
    parser.add_argument(
        "--fetch-wait-ms",
        type=int,
        default=Settings.defaults().fetch_max_wait_ms,
        help="the workers' SCORING_FETCH_MAX_WAIT_MS (default: its default)",
    )
    parser.add_argument(
        "--broker",
        choices=services.BROKERS,
        default="tansu",
        help="the broker: the local stack's Tansu, or Apache Kafka 0.9.0.1 (needs java and npm)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"), help="JSON result")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="keep logs here (default: a temporary folder, removed)"
    )
    args = parser.parse_args(argv)
    if args.events < 2 or args.processes < 1 or args.latency_rate <= 0 or args.latency_seconds <= 0:
        parser.error("--events >= 2, --processes >= 1, --latency-rate and --latency-seconds > 0")
    if args.state_events < 1:
        parser.error("--state-events >= 1")
    if args.fetch_wait_ms < 0:
        parser.error("--fetch-wait-ms >= 0")
    if args.redis_cluster < 0 or 0 < args.redis_cluster < 3:
        parser.error("--redis-cluster: 0 (none) or at least 3 masters (redis-cli --cluster create needs 3)")
    return args


def _rounded(value: Any) -> Any:
    """``value`` with every float rounded to 3 decimals, for a readable JSON."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so that every process started is stopped on the way out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a background job starts with it ignored
        signal.signal(signum, _interrupt)
    opts = Options(
        events=args.events,
        latency_rate=args.latency_rate,
        latency_seconds=args.latency_seconds,
        half_max=args.half_max,
        processes=args.processes,
        rss_events=args.rss_events,
        state_events=args.state_events,
        fetch_wait_ms=args.fetch_wait_ms,
        broker=args.broker,
        seed=args.seed,
    )
    out = args.out.resolve()
    with tempfile.TemporaryDirectory(prefix="scoring-bench-") as tmp:
        work = args.work_dir.resolve() if args.work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        try:
            phases: list[tuple[str, Phase]] = [("redis_state", state_cost.phase)]
            if args.redis_cluster:
                phases.append(("cluster", functools.partial(scale.cluster, masters=args.redis_cluster)))
            result = run(opts, work, phases=phases)
        except KeyboardInterrupt:
            print("interrupted: every process started was stopped", file=sys.stderr)
            return 130
    scale.add_projection(result, Settings.defaults().redis_cluster_buckets)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(_rounded(result), option=orjson.OPT_INDENT_2) + b"\n")
    print(table(result))
    print(f"\nresult: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
