"""Redis's instructions per scored event and per joined label, in the checkout on ``PYTHONPATH``.

``python -m bench.state_cost --instructions`` runs this file by its path, in the checkout it
measures (this one, or another commit's with ``--against``), beside a ``redis-server`` it
started under ``valgrind --tool=callgrind``. It takes that checkout's own
``bench.state_cost.measure``, the worker's scoring and joining steps as that commit has them,
and has it count callgrind's instructions where it would read Redis's CPU seconds: a figure
that repeats from run to run, where seconds drift with a shared machine's noise. It prints
one line: ``<N> instructions of Redis per scored event, <M> per joined label``.

Run by its path, it imports the measured checkout's ``bench`` and ``stream``, so it measures any
commit whose ``bench.state_cost`` has ``measure(settings, ports, messages, group)`` and
``redis_cpu_seconds`` (c58f4f4 and after).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bench.state_cost as measured  # the measured checkout's: PYTHONPATH names it
from bench.run import START
from stream.settings import Settings
from stream.tools import simulator


def instructions_since_last(pid: int, dumps: Path) -> int:
    """Instructions the callgrind process ``pid`` counted since its last dump, its counters then
    zeroed: it dumps them in files named from ``dumps``, read and removed here."""
    for old in dumps.parent.glob(f"{dumps.name}*"):
        old.unlink()
    subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True)
    total = 0
    for dump in dumps.parent.glob(f"{dumps.name}*"):
        with dump.open() as lines:
            total += next(int(line.split()[1]) for line in lines if line.startswith("totals:"))
    return total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="the redis-server's, on 127.0.0.1")
    parser.add_argument("--pid", type=int, required=True, help="the redis-server's callgrind process")
    parser.add_argument("--dumps", type=Path, required=True, help="its --callgrind-out-file")
    parser.add_argument("--events", type=int, required=True, help="transactions, and as many sales")
    parser.add_argument("--group", type=int, required=True, help="messages of one topic-partition per step")
    args = parser.parse_args(argv)
    counted = 0

    def instructions(ports: Sequence[int]) -> float:
        # In millions, where measure() reads seconds: its µs per message are then instructions.
        nonlocal counted
        counted += instructions_since_last(args.pid, args.dumps)
        return counted / 1e6

    measured.redis_cpu_seconds = instructions
    config = simulator.SimulationConfig(transactions=args.events, sales=args.events, rate=0, seed=4)
    messages = list(simulator.generate(config, start=START))
    settings = Settings.defaults().replace(
        namespace="bench", max_event_age_seconds=0, redis_url=f"redis://127.0.0.1:{args.port}/0"
    )
    result: Any = asyncio.run(measured.measure(settings, [args.port], messages, args.group))
    per_kind = result[0] if isinstance(result, tuple) else result  # c58f4f4's: the costs alone
    print(
        f"{per_kind['event'][0]:.0f} instructions of Redis per scored event, "
        f"{per_kind['label'][0]:.0f} per joined label"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
