"""The calibration command runs end to end on cached rows (no Redis needed)."""

from __future__ import annotations

import io
import pickle
import random
from pathlib import Path

from stream.settings import Settings
from stream.tools.calibrate import calibrate, journal


def test_the_journal_is_in_time_order_with_each_label_after_its_event() -> None:
    entries = list(journal(500, rate=100.0, seed=1, lost=lambda i: i % 10 == 0))
    assert [e.t for e in entries] == sorted(e.t for e in entries)
    events = {e.index: e.t for e in entries if e.label is None}
    labels = {e.index: e.t for e in entries if e.label is not None}
    assert len(events) == 500 and len(labels) == 450
    assert all(2.0 <= labels[i] - events[i] <= 6.0 for i in labels)


def test_calibrate_prints_one_row_per_use_case_and_seed(tmp_path: Path) -> None:
    rng = random.Random(0)
    n = 2000
    for drift in (None, 0.5):
        fraud = [({"log_amount": rng.gauss(3, 1), "channel": "pos"}, 0.0, rng.random() / 9) for _ in range(n)]
        demand = [({"log_price": rng.gauss(1, 0.3), "category": "dairy"}, 5.0, 5.0) for _ in range(n)]
        for name, rows in (("fraud", fraud), ("demand", demand)):
            (tmp_path / f"rows-{name}-{n}-7-{drift}.pkl").write_bytes(pickle.dumps(rows))
    out = io.StringIO()
    results = calibrate(Settings.defaults(), n, [7], 100.0, tmp_path, out=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and lines[0].startswith("| model | seed | stationary")
    assert [r.cells["model"] for r in results] == ["fraud", "demand"]
    assert all(r.cells["stationary"] == "none" for r in results)
