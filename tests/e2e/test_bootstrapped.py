"""End to end: a history bootstrapped into Redis, then a real worker serves it from its first event."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from consumers.audit import audit
from stream.settings import Settings
from stream.tools import simulator
from stream.tools.bootstrap import bootstrap
from stream.tools.demo import worker_process
from stream.usecases import DEMAND, FRAUD
from tests.e2e.support import START, counter, event_id, produce, total, wait_until

pytestmark = pytest.mark.e2e

CONFIG = simulator.SimulationConfig(
    transactions=1000, sales=1000, rate=0, malformed_rate=0.0, label_delay=(0.0, 0.0), seed=5
)


def test_the_first_predictions_come_from_the_bootstrapped_models(
    worker_settings: Settings, tmp_path: Path
) -> None:
    settings = worker_settings
    files = simulator.write_history(tmp_path / "h.csv", CONFIG, start=START, days=10)
    for written in files:
        use_case = FRAUD if written.use_case == FRAUD.name else DEMAND
        assert asyncio.run(bootstrap(settings, use_case, written.path)).version == f"{use_case.name}.1"

    messages = list(simulator.generate(CONFIG, start=START))
    events = [m for m in messages if m.kind == "event"]
    labels = [m for m in messages if m.kind == "label"]
    with worker_process(settings, tmp_path / "worker.log") as worker:
        wait_until(lambda: _serving(settings, 1))
        # Every event is scored before any live label is learned: what the first window
        # shows is what the history taught.
        produce(settings, events)
        wait_until(lambda: total(settings, "scoring_predictions_total") >= len(events))
        produce(settings, labels)
        wait_until(lambda: total(settings, "scoring_labels_total", "joined") >= len(labels))
        assert worker.poll() is None
    report = audit(settings).quality
    fraud, demand = report.model("fraud"), report.model("demand")
    assert fraud.early is not None and fraud.early >= 0.9, report.format()
    assert demand.early is not None and demand.baseline_early is not None, report.format()
    assert demand.early < demand.baseline_early, report.format()
    assert {event_id(m) for m in events} == set(audit(settings).predictions)


def _serving(settings: Settings, version: int) -> bool:
    """Whether the worker scores both use cases with ``version`` (the bootstrapped ones)."""
    return all(
        counter(settings, "scoring_served_model_version", model=name) == version
        for name in ("fraud", "demand")
    )
