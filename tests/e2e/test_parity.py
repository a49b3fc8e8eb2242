"""End to end, on streams written without the simulator: served = backtest, and a user's declaration.

A real `scoring worker` scores paced streams of :mod:`tests.foreign` (stream time advances
with the worker's clock, labels ``LABEL_DELAY`` seconds after their events). What it
served is compared with ``scoring backtest``'s replay of the same events as a history file
with the same delay, and with River's plain scaled logistic regression on the raw fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from river import linear_model, preprocessing
from river import stream as river_stream

from consumers.quality import mae, roc_auc
from stream.records import Transaction
from stream.settings import Settings
from stream.tools.backtest import replay_run
from stream.usecases import DEMAND, FRAUD, UseCase
from tests.e2e.support import counter, send_on_schedule, served_values, total, wait_until, watched_worker
from tests.foreign import WITH_COUNTRY_AND_CURRENCY, fraud_logit, paced_stream, records, write_history

pytestmark = pytest.mark.e2e

LABEL_DELAY = 1.0
RATE = 200.0
"""Events a second. A worker serves a version about 0.4 s after the backtest's publication
(half a 0.5 s poll, which the backtest models, and ~0.2 s of joining, learning and loading,
which it does not): at 400/s that lag costs ~1.5 points of ROC AUC in the first seconds of
learning; at 200/s, about 0.5."""
LAST = 1600
"""The issue's window: served quality over the last 1,600 transactions."""

IMPLICIT = """
[fraud.labels]
policy = "implicit"
maturity_seconds = 2
implicit_target = 0
"""


def metric(use_case: UseCase[Any, Any], predicted: list[float], targets: list[float]) -> float:
    value = roc_auc(predicted, [bool(t) for t in targets]) if use_case is FRAUD else mae(predicted, targets)
    assert value is not None
    return value


def river_plain(rows: list[tuple[Transaction, float]]) -> list[float]:
    """River's ``StandardScaler | LogisticRegression`` on the raw fields (categories one-hot),
    each label learned ``LABEL_DELAY`` seconds of event time after its event: its scores."""
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    dataset = [
        (
            {
                "amount": e.amount,
                f"channel_{e.channel}": 1.0,
                f"country_{e.country}": 1.0,
                f"currency_{e.currency}": 1.0,
            },
            t,
        )
        for e, t in rows
    ]
    moments = {id(x): e.ts.timestamp() for (x, _), (e, _) in zip(dataset, rows, strict=True)}
    scores: list[float] = []
    for _, x, y in river_stream.simulate_qa(
        dataset, moment=lambda x: moments[id(x)], delay=LABEL_DELAY, copy=False
    ):
        if y is None:
            scores.append(model.predict_proba_one(x).get(True, 0.0))
        else:
            model.learn_one(x, bool(y))
    return scores


def test_the_served_metric_agrees_with_the_backtest_and_with_rivers_plain_model(
    worker_settings: Settings, tmp_path: Path
) -> None:
    declaration = tmp_path / "mine.toml"
    declaration.write_text(WITH_COUNTRY_AND_CURRENCY)
    settings = worker_settings.replace(use_cases_file=str(declaration))
    stream = paced_stream(transactions=4000, sales=2000, rate=RATE, label_delay=LABEL_DELAY)
    labels = sum(1 for m in stream.messages if m.kind == "label")
    with watched_worker(settings, tmp_path / "worker.log") as worker:
        send_on_schedule(settings, stream.messages)
        wait_until(lambda: total(settings, "scoring_labels_total", "joined") >= labels)
        assert worker.poll() is None

    for use_case in (FRAUD, DEMAND):
        rows = stream.rows[use_case.name]
        ours = served_values(settings, use_case, [p for p, _ in rows])
        targets = [t for _, t in rows]
        path = write_history(tmp_path / f"{use_case.name}.csv", use_case, rows)
        run = replay_run(settings, use_case.name, path, label_delay=LABEL_DELAY, name="backtest")
        # The backtest learns (and measures) the labels due before its history ends: the same
        # first events of the stream.
        learned = len(run.labels)
        assert 0.8 * len(rows) < learned < len(rows)
        assert run.labels["y"].tolist() == targets[:learned]
        stream_metric = metric(use_case, ours[:learned], targets[:learned])
        backtest_metric = metric(use_case, run.labels["served"].tolist(), targets[:learned])
        if use_case is FRAUD:
            assert abs(stream_metric - backtest_metric) <= 0.01, (stream_metric, backtest_metric)
        else:
            # Which version serves which sale depends on the worker's pace; on a loaded 2-core
            # CI machine the two MAEs differed by 2.6 % (the stream's the lower), by < 2 % idle.
            assert abs(stream_metric - backtest_metric) <= 0.04 * backtest_metric, (
                stream_metric,
                backtest_metric,
            )

    # The check: with country and currency declared, the served ROC AUC over the last
    # 1,600 transactions is within a point of River's plain model on the same fields and delay.
    rows = stream.rows[FRAUD.name]
    targets = [t for _, t in rows]
    plain = river_plain(records(FRAUD, rows))
    ours = served_values(settings, FRAUD, [p for p, _ in rows])
    ours_last, plain_last = (
        metric(FRAUD, ours[-LAST:], targets[-LAST:]),
        metric(FRAUD, plain[-LAST:], targets[-LAST:]),
    )
    assert ours_last >= plain_last - 0.01, (ours_last, plain_last)
    # And near the best any model can do: the concept's own log-odds, as scores.
    oracle = [fraud_logit(p["amount"], p["channel"], p["country"], p["currency"]) for p, _ in rows]
    assert ours_last >= metric(FRAUD, oracle[-LAST:], targets[-LAST:]) - 0.02


def test_an_implicit_policy_learns_from_chargebacks_alone(worker_settings: Settings, tmp_path: Path) -> None:
    declaration = tmp_path / "mine.toml"
    declaration.write_text(WITH_COUNTRY_AND_CURRENCY + IMPLICIT)
    settings = worker_settings.replace(use_cases_file=str(declaration))
    stream = paced_stream(transactions=3000, sales=0, rate=RATE, label_delay=0.5, frauds_only=True)
    rows = stream.rows[FRAUD.name]
    frauds = sum(1 for _, t in rows if t)
    with watched_worker(settings, tmp_path / "worker.log") as worker:
        send_on_schedule(settings, stream.messages)
        # Every transaction without a chargeback matures into "not fraud", and the learner
        # learns each transaction exactly once: the frauds by label, the others matured.
        wait_until(
            lambda: (
                counter(settings, "scoring_labels_total", model="fraud", outcome="matured")
                >= len(rows) - frauds
            ),
            what="every maturity",
        )
        wait_until(
            lambda: counter(settings, "scoring_learner_labels_learned", model="fraud") == len(rows),
            what="every label learned",
        )
        assert (
            counter(settings, "scoring_labels_total", model="fraud", outcome="matured") == len(rows) - frauds
        )
        assert counter(settings, "scoring_labels_total", model="fraud", outcome="joined") == frauds
        assert worker.poll() is None

    ours = served_values(settings, FRAUD, [p for p, _ in rows])
    targets = [t for _, t in rows]
    first, last = metric(FRAUD, ours[:500], targets[:500]), metric(FRAUD, ours[-500:], targets[-500:])
    assert last > first + 0.1 and last >= 0.85, (first, last)
