"""``scoring calibrate``: the drift monitor's calibration on simulated streams.

For each use case and seed, the simulator's stream goes through the service's own features
(:func:`stream.tools.evaluate.feature_stream`) and the default pipeline, prequentially:
each event is scored before its label is learned. The journal the learner would read is
then rebuilt on a synthetic clock (``--rate`` events per second, each label 2-6 s after its
event) and fed to a fresh :class:`~models.drift.Monitor` in four scenarios:

``stationary``
    the stream as simulated, no drift: every alert that opens is a false alarm;
``concept``
    the simulator's concept drift at half of the stream (``drift_at=0.5``): how many labels
    after the first label of a drifted event the concept drift alert opens, whether it is
    updated rather than opened again, and when and how it resolves;
``shift``
    the stationary stream with one feature shifted from half of it on (fraud: ``log_amount``
    x 1.5; demand: ``log_price`` x 1.5), scored by the same model: which features the data
    drift alerts name, and how many events after the shift;
``coverage``
    the stationary stream with the labels of the events between 60 % and 70 % of it lost:
    how many seconds until the label coverage alert opens and after the labels come back
    until it resolves.

It prints a Markdown table, one row per use case and seed: the alerts opened on the
stationary stream and the largest value each kind of detector reached there (as a fraction
of its threshold); the concept drift alert's delay, updates, reopenings and resolution; the
features named after the shift; the label coverage alert's delays; the largest pickled size
of the monitor and its cost per call. Scored rows can be cached (``--cache DIR``) to rerun
the monitor alone: ``scoring calibrate --cache .scoring/calibrate``.
"""

from __future__ import annotations

import datetime as dt
import heapq
import pickle
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from models.drift import AlertChange, Monitor, MonitorConfig
from models.online import Features, OnlineModel
from models.pipelines import CANDIDATES
from stream.settings import Settings
from stream.tools.evaluate import feature_stream
from stream.tools.simulator import SimulationConfig
from stream.usecases import USE_CASES, UseCase
from stream.usecases import use_case as declared_use_case

Row = tuple[Features, float, float]  # features, label, prediction served
SHIFTED = {"fraud": "log_amount", "demand": "log_price"}
SHIFT_FACTOR = 1.5
LOST_LABELS = (0.6, 0.7)


def start_of(seed: int) -> dt.datetime:
    """The simulation's start: a different time of day for each seed."""
    return dt.datetime(2026, 1, 5, tzinfo=dt.UTC) + dt.timedelta(hours=7 * seed)


def prequential(use_case: str, pairs: Sequence[tuple[Features, float]]) -> list[Row]:
    """Scores each example with the default pipeline before it learns it."""
    declared = declared_use_case(use_case)
    model = OnlineModel(use_case, declared.task, CANDIDATES[declared.task][declared.champion]())
    rows: list[Row] = []
    for x, y in pairs:
        (y_pred,) = model.predict_many([x])
        model.learn_one(x, y)
        rows.append((x, y, y_pred))
    return rows


def simulated_rows(
    settings: Settings,
    use_case: UseCase[Any, Any],
    events: int,
    seed: int,
    drift_at: float | None,
    cache: Path | None,
) -> list[Row]:
    """The prequential rows of one simulated stream, from ``cache`` when it has them."""
    path = cache / f"rows-{use_case.name}-{events}-{seed}-{drift_at}.pkl" if cache else None
    if path is not None and path.exists():
        with path.open("rb") as f:
            rows: list[Row] = pickle.load(f)
        return rows
    transactions, sales = (events, 0) if use_case.name == "fraud" else (0, events)
    config = SimulationConfig(transactions=transactions, sales=sales, drift_at=drift_at, seed=seed)
    pairs = feature_stream(settings, use_case, config, start=start_of(seed))
    rows = prequential(use_case.name, pairs)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            pickle.dump(rows, f)
    return rows


def shifted(use_case: str, rows: Sequence[Row], at: int) -> list[Row]:
    """``rows`` with one feature multiplied by :data:`SHIFT_FACTOR` from ``at`` on, rescored."""
    name = SHIFTED[use_case]
    pairs: list[tuple[Features, float]] = []
    for i, (x, y, _) in enumerate(rows):
        value = x[name]
        if i >= at and isinstance(value, float):
            x = {**x, name: value * SHIFT_FACTOR}
        pairs.append((x, y))
    return prequential(use_case, pairs)


@dataclass(frozen=True)
class Entry:
    """One journal entry: an event scored (``label`` None) or a label learned."""

    t: float
    index: int  # the event's position in the stream
    label: float | None


