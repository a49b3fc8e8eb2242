"""The drift monitor of one model: its detectors, fed by the learner's journal.

A :class:`Monitor` composes one :class:`~models.drift.concept.ConceptDrift`, one
:class:`~models.drift.coverage.LabelCoverage`, one
:class:`~models.drift.reference.PredictionDrift` (one model's predictions on a sample of a
window and of its reference), a :class:`~models.drift.psi.DistributionDrift` for each input
feature not exempt and, for a classification, one
:class:`~models.drift.estimate.PerformanceEstimate` (the served scores' quality, estimated
before their labels come), and sends their signals through one
:class:`~models.drift.alerts.Alerts`. It counts the events of the data and prediction drift
windows, and bins their numbers every 256 events.

Examples
--------
>>> monitor = Monitor("fraud", "classification", MonitorConfig(exempt=frozenset({"hour_sin"})))
>>> monitor.scored({"amount": 12.5, "channel": "pos", "hour_sin": 0.5}, 0.01, t=0.0)
[]
>>> monitor.learned(0.0, 0.01, t=3.0)
[]
>>> [(r.kind, r.detector, r.feature, r.threshold) for r in monitor.readings()]
[('concept_drift', 'CUSUM', '', 25.0), ('prediction_drift', 'PSI', '', 0.5), \
('label_coverage', 'coverage_shortfall', '', 0.5), ('estimated_quality_drop', 'CBPE', '', 0.05), \
('data_drift', 'PSI', 'amount', 0.25), ('data_drift', 'PSI', 'channel', 0.25)]

"""

from __future__ import annotations

import math
from collections.abc import KeysView, Mapping
from dataclasses import dataclass
from typing import Any

from models.drift.alerts import AlertChange, Alerts, Detector, Kind
from models.drift.concept import ConceptDrift
from models.drift.config import MonitorConfig
from models.drift.coverage import LabelCoverage
from models.drift.estimate import PerformanceEstimate
from models.drift.psi import DistributionDrift
from models.drift.reference import PredictionDrift, Scorer
from models.pipelines import Task

__all__ = ["Monitor", "Reading"]

_CHUNK = 256  # events between two binnings of the numbers they brought (DistributionDrift.count)


@dataclass(frozen=True)
class Reading:
    """One detector's live value (for the ``scoring_drift_statistic`` gauges).

    ``feature`` is ``""`` for the model-wide detectors. Every detector opens an alert when its
    statistic reaches its threshold.
    """

    kind: Kind
    detector: str
    feature: str
    statistic: float
    threshold: float


