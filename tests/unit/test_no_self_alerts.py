"""The issue's acceptance, offline through the learner's own code (:class:`stream.tools.replay.Replay`):
no alert for what the service did itself, and an input change still alerted, its quality
estimated before the labels show it.

The streams are written without the project's simulator (:mod:`tests.foreign`), with the
declaration a user of them writes (country and currency declared), versions published every
second of stream time and served half a poll later, as the workers do.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from consumers.quality import roc_auc
from models.drift import KINDS
from stream.runtime.state import Pending
from stream.settings import Settings
from stream.tools.replay import Replay
from tests.foreign import WITH_COUNTRY_AND_CURRENCY, paced_stream, records

LABEL_DELAY = 3600.0
"""Seconds from a transaction to its label on the drifting stream: chargebacks come late (here an
hour; the lead of the estimate grows with it)."""
RATE = 2.0
"""Transactions a second on the drifting stream: 40,000 of them span 5.5 hours."""
LEVEL = 0.88
"""The ROC AUC the estimate and the realized metric fall below after the shift (~0.93 before, ~0.84 after)."""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    declaration = tmp_path / "mine.toml"
    declaration.write_text(WITH_COUNTRY_AND_CURRENCY)
    return Settings.defaults().replace(use_cases_file=str(declaration))


def test_a_stationary_stream_raises_no_drift_alert_while_the_challenger_is_promoted(
    settings: Settings,
) -> None:
    """The issue's stream: 60,000 events, all labelled, stationary; fraud is a concept of
    interactions, which the Hoeffding tree challenger fits better than the logistic regression."""
    stream = paced_stream(
        transactions=40_000, sales=20_000, rate=200.0, label_delay=1.0, concept="interactions"
    )
    for use_case in settings.use_cases:
        run = Replay.as_deployed(settings, use_case, label_delay=1.0)
        run.add_all(records(use_case, stream.rows[use_case.name]))
        run.finish(flush=True)
        kinds = [(a.kind, a.state, a.feature) for a in run.alerts]
        assert [k for k in kinds if k[0] in KINDS] == [], use_case.name
        if use_case.name == "fraud":
            assert run.learner.lifecycle.contest.promotions == 1
            assert run.learner.lifecycle.contest.champion_name == "hoeffding_tree_mc"
            assert ("promotion", "open", "") in kinds  # an info alert of its own


def test_a_new_input_mix_is_drift_and_its_estimated_quality_falls_before_the_labels_show_it(
    settings: Settings,
) -> None:
    """From 60 % of the stream on, transactions come from another mix (phone orders from the US
    in dollars, alike amounts), where the model separates fraud less well.

    The watch is kept from rolling back here: a rollback serves another model, which starts
    the estimate over (its reference was the replaced model's), and on this stream the watch
    rolled back once, 882 s after the shift, on labels of events from before it (the
    release has tests of its own)."""
    settings = settings.replace(rollback_alpha=1e-12)
    (fraud,) = (u for u in settings.use_cases if u.name == "fraud")
    stream = paced_stream(transactions=40_000, sales=0, rate=RATE, label_delay=LABEL_DELAY, shift_at=0.6)
    rows = records(fraud, stream.rows[fraud.name])
    shifted_at = rows[24_000][0].ts.timestamp()
    estimated: list[tuple[float, float]] = []  # (stream time, estimated ROC AUC) as the learner has it

    def watch(event: Any, pending: Pending, target: float | None) -> None:
        estimate = run.learner.lifecycle.monitor.estimate
        assert estimate is not None
        if estimate.valid and "roc_auc" in estimate.estimated:
            estimated.append((pending["scored_at"], estimate.estimated["roc_auc"]))

    run = Replay.as_deployed(settings, fraud, label_delay=LABEL_DELAY, on_scored=watch)
    run.add_all(rows)
    run.finish(flush=False)

    assert not [a for a in run.alerts if a.kind == "rollback"]
    opened = {(a.kind, a.feature): a.t for a in run.alerts if a.state == "open" and a.kind in KINDS}
    assert {("data_drift", "channel"), ("data_drift", "country"), ("data_drift", "currency")} <= opened.keys()
    assert ("prediction_drift", "") in opened
    assert all(t > shifted_at for t in opened.values())  # nothing before the shift

    # The realized ROC AUC of the served scores over the last 5,000 labels, as they come.
    labels = run.labels
    realized = [
        (
            labels[i].t,
            roc_auc(
                [lab.served for lab in labels[i - 5000 : i]], [lab.y > 0.5 for lab in labels[i - 5000 : i]]
            ),
        )
        for i in range(5000, len(labels), 250)
    ]
    before = [auc for t, auc in estimated if t < shifted_at]
    assert before and min(before[-10:]) > 0.9  # valid, and high, before the shift
    estimate_falls = next(t for t, auc in estimated if t > shifted_at and auc < LEVEL)
    realized_falls = next(t for t, auc in realized if t > shifted_at and auc is not None and auc < LEVEL)
    assert estimate_falls - shifted_at < LABEL_DELAY / 2  # within ~2,500 events of the shift
    assert realized_falls - estimate_falls > LABEL_DELAY / 2  # the labels show it an hour later
    alert = opened["estimated_quality_drop", ""]
    assert shifted_at < alert < realized_falls
    assert not math.isnan(run.learner.lifecycle.monitor.estimate.calibration_error)  # type: ignore[union-attr]
