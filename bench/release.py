"""``python -m bench.release``: how often the gate holds and the watch rolls back on stationary streams.

It replays the simulator's stationary streams of both use cases offline
(:class:`stream.tools.replay.Replay`: the learner's code, the release included), versions
published every ``--publish-seconds`` of stream time and labels ``--label-delay`` seconds
after their events, once per gate tolerance and seed, and prints per tolerance and use case
the versions published and the ``version_held`` and ``rollback`` alert changes. On a
stationary stream every hold and rollback is a false alarm: the defaults were chosen from
this table (README: Release).

Nothing depends on the clock of the day: the simulated events end at a fixed time.

Examples
--------
.venv/bin/python -m bench.release                                # 3 seeds x 20,000 events, ~8 minutes
.venv/bin/python -m bench.release --tolerances 0.05 --seeds 1 --events 5000
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson

from stream.records import parse
from stream.settings import Settings
from stream.tools.replay import Replay
from stream.tools.simulator import SimulationConfig, labelled_events
from stream.usecases import DEMAND, FRAUD, UseCase

START = dt.datetime(2026, 3, 4, 12, tzinfo=dt.UTC)
RELEASE_KINDS = ("version_held", "rollback")


def stationary(use_case: UseCase[Any, Any], events: int, seed: int) -> list[tuple[Any, float | None]]:
    """The simulator's stationary stream of ``use_case``: records and targets, in event-time order."""
    config = SimulationConfig(
        transactions=events if use_case is FRAUD else 0, sales=events if use_case is DEMAND else 0, seed=seed
    )
    rows = [
        (parse(use_case.event_type, orjson.dumps(payload)), float(label))
        for _, payload, label in labelled_events(config, start=START)
    ]
    return sorted(rows, key=lambda row: row[0].ts)


def release_alarms(
    settings: Settings, use_case: UseCase[Any, Any], rows: list[tuple[Any, float | None]], label_delay: float
) -> Counter[str]:
    """Versions published and release alert changes (``<kind>/<state>``) of one replay."""
    replay = Replay.as_deployed(settings, use_case, label_delay=label_delay)
    replay.add_all(rows)
    replay.finish(flush=False)
    counts = Counter(f"{a.kind}/{a.state}" for a in replay.alerts if a.kind in RELEASE_KINDS)
    counts["publications"] = len(replay.publications)
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.release", description=__doc__.split("\n")[0])
    parser.add_argument("--tolerances", type=float, nargs="+", default=[0.0, 0.02, 0.05, 0.1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--events", type=int, default=20_000, help="events per use case and seed")
    parser.add_argument("--publish-seconds", type=float, default=60.0, help="of stream time")
    parser.add_argument("--label-delay", type=float, default=600.0, help="seconds of stream time")
    args = parser.parse_args(argv)
    streams = {
        (use_case.name, seed): stationary(use_case, args.events, seed)
        for use_case in (FRAUD, DEMAND)
        for seed in args.seeds
    }
    for tolerance in args.tolerances:
        settings = Settings.defaults().replace(
            gate_tolerance=tolerance, model_publish_seconds=args.publish_seconds
        )
        for use_case in (FRAUD, DEMAND):
            total: Counter[str] = Counter()
            for seed in args.seeds:
                total += release_alarms(settings, use_case, streams[use_case.name, seed], args.label_delay)
            print(f"tolerance {tolerance:g} {use_case.name}: {dict(sorted(total.items()))}", flush=True)


if __name__ == "__main__":
    main()