def journal(n: int, rate: float, seed: int, lost: Callable[[int], bool] = lambda i: False) -> Iterator[Entry]:
    """Events at ``i / rate`` s, each label 2-6 s after its event (unless ``lost``), in time order."""
    rng = random.Random(f"{seed}:journal")
    pending: list[tuple[float, int]] = []
    for i in range(n):
        t = i / rate
        while pending and pending[0][0] <= t:
            at, j = heapq.heappop(pending)
            yield Entry(at, j, 0.0)
        yield Entry(t, i, None)
        if not lost(i):
            heapq.heappush(pending, (t + rng.uniform(2.0, 6.0), i))
    while pending:
        at, j = heapq.heappop(pending)
        yield Entry(at, j, 0.0)


@dataclass
class Run:
    """What a monitor raised on one journal, its peaks and its cost."""

    changes: list[tuple[int, int, AlertChange]] = field(default_factory=list)  # (events, labels, change)
    peaks: dict[str, tuple[float, str]] = field(
        default_factory=dict
    )  # kind -> (statistic / threshold, feature)
    calls: int = 0
    seconds: float = 0.0
    pickled: int = 0  # largest pickled size seen, bytes

    def opened(self, kind: str | None = None) -> list[tuple[int, int, AlertChange]]:
        return [c for c in self.changes if c[2].state == "open" and (kind is None or c[2].kind == kind)]

    def watch(self, monitor: Monitor) -> None:
        for reading in monitor.readings():
            ratio = reading.statistic / reading.threshold
            if ratio > self.peaks.get(reading.kind, (-1.0, ""))[0]:
                self.peaks[reading.kind] = (ratio, reading.feature)


def run(
    use_case: str, rows: Sequence[Row], rate: float, seed: int, config: MonitorConfig | None, **kw: Any
) -> Run:
    """Feeds the journal of ``rows`` to a fresh monitor; times the monitor's calls.

    The monitor leaves alone the features the use case declares exempt, as the learner's does,
    and has prediction drift scored by a model of the default pipeline that learns each
    label as the journal brings it (as the learner's champion does; its learning is not
    timed). The rows' predictions are the served ones.
    """
    declared = declared_use_case(use_case)
    config = config or MonitorConfig()
    monitor = Monitor(
        use_case, declared.task, replace(config, exempt=config.exempt | declared.features.drift_exempt)
    )
    model = OnlineModel(use_case, declared.task, CANDIDATES[declared.task][declared.champion]())
    result = Run()
    events = labels = 0
    clock = time.perf_counter
    for entry in journal(len(rows), rate, seed, **kw):
        x, y, y_pred = rows[entry.index]
        start = clock()
        if entry.label is None:
            changes = monitor.scored(x, y_pred, entry.t, model)
            events += 1
        else:
            changes = monitor.learned(y, y_pred, entry.t, served=y_pred)
            labels += 1
        result.seconds += clock() - start
        if entry.label is not None:
            model.learn_one(x, y)
        result.calls += 1
        result.changes += [(events, labels, change) for change in changes]
        if result.calls % 97 == 0:
            result.watch(monitor)
        if result.calls % 20_000 == 0:
            result.pickled = max(result.pickled, len(pickle.dumps(monitor)))
    result.watch(monitor)
    result.pickled = max(result.pickled, len(pickle.dumps(monitor)))
    return result


def _labels_before(rows_n: int, rate: float, seed: int, index: int) -> int:
    """Labels learned before the first label of the event at ``index``."""
    for labels, entry in enumerate(e for e in journal(rows_n, rate, seed) if e.label is not None):
        if entry.index >= index:
            return labels
    return rows_n


def _kinds(opened: list[tuple[int, int, AlertChange]]) -> str:
    counts = Counter(c.kind + (f"[{c.feature}]" if c.feature else "") for _, _, c in opened)
    return ", ".join(f"{k} x{n}" if n > 1 else k for k, n in sorted(counts.items())) or "none"


@dataclass
class Result:
    """The four scenarios of one use case and seed, as table cells."""

    use_case: str
    seed: int
    runs: list[Run] = field(default_factory=list)
    cells: dict[str, str] = field(default_factory=dict)


COLUMNS = {
    "model": "model",
    "seed": "seed",
    "stationary": "stationary: alerts opened",
    "peaks": "stationary peak / threshold: concept, data, prediction, coverage, estimate",
    "delay": "drift: opened after (labels)",
    "episode": "updates, reopens",
    "resolved": "resolved after (labels)",
    "drift other": "drift: other alerts",
    "shift": "shift: feature named (events after)",
    "coverage": "labels lost: opened, resolved (s)",
    "kB": "pickled kB",
    "µs": "µs/call",
}