class Monitor:
    """The drift detectors of one model and the lifecycle of their alerts.

    Parameters
    ----------
    model
        The model's name (part of each alert's id).
    task
        ``"classification"`` (predictions are probabilities of the label ``True``) or
        ``"regression"`` (forecasts of non-negative counts).
    config
        Thresholds, windows and exempt features; :class:`MonitorConfig` defaults when ``None``.

    """

    def __init__(self, model: str, task: Task, config: MonitorConfig | None = None) -> None:
        if task not in ("classification", "regression"):
            raise ValueError(f"unknown task {task!r}")
        self.model = model
        self.task: Task = task
        self.config = config or MonitorConfig()
        self._alerts = Alerts(model, self.config.critical_ratio)
        self._concept = ConceptDrift(task, self.config)
        self._prediction = PredictionDrift(self.config, seed=model)
        self._features: dict[str, DistributionDrift] = {}
        self._coverage = LabelCoverage(self.config)
        self._estimate = PerformanceEstimate(self.config) if task == "classification" else None
        self._events = 0  # events in the current window
        self._windows = 0  # windows closed
        # Events scored since their values last went to the distributions: (x, y_pred).
        self._scored: list[tuple[Mapping[str, float | str], float]] = []

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_scored", [])  # a monitor pickled before it buffered events

    # -- inputs --------------------------------------------------------------------------

    def scored(
        self, x: Mapping[str, float | str], y_pred: float, t: float, model: Scorer | None = None
    ) -> list[AlertChange]:
        """An event with features ``x`` was served ``y_pred`` at stream time ``t``.

        ``model`` is the model learning now (the champion): when a window closes it scores a
        sample of the window and of its reference (:mod:`models.drift.reference`), so that
        nothing the service does to its models moves prediction drift. Without one, it is
        measured on ``y_pred``, which must then come from one fixed model. A
        classification's ``y_pred`` also feeds the quality estimate
        (:mod:`models.drift.estimate`).

        Its values reach the distributions with those of the events around it, in their
        order, before anything reads them (:meth:`_take`): the same counts, in one pass a feature.
        """
        signal = self._coverage.update(t, label=False)
        changes = [] if signal is None else self._alerts.follow(self._coverage, signal, t)
        if model is None:
            self._scored.append((x, y_pred))
        else:  # the prediction drift detector samples the event; the served score is not counted
            self._scored.append((x, math.nan))
            self._prediction.observe(x, model, y_pred)
        estimate = self._estimate
        if estimate is not None and (signal := estimate.update(y_pred)) is not None:
            changes += self._alerts.follow(estimate, signal, t)
        self._events += 1
        if self._events >= self.config.window:
            changes += self._close_window(t, model)
        elif self._events % _CHUNK == 0:
            self._take()
            for distribution in self._distributions():
                distribution.count()
        return changes

    def learned(
        self,
        y_true: float,
        y_pred: float,
        t: float,
        *,
        served: float | None = None,
        scored_at: float | None = None,
    ) -> list[AlertChange]:
        """The label ``y_true`` of an event was learned at stream time ``t``.

        ``y_pred`` is the model's prediction just before learning it (the concept drift
        detector's error); ``served``, the score the event was served at stream time
        ``scored_at``, which measures the realized quality and the calibration of the served
        scores (classification).
        """
        signal = self._coverage.update(t, label=True)
        changes = [] if signal is None else self._alerts.follow(self._coverage, signal, t)
        if not (math.isnan(y_true) or math.isnan(y_pred)):
            signal = self._concept.update(y_true, y_pred)
            if signal is not None:
                changes += self._alerts.follow(self._concept, signal, t)
        if self._estimate is not None and served is not None:
            self._estimate.learn(y_true, served, scored_at)
        return changes

    def model_replaced(self, t: float) -> None:
        """Another model serves from stream time ``t`` on: a promotion, a rollback adopted.

        The quality estimate starts over, its reference being the replaced model's. Prediction
        drift needs nothing: it never compares two models. (After a rollback the concept drift
        detector also learns the adopted champion's usual error: :meth:`champion_replaced`.)
        """
        if self._estimate is not None:
            self._estimate.restart(t)

    # -- outputs -------------------------------------------------------------------------

    def restart_clock(self) -> None:
        """Start label coverage over, as on a first event: the stream's clock moved to another
        one (a bootstrap's history ends long before the stream it hands over to), and the
        first windows after the move are short of labels by the label delay."""
        self._coverage = LabelCoverage(self.config)

    def champion_replaced(self) -> None:
        """The champion was replaced by another model (a rollback adopted): its error has another
        usual level, which the concept drift detector learns again (unless an alert is open)."""
        if not self._concept.alarm:
            self._concept = ConceptDrift(self.task, self.config)

    def readings(self) -> list[Reading]:
        """Every detector's current statistic and threshold."""
        self._take()  # a feature's detector exists from the first event that has it
        detectors: list[Detector] = [
            self._concept,
            self._prediction,
            self._coverage,
            *([self._estimate] if self._estimate is not None else []),
            *self._features.values(),
        ]
        return [Reading(d.kind, d.name, d.feature, d.statistic, d.threshold) for d in detectors]

    @property
    def estimate(self) -> PerformanceEstimate | None:
        """The quality estimate of the served scores (classification), ``None`` for a regression."""
        return self._estimate

    def open_alerts(self) -> list[AlertChange]:
        """The latest change of each open alert, oldest alert first."""
        return list(self._alerts.open.values())

    # -- data and prediction drift windows -----------------------------------------------

    def _take(self) -> None:
        """The buffered events' values to their distributions, each in the events' order: a
        number waits in its distribution's ``pending``, a category is counted, a feature first
        seen gets its detector (in the order first seen, unless exempt)."""
        scored = self._scored
        if not scored:
            return
        self._scored = []
        config, features = self.config, self._features
        known: KeysView[str] | None = None
        for x, _ in scored:
            if known is None or x.keys() != known:
                for name in x:
                    if name not in features and name not in config.exempt:
                        features[name] = DistributionDrift("data_drift", name, config)
                known = x.keys()
        for name, distribution in features.items():
            values: list[Any] = [x[name] for x, _ in scored if name in x]
            if any(isinstance(value, str) for value in values):
                for value in values:
                    distribution.add(value)
            else:
                distribution.pending.extend(values)
        self._prediction.pending.extend(float(y) for _, y in scored if not math.isnan(y))

    def _distributions(self) -> list[DistributionDrift]:
        return [self._prediction, *self._features.values()]

    def _close_window(self, t: float, model: Scorer | None) -> list[AlertChange]:
        self._take()
        self._events = 0
        self._windows += 1
        armed = self._windows > self.config.window_warmup
        changes = self._alerts.follow(self._prediction, self._prediction.update(armed, model), t)
        for distribution in self._features.values():
            changes += self._alerts.follow(distribution, distribution.update(armed), t)
        return changes
