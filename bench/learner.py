"""``python -m bench.learner``: the learner's cost per journal entry, scored events and labels apart.

It replays the simulator's stream of a use case offline (:class:`stream.tools.replay.Replay`:
the declared features, labels ``--label-delay`` seconds after their events), records the
journal a learner would read, then feeds that journal to a fresh learner state
(:class:`stream.runtime.learner.LearnerState`, the very code a leading learner runs: champion,
challenger, drift monitor and, for a classification, the quality estimate) and times each
entry. It prints the mean microseconds per scored event and per label, each over the second
half of the journal (the first half warms the models up) and over the whole of it (the
median and the best of ``--repeat`` runs: on a busy machine the best is the steadier), and
the pickled size of the learner's state at the end (what each checkpoint writes). Then the
drift monitor's share of a scored event, by part: the monitor with the served predictions
given (data drift, label coverage, the quality estimate), the monitor keeping
a sample for the champion to score (prediction drift, :mod:`models.drift.reference`), and the
quality estimate alone.

Nothing depends on the clock of the day: the simulated events start at a fixed time.

Examples
--------
.venv/bin/python -m bench.learner                          # fraud, 40,000 transactions, ~1 minute
.venv/bin/python -m bench.learner --use-case demand --events 20000 --repeat 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import pickle
import statistics
import time
from collections.abc import Sequence
from typing import Any

from models.lifecycle import LearnOutcome
from stream.records import Sale, Transaction
from stream.runtime.learner import LearnerState, fresh_state
from stream.runtime.state import JournalEntry
from stream.settings import Settings
from stream.tools.replay import Replay
from stream.tools.simulator import SimulationConfig, labelled_events
from stream.usecases import DEMAND, FRAUD, UseCase

START = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)


def journal(
    settings: Settings, use_case: UseCase[Any, Any], events: int, label_delay: float
) -> list[JournalEntry]:
    """The journal of ``events`` simulated events of ``use_case``, every one labelled."""
    fraud = use_case.name == FRAUD.name
    config = SimulationConfig(transactions=events if fraud else 0, sales=0 if fraud else events, seed=1)
    record: type[Transaction | Sale] = use_case.event_type
    rows = [
        (record.model_validate(payload), float(label))
        for _, payload, label in labelled_events(config, start=START)
    ]
    replay = Replay(settings, use_case, label_delay=label_delay)  # one process: its learner is here
    entries: list[JournalEntry] = []
    state, apply = replay.learner, replay.learner.apply

    def recording(
        entry: JournalEntry, *, champion_pred: float | None = None, served: bool = True
    ) -> LearnOutcome:
        entries.append(entry)
        return apply(entry, champion_pred=champion_pred, served=served)

    state.apply = recording  # type: ignore[method-assign]  # the very entries, in the learner's order
    replay.add_all(rows)
    replay.finish(flush=True)
    return entries


def timed(settings: Settings, use_case: UseCase[Any, Any], entries: Sequence[JournalEntry]) -> dict[str, Any]:
    """Feeds ``entries`` to a fresh learner state; seconds per entry, by kind and half."""
    state = fresh_state(settings, use_case)
    clock = time.perf_counter
    spent = {("scored", 0): 0.0, ("scored", 1): 0.0, ("label", 0): 0.0, ("label", 1): 0.0}
    counts = dict.fromkeys(spent, 0)
    half = len(entries) // 2
    for i, entry in enumerate(entries):
        key = ("scored" if entry.y is None else "label", int(i >= half))
        start = clock()
        state.apply(entry)
        spent[key] += clock() - start
        counts[key] += 1

    def us(kind: str, halves: tuple[int, ...]) -> float:
        n = sum(counts[kind, h] for h in halves)
        return 1e6 * sum(spent[kind, h] for h in halves) / max(n, 1)

    return {
        "scored_us": us("scored", (1,)),
        "label_us": us("label", (1,)),
        "scored_us_all": us("scored", (0, 1)),
        "label_us_all": us("label", (0, 1)),
        "checkpoint_bytes": len(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)),
    }


def breakdown(
    settings: Settings, use_case: UseCase[Any, Any], entries: Sequence[JournalEntry], repeat: int
) -> dict[str, float]:
    """What a scored event costs the drift monitor, by part: µs per scored event of the second
    half of the journal, from the state the first half leaves (the best of ``repeat`` runs, the
    ways interleaved so that a busy machine slows them alike)."""
    state = fresh_state(settings, use_case)
    half = len(entries) // 2
    for entry in entries[:half]:
        state.apply(entry)
    blob = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    scored = [(e.pending["x"], e.pending["y_pred"], e.time) for e in entries[half:] if e.y is None]
    clock = time.perf_counter
    best = {
        "monitor, predictions given": math.inf,
        "monitor, champion scoring samples": math.inf,
        "estimate": math.inf,
    }
    for _ in range(repeat):
        for way in best:
            copy: LearnerState = pickle.loads(blob)
            monitor, champion = copy.lifecycle.monitor, copy.lifecycle.champion
            estimate = monitor.estimate
            start = clock()
            if way == "estimate":
                if estimate is not None:
                    for _, y_pred, _ in scored:
                        estimate.update(y_pred)
            else:
                model = champion if way == "monitor, champion scoring samples" else None
                for x, y_pred, t in scored:
                    monitor.scored(x, y_pred, t, model)
            best[way] = min(best[way], 1e6 * (clock() - start) / len(scored))
    return best


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.learner", description=__doc__.split("\n\n")[0])
    parser.add_argument("--use-case", choices=("fraud", "demand"), default="fraud")
    parser.add_argument("--events", type=int, default=40_000, help="simulated events, each labelled")
    parser.add_argument("--label-delay", type=float, default=5.0, help="stream seconds from event to label")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of the same journal (median shown)")
    args = parser.parse_args(argv)
    settings = Settings.defaults()
    use_case = FRAUD if args.use_case == "fraud" else DEMAND
    entries = journal(settings, use_case, args.events, args.label_delay)
    runs = [timed(settings, use_case, entries) for _ in range(args.repeat)]
    scored = sum(1 for e in entries if e.y is None)
    print(
        f"{use_case.name}: {scored:,} scored events and {len(entries) - scored:,} labels, {args.repeat} runs"
    )
    for key, what in (
        ("scored_us", "µs per scored event, second half"),
        ("scored_us_all", "µs per scored event, whole journal"),
        ("label_us", "µs per label, second half"),
        ("label_us_all", "µs per label, whole journal"),
    ):
        values = [run[key] for run in runs]
        runs_text = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {what}: median {statistics.median(values):.2f}, best {min(values):.2f} (runs: {runs_text})")
    print(f"  checkpoint (pickled learner state) at the end: {runs[-1]['checkpoint_bytes'] / 1000:,.0f} kB")
    print("  the drift monitor's share of a scored event, µs (best of the runs):")
    for way, us in breakdown(settings, use_case, entries, args.repeat).items():
        print(f"    {way}: {us:.2f}")


if __name__ == "__main__":
    main()
