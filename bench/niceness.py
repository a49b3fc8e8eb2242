"""``python -m bench.niceness``: the worker's latency with its learner processes nicer, or not.

Why the learner processes run ``SCORING_LEARNER_NICENESS`` nicer than their worker
(:mod:`stream.runtime.learning`). One worker runs on a fresh broker and Redis; it is offered
the latency phase's load (events at ``--rate`` and their labels 1-3 s later) for ``--seconds``,
``--rounds`` times at each niceness, alternating: its learner processes at niceness 0, then at
``--niceness``, and so on (set from outside, on the running process: setting it back to 0
takes root, or CAP_SYS_NICE). Alternating phases of one worker compare the two on the same
machine state, which a busy shared machine changes from one minute to the next. It prints
each phase's p50 and p99, the cores the worker, its learners, Redis and the broker used, and
the broker's floor measured first.

Nothing depends on the clock of the day: the simulated streams end at a fixed time.

Examples
--------
.venv/bin/python -m bench.niceness --broker apache-kafka        # 4 rounds of 2 x 15 s, ~5 minutes
.venv/bin/python -m bench.niceness --rounds 1 --seconds 5
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench import services
from bench.run import (
    Bench,
    Options,
    dataset,
    floor,
    latency,
    offered_load,
    prediction_reader,
    prefilled,
    throughput,
)

WARM_EVENTS = 4000
"""Events the worker scores before the phases, so that they time a warm worker."""


def learner_pids(worker: int) -> list[int]:
    """The worker's children: its learner processes."""
    return [int(pid) for pid in Path(f"/proc/{worker}/task/{worker}/children").read_text().split()]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.niceness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", choices=services.BROKERS, default="tansu")
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s offered, and as many labels")
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of each phase")
    parser.add_argument("--rounds", type=int, default=4, help="phases at each niceness")
    parser.add_argument("--niceness", type=int, default=10, help="the learner's, every other phase")
    args = parser.parse_args(argv)
    opts = Options(events=WARM_EVENTS, latency_seconds=args.seconds, half_max=False, broker=args.broker)
    loads = [  # each phase's own event ids: a later phase's events are not duplicates
        offered_load(dataclasses.replace(opts, seed=opts.seed + 10 + i), "fixed", args.rate)
        for i in range(2 * args.rounds)
    ]
    data = dataset(opts, opts.events, opts.seed)
    with (
        tempfile.TemporaryDirectory(prefix="bench-niceness-") as work,
        services.running(args.broker, Path(work)) as running,
    ):
        bench = Bench(opts, running, Path(work), sys.stderr)
        floored = floor(bench, loads[0])
        settings = prefilled(bench, "worker", data)
        reader = prediction_reader(settings)
        try:
            with bench.processes("worker", [settings]) as processes:
                # Too few events for a rate worth printing: they arrive in a handful of batches.
                throughput(bench, processes, reader, data)
                print(f"worker warmed on {WARM_EVENTS:,} events")
                learners = learner_pids(processes[0].pid)  # started with the worker, before it scored
                if not learners:  # else every phase would run at the niceness the learner set itself
                    raise SystemExit("the worker has no learner processes: nothing to compare")
                for i, load in enumerate(loads):
                    niceness = args.niceness if i % 2 else 0
                    for pid in learners:
                        os.setpriority(os.PRIO_PROCESS, pid, niceness)
                    r = latency(bench, processes, settings, reader, load)
                    print(
                        f"learner niceness {niceness:2d}: p50 {r['p50_ms']:8.1f} ms, "
                        f"p99 {r['p99_ms']:8.1f} ms ({r['p99_ms'] / floored['p99_ms']:5.1f} x the floor), "
                        f"missing {r['missing']}; cores: worker {r['cpu_cores']:.2f}, "
                        f"learners {r['children_cpu_cores']:.2f}, Redis {r['redis_cpu_cores']:.2f}, "
                        f"broker {r['broker_cpu_cores']:.2f}",
                        flush=True,
                    )
        finally:
            reader.close()
    print(
        f"broker floor at {args.rate:,.0f}/s: p50 {floored['p50_ms']:.1f} ms, p99 {floored['p99_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
