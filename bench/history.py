"""``python -m bench.history``: how fast a history file is read, cleaned and merged, in how much memory.

It writes the simulator's sales (its nulls and cost outliers included) as a labelled CSV,
then, in a fresh process so that writing does not count, reads it with
:class:`stream.tools.history.History` to the last batch, building every record, and prints
rows/s and the peak RSS of that process. ``--content-ids`` leaves out ``event_id`` and
``ts`` (each sale's id from its content, its time from its day); ``--disorder K`` moves each
row up to K rows later (at random), so the file is nearly sorted, as exports often are.

Examples
--------
.venv/bin/python -m bench.history                       # 1,000,000 rows, ~30 s
.venv/bin/python -m bench.history --content-ids --disorder 100000
.venv/bin/python -m bench.history --learn               # and replay as bootstrap does, ~2 min
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import heapq
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from stream.records import Sale
from stream.settings import Settings
from stream.tools.history import History
from stream.tools.replay import Replay, processes_for
from stream.tools.simulator import SimulationConfig, labelled_events
from stream.usecases import DEMAND

START = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def write_sales(path: Path, rows: int, *, content_ids: bool, disorder: int, seed: int = 1) -> None:
    """Write ``rows`` simulated sales and their units sold as a CSV at ``path``.

    Each row is written up to ``disorder`` rows after its place in the stream (0: in order).
    """
    fields = [f for f in Sale.model_fields if not (content_ids and f in ("event_id", "ts"))]
    events = labelled_events(SimulationConfig(transactions=0, sales=rows, seed=seed), start=START)
    rng = random.Random(seed)
    late: list[tuple[float, list[str]]] = []  # rows by the place they are written at
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([*fields, "units_sold"])
        for i, (_, payload, units) in enumerate(events):
            cells = [*(_cell(payload.get(f)) for f in fields), str(units)]
            heapq.heappush(late, (i + rng.uniform(0, disorder), cells))
            while late and late[0][0] <= i:
                writer.writerow(heapq.heappop(late)[1])
        writer.writerows(cells for _, cells in sorted(late))


def measure(path: Path, chunk_rows: int, learn: bool = False) -> dict[str, float]:
    """Read, clean and merge ``path`` to the last record (and, with ``learn``, replay it as
    ``scoring bootstrap`` does, all but the writes to Redis): rows/s and this process's peak RSS.

    The peak RSS before reading is that of the imports (the service's, pandas, River...). A
    replay that learns in a second process (:func:`stream.tools.replay.processes_for`) reports
    that process's peak RSS and CPU time apart (``learner_*``): the two run at once.
    """
    imports_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    began = time.perf_counter()
    with History(DEMAND, path, chunk_rows=chunk_rows) as history:
        report = history.clean()
        cleaned = time.perf_counter()
        replay = Replay(Settings.defaults(), DEMAND, processes=processes_for(report.accepted) if learn else 1)
        replayed = 0
        for batch in history.batches():
            replayed += len(batch)
            if learn:
                replay.add_all(batch)
    replay.finish(flush=True)
    seconds = time.perf_counter() - began
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    self_use, child_use = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    learner_kb = child_use.ru_maxrss  # 0 unless it learned in a second process
    return {
        "rows": report.rows,
        "accepted": replayed,
        "seconds": round(seconds, 2),
        "first_pass_seconds": round(cleaned - began, 2),
        "rows_per_second": round(report.rows / seconds),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "cpu_seconds": round(self_use.ru_utime + self_use.ru_stime, 2),  # this process's, imports included
        "learner_processes": replay.processes,
        "learner_peak_rss_mb": round(learner_kb / 1024, 1),
        "learner_cpu_seconds": round(child_use.ru_utime + child_use.ru_stime, 2),
        "imports_rss_mb": round(imports_kb / 1024, 1),
        "file_mb": round(history.size / 1e6, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--content-ids", action="store_true", help="no event_id and ts columns")
    parser.add_argument("--disorder", type=int, default=0, help="move rows up to this many rows later")
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--learn", action="store_true", help="replay the rows as scoring bootstrap does")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.measure is not None:
        sys.stdout.buffer.write(orjson.dumps(measure(args.measure, args.chunk_rows, args.learn)) + b"\n")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-history-") as folder:
        path = Path(folder) / "sales.csv"
        write_sales(path, args.rows, content_ids=args.content_ids, disorder=args.disorder)
        child = [sys.executable, "-m", "bench.history", "--measure", str(path)]
        child += ["--chunk-rows", str(args.chunk_rows), *(["--learn"] if args.learn else [])]
        result = orjson.loads(subprocess.run(child, check=True, capture_output=True).stdout)
    result |= {"content_ids": args.content_ids, "disorder": args.disorder, "learn": args.learn}
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
