"""Drift detectors and the alert lifecycle of one model.

A :class:`Monitor` watches one model through the learner's journal, entry by entry and in
journal order: :meth:`Monitor.scored` for each event scored (its features and the prediction
served) and :meth:`Monitor.learned` for each label joined to its prediction. Each call returns
the alert changes it caused. Five kinds of detectors run, a module each:

``concept_drift`` (:mod:`models.drift.concept`)
    A one-sided CUSUM on the model's per-label error: the error *rising* above its own
    usual level (a model that gets better raises nothing). Classification error is the log
    loss of the probability given to the true class, clipped; regression error is
    ``|sqrt(y) - sqrt(y_pred)|``, which has the same spread at every level for counts.
``data_drift`` (:mod:`models.drift.psi`)
    For each input feature, the population stability index (PSI) between the current
    tumbling window of events and the window before it.
``prediction_drift`` (:mod:`models.drift.reference`)
    The same PSI on one model's predictions for a sample of the window and of its
    reference, both scored by the champion when the window closes: only the inputs move
    it, never what the service does to its models (learning, promotions, rollbacks,
    canaries, bootstraps).
``label_coverage`` (:mod:`models.drift.coverage`)
    The share of scored events whose label arrives (labels learned / events scored, over a
    window of stream time) against its usual level: labels that stop arriving.
``estimated_quality_drop`` (:mod:`models.drift.estimate`, classification)
    The ROC AUC of the served scores estimated from the scores alone (confidence-based
    performance estimation), before their labels come, falling below its usual level;
    with the estimated precision and recall, the realized ones and the calibration error
    that says when the estimate is valid.

Every alert goes through one lifecycle (:mod:`models.drift.alerts`): it **opens** when its
detector crosses its threshold, is **updated** (never opened again) while the condition
lasts, at most once per update period, and **resolves** when the condition has gone (with
hysteresis: a lower level than the one that opened it) or when a lasting change has been
adopted as the new normal. After a resolve, a cooldown keeps the same detector from opening
again at once, so one episode does not flap. There is at most one open alert per ``(kind,
feature)``; its ``id`` is the same for all its changes. Severity is ``critical`` when the
statistic is far past the threshold (:attr:`MonitorConfig.critical_ratio`), else
``warning``. Every threshold and window is in :class:`MonitorConfig`
(:mod:`models.drift.config`), with the reasons for its default.

Time is the journal's stream time, passed in by the caller, never the wall clock, and all
state is plain data updated deterministically: replaying the same journal into a fresh (or
an unpickled) monitor gives the same alerts, ids included. State is bounded: histograms on a
fixed grid for two windows per feature, the numbers of the last few hundred events not yet
binned (they are binned together, every 256 events), a few numbers per detector (a few kB
pickled per feature; see the tests for the measured bound).

Examples
--------
A demand model whose forecasts triple after 3,000 events, while demand does not (its
forecasts are given, as a fixed model's would be, so the monitor watches them as they come;
windows of 1,000 events here, to keep the example short):

>>> import random
>>> rng = random.Random(0)
>>> monitor = Monitor("demand", "regression", MonitorConfig(window=1000, window_warmup=1))
>>> changes = []
>>> for i in range(6000):  # an event every 0.1 s, its label 0.5 s later
...     y_pred, y = (10.0 if i < 3000 else 30.0), float(rng.randint(5, 15))
...     changes += monitor.scored({"price": rng.uniform(1.0, 2.0)}, y_pred, t=i / 10)
...     changes += monitor.learned(y, y_pred, t=i / 10 + 0.5)
>>> for change in changes:
...     print(change.at, change.state, change.kind, change.detector, change.window, change.severity)
301.7 open concept_drift CUSUM 52 labels warning
399.9 open prediction_drift PSI 1000 events critical
401.7 update concept_drift CUSUM 1052 labels critical
499.9 resolve prediction_drift PSI 1000 events warning
501.7 update concept_drift CUSUM 2052 labels critical
>>> print(changes[0].detail)
demand: the model's error (|sqrt(y) - sqrt(forecast)|) rose: 25 of excess error over the last 52 labels, \
beyond its usual 0.455 per label
>>> [(alert.kind, alert.state, alert.first_seen) for alert in monitor.open_alerts()]
[('concept_drift', 'update', 301.7)]

The forecasts' new distribution is adopted one window after it is seen; the error stays
high, so the concept drift alert stays open.

"""

from models.drift.alerts import KINDS, AlertChange, Kind, Severity, State
from models.drift.config import MonitorConfig
from models.drift.estimate import PerformanceEstimate
from models.drift.monitor import Monitor, Reading
from models.drift.psi import psi
from models.drift.reference import PredictionDrift, Scorer

__all__ = [
    "KINDS",
    "AlertChange",
    "Kind",
    "Monitor",
    "MonitorConfig",
    "PerformanceEstimate",
    "PredictionDrift",
    "Reading",
    "Scorer",
    "Severity",
    "State",
    "psi",
]