def _stationary(result: Result, r: Run) -> None:
    result.cells["stationary"] = _kinds(r.opened())
    peaks = []
    for kind in (
        "concept_drift",
        "data_drift",
        "prediction_drift",
        "label_coverage",
        "estimated_quality_drop",
    ):
        ratio, feature = r.peaks.get(kind, (0.0, ""))
        peaks.append(f"{ratio:.2f}" + (f" ({feature})" if feature else ""))
    result.cells["peaks"] = ", ".join(peaks)


def _concept(result: Result, r: Run, first: int) -> None:
    concept = [c for c in r.changes if c[2].kind == "concept_drift"]
    opens = [c for c in concept if c[2].state == "open"]
    after = [c for c in opens if c[1] > first]
    before = len(opens) - len(after)
    if not after:
        result.cells["delay"] = "NOT DETECTED"
    else:
        episode = [c for c in concept if c[2].id == after[0][2].id]
        result.cells["delay"] = f"{after[0][1] - first}" + (f" ({before} false before)" if before else "")
        result.cells["episode"] = f"{sum(c[2].state == 'update' for c in episode)}, {len(after) - 1}"
        resolve = next((c for c in episode if c[2].state == "resolve"), None)
        how = "adopted" if resolve and "adopted" in resolve[2].detail else "recovered"
        result.cells["resolved"] = "no" if resolve is None else f"{resolve[1] - first} ({how})"
    result.cells["drift other"] = _kinds([c for c in r.opened() if c[2].kind != "concept_drift"])


def _shift(result: Result, r: Run, at: int) -> None:
    data = [c for c in r.opened("data_drift") if c[0] > at]
    false = len(r.opened("data_drift")) - len(data)
    cell = "NOT DETECTED"
    if data:
        cell = f"{', '.join(sorted({str(c[2].feature) for c in data}))} ({data[0][0] - at})"
    others = [c for c in r.opened() if c[2].kind != "data_drift"]
    cell += f"{f'; {false} false before' if false else ''}{f'; also {_kinds(others)}' if others else ''}"
    result.cells["shift"] = cell


def _coverage(result: Result, r: Run, stopped: float, resumed: float) -> None:
    coverage = [c for c in r.changes if c[2].kind == "label_coverage"]
    opens = [c[2] for c in coverage if c[2].state == "open"]
    if not opens:
        result.cells["coverage"] = "NOT DETECTED"
        return
    resolve = next((c[2] for c in coverage if c[2].state == "resolve"), None)
    resolved = "no" if resolve is None else f"{resolve.at - resumed:.0f}"
    result.cells["coverage"] = f"{opens[0].at - stopped:.0f}, {resolved}" + (
        f" ({len(opens) - 1} reopens)" if len(opens) > 1 else ""
    )


def calibrate(
    settings: Settings,
    events: int,
    seeds: Sequence[int],
    rate: float,
    cache: Path | None,
    *,
    use_cases: Sequence[str] = ("fraud", "demand"),
    config: MonitorConfig | None = None,
    out: Any = sys.stdout,
) -> list[Result]:
    """Runs the four scenarios for each use case and seed; prints the table row by row."""
    results: list[Result] = []
    print(format_row(COLUMNS), file=out)
    print(format_row(dict.fromkeys(COLUMNS, "---")), file=out, flush=True)
    for use_case in (uc for uc in USE_CASES if uc.name in use_cases):
        name = use_case.name
        for seed in seeds:
            result = Result(name, seed, cells={"model": name, "seed": str(seed)})
            half = events // 2
            base = simulated_rows(settings, use_case, events, seed, None, cache)
            result.runs.append(r := run(name, base, rate, seed, config))
            _stationary(result, r)
            drifted = simulated_rows(settings, use_case, events, seed, 0.5, cache)
            result.runs.append(r := run(name, drifted, rate, seed, config))
            _concept(result, r, _labels_before(events, rate, seed, half))
            result.runs.append(r := run(name, shifted(name, base, half), rate, seed, config))
            _shift(result, r, half)
            low, high = (round(f * events) for f in LOST_LABELS)
            result.runs.append(r := run(name, base, rate, seed, config, lost=lambda i: low <= i < high))  # noqa: B023
            _coverage(result, r, low / rate, high / rate)
            calls = sum(r.calls for r in result.runs)
            result.cells["µs"] = f"{1e6 * sum(r.seconds for r in result.runs) / calls:.1f}"
            result.cells["kB"] = f"{max(r.pickled for r in result.runs) / 1000:.0f}"
            results.append(result)
            print(format_row(result.cells), file=out, flush=True)
    return results


def format_row(cells: dict[str, str]) -> str:
    """One row of the table, ``|``-separated (Markdown)."""
    return "| " + " | ".join(cells.get(key, "-") for key in COLUMNS) + " |"
