"""End to end: a history bootstrapped into Redis, then a real worker serves it from its first event.

Once from the simulator's history, once from a history written without it
(:mod:`tests.foreign`, with duplicates, impossible dates, nulls and cost outliers) through
the command line, as a user would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from consumers.audit import audit
from consumers.quality import mae, roc_auc, running_means
from consumers.reader import read
from stream.records import AuditRecord
from stream.settings import Settings
from stream.tools import simulator
from stream.tools.bootstrap import bootstrap, file_digest
from stream.usecases import DEMAND, FRAUD
from tests.e2e.support import (
    START,
    counter,
    event_id,
    produce,
    send_on_schedule,
    served_values,
    total,
    wait_until,
    watched_worker,
)
from tests.foreign import BEGIN, WITH_COUNTRY_AND_CURRENCY, paced_stream, write_history

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
    with watched_worker(settings, tmp_path / "worker.log") as worker:
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


def test_a_history_of_ones_own_is_bootstrapped_through_the_command_line(
    worker_settings: Settings, tmp_path: Path
) -> None:
    declaration = tmp_path / "mine.toml"
    declaration.write_text(WITH_COUNTRY_AND_CURRENCY)
    settings = worker_settings.replace(use_cases_file=str(declaration))
    history = paced_stream(transactions=6000, sales=3000, rate=200.0, label_delay=0.0, seed=1)
    later = BEGIN + dt.timedelta(hours=1)
    stream = paced_stream(transactions=600, sales=300, rate=200.0, label_delay=1.0, seed=2, begin=later)
    env = {**os.environ, **settings.environment()}
    reasons = {FRAUD.name: {"duplicate_event"}, DEMAND.name: {"duplicate_event", "inconsistent_dates"}}
    learned: dict[str, int] = {}
    digests: dict[str, str] = {}
    # The worker runs from the start: the bootstrap replaces its untrained lineage, and its
    # learner goes on from the bootstrapped checkpoint.
    with watched_worker(settings, tmp_path / "worker.log") as worker:
        wait_until(lambda: total(settings, "scoring_learner_leader") == 2, what="the learners")
        for use_case in (FRAUD, DEMAND):
            path = write_history(
                tmp_path / f"mine-{use_case.name}.csv", use_case, history.rows[use_case.name], problems=True
            )
            done = scoring(env, "bootstrap", use_case.name, str(path))
            assert done.returncode == 0, done.stdout + done.stderr
            shown = json.loads(scoring(env, "models", "show", use_case.name).stdout)
            lineage = shown["lineage"]
            assert shown["live"] and shown["version"] == f"{use_case.name}.1"
            assert lineage["sha256"] == file_digest(path)[1]
            rows = len(pd.read_csv(path))
            rejected = pd.read_csv(path.with_name(path.name + ".rejected.csv"))
            assert lineage["rows"] == rows == lineage["accepted"] + len(rejected)
            assert set(rejected["reason"]) == reasons[use_case.name], rejected["reason"].value_counts()
            assert rejected["reason"].value_counts().to_dict() == {
                reason: n for reason, n in lineage["rejected"].items() if n
            }
            learned[use_case.name] = lineage["accepted"] + len(stream.rows[use_case.name])
            digests[use_case.name] = lineage["sha256"]

        wait_until(lambda: _serving(settings, 1))
        send_on_schedule(settings, stream.messages)
        labels = sum(1 for m in stream.messages if m.kind == "label")
        wait_until(lambda: total(settings, "scoring_labels_total", "joined") >= labels)
        # Each label of the history and of the stream learned once, in one lineage.
        wait_until(
            lambda: (
                {name: counter(settings, "scoring_learner_labels_learned", model=name) for name in learned}
                == learned
            ),
            what="every label learned",
        )
        assert worker.poll() is None
    # Each bootstrap is on the audit topic: by whom, which file, which version it made live.
    audit = [m.parse() for m in read(settings, ["audit"], idle_timeout=2.0)]
    assert sorted(  # records on partitions of their own: no order between them
        (r.action, r.model, r.after, digests[r.model] in r.target)
        for r in audit
        if isinstance(r, AuditRecord)
    ) == [("bootstrap", "demand", "demand.1", True), ("bootstrap", "fraud", "fraud.1", True)]
    transactions, sales = stream.rows[FRAUD.name][:400], stream.rows[DEMAND.name][:200]
    scores = served_values(settings, FRAUD, [p for p, _ in stream.rows[FRAUD.name]])[:400]
    auc = roc_auc(scores, [bool(t) for _, t in transactions])
    assert auc is not None and auc >= 0.85, auc
    forecasts = served_values(settings, DEMAND, [p for p, _ in stream.rows[DEMAND.name]])[:200]
    units = [t for _, t in sales]
    served_mae, baseline_mae = mae(forecasts, units), mae(running_means(units), units)
    assert served_mae is not None and baseline_mae is not None and served_mae < baseline_mae


def scoring(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``scoring <args>``, as a user runs it."""
    command = [sys.executable, "-m", "stream.tools.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)


def _serving(settings: Settings, version: int) -> bool:
    """Whether the worker scores both use cases with ``version`` (the bootstrapped ones)."""
    return all(
        counter(settings, "scoring_served_model_version", model=name) == version
        for name in ("fraud", "demand")
    )
