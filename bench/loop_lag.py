"""``python -m bench.loop_lag``: how much a learner beside it delays an event loop, thread or process.

Why the worker's learners run in a process of their own (:mod:`stream.runtime.learning`), not
in a thread of the worker: a thread releases the event loop, but not the interpreter lock. This
measures it. An asyncio loop (the worker's stand-in) sleeps 1 ms again and again and records how
late it wakes, for ``--seconds``, three times: alone; beside a thread that learns a fraud
journal as the leading learner does (:class:`stream.runtime.learner.LearnerState`, the
``--rate`` labels and as many scored events per second, a signed checkpoint pickled each
second); and beside a process doing the same. It prints the loop's lateness (p50, p99, max)
and the entries the learner got through each time.

Nothing depends on the clock of the day: the simulated events start at a fixed time.

Examples
--------
.venv/bin/python -m bench.loop_lag                  # 2,000 labels/s, 20 s each, ~2 minutes
.venv/bin/python -m bench.loop_lag --rate 8000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench import measure
from bench.learner import journal
from models import snapshot
from stream.runtime.learner import fresh_state
from stream.runtime.state import JournalEntry
from stream.settings import Settings
from stream.usecases import FRAUD

TICK_SECONDS = 0.01  # the learner learns what is due every 10 ms


def learn(entries: Sequence[JournalEntry], rate: float, seconds: float, done: Callable[[int], None]) -> None:
    """Learn ``entries`` at ``2 * rate`` entries/s (a label and a scored event each) for ``seconds``,
    pickling and signing a checkpoint every second; ``done(entries learned)`` at the end."""
    settings = Settings.defaults()
    state = fresh_state(settings, FRAUD)
    begin = last_checkpoint = time.monotonic()
    learned = 0
    while (now := time.monotonic()) - begin < seconds and learned < len(entries):
        due = min(len(entries), int((now - begin) * 2 * rate))
        while learned < due:
            state.apply(entries[learned])
            learned += 1
        if now - last_checkpoint >= 1.0:
            snapshot.dumps(state, settings.signing_key)
            last_checkpoint = now
        time.sleep(TICK_SECONDS)
    done(learned)


def _in_process(entries: Sequence[JournalEntry], rate: float, seconds: float, out: Any) -> None:
    learn(entries, rate, seconds, out.put)


async def lateness(seconds: float) -> list[float]:
    """How late (ms) each 1 ms sleep of this loop wakes, for ``seconds``."""
    late: list[float] = []
    end = time.monotonic() + seconds
    while (before := time.monotonic()) < end:
        await asyncio.sleep(0.001)
        late.append((time.monotonic() - before - 0.001) * 1000.0)
    return late


def measured(entries: Sequence[JournalEntry], rate: float, seconds: float, way: str) -> dict[str, float]:
    learned: list[int] = []
    if way == "thread":
        beside: Any = threading.Thread(target=learn, args=(entries, rate, seconds, learned.append))
        beside.start()
    elif way == "process":
        queue: Any = multiprocessing.get_context("spawn").Queue()
        beside = multiprocessing.get_context("spawn").Process(
            target=_in_process, args=(entries, rate, seconds, queue)
        )
        beside.start()
        time.sleep(3.0)  # its start-up (imports, the journal) is not what is measured
    late = asyncio.run(lateness(seconds))
    if way == "process":
        learned.append(queue.get())
    if way != "alone":
        beside.join()
    return {
        "p50_ms": measure.percentile(late, 50),
        "p99_ms": measure.percentile(late, 99),
        "max_ms": max(late),
        "learned": float(learned[0]) if learned else 0.0,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loop_lag", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="labels per second the learner learns")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each measurement")
    args = parser.parse_args(argv)
    n = int(args.rate * args.seconds)
    entries = journal(Settings.defaults(), FRAUD, n, label_delay=5.0)
    print(f"fraud journal: {len(entries):,} entries; the learner is offered {2 * args.rate:,.0f} entries/s")
    for way in ("alone", "thread", "process"):
        r = measured(entries, args.rate, args.seconds, way)
        print(
            f"  loop {way:<8} late p50 {r['p50_ms']:6.2f} ms, p99 {r['p99_ms']:6.2f} ms, "
            f"max {r['max_ms']:7.2f} ms; learner got through {r['learned'] / args.seconds:,.0f} entries/s"
        )


if __name__ == "__main__":
    main()
