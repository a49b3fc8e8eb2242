"""Everything a learner keeps about one use case: its models, their contest, their monitor.

:class:`ModelLifecycle` takes the journal's two kinds of entries, in journal order:

- :meth:`~ModelLifecycle.scored`: an event's features and the prediction served for it,
  which feed the data drift detectors, the quality estimate (classification) and the
  prediction drift detector, which keeps a sample of the events for the champion to score,
  the window's and its reference's alike, when a window closes (:mod:`models.drift.reference`);
- :meth:`~ModelLifecycle.learned`: a label joined to those features and that prediction,
  which feeds the served prediction's prequential metric, the concept drift detector (on
  the champion's error just before it learns the label), the served scores' realized
  quality and calibration, the release's gate and watch (:class:`models.release.Release`:
  the champion as the candidate against the live version, the versions served against
  their reference, a canary against the live version), then the champion/challenger
  contest, which learns it (the champion predicts it once, for all of them).

A canary decided by a label is concluded at that label (:meth:`models.release.Release.conclude_canary`):
promoted, it is the live version; rolled back, the champion starts over from the live version,
so nothing learned after the bad candidate is published.

A promotion or an adopted rollback tells the monitor that another model serves
(:meth:`models.drift.Monitor.model_replaced`): nothing the service does to its own models
is alerted as drift.

It is pure and deterministic (times are stream times, never the clock), so a learner that
restores a pickled lifecycle and replays the journal from there reaches exactly the state
of one that never stopped.

Examples
--------
>>> from models.pipelines import linear_regression, hoeffding_tree_regressor
>>> lifecycle = ModelLifecycle(
...     "demand", "regression", ("linear_regression", linear_regression),
...     ("hoeffding_tree", hoeffding_tree_regressor))
>>> x = {"log_price": 1.0, "dow": "sat"}
>>> lifecycle.scored(x, 0.0, t=1000.0)
[]
>>> outcome = lifecycle.learned(x, 0.0, 3.0, t=1002.0, served_version="demand.0")
>>> outcome.promoted, outcome.rollback, outcome.canary, lifecycle.labels_learned
(False, None, None, 1)

"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from river import base

from models.challenger import Contest
from models.drift import AlertChange, Monitor, MonitorConfig
from models.online import Features, OnlineModel, new_metric
from models.pipelines import Task
from models.release import CanaryOutcome, Release, ReleaseConfig, frozen

__all__ = ["LearnOutcome", "ModelLifecycle", "Pipeline"]

WINDOW = 500
"""Labels in the first and the latest windows of the served metric a version's record keeps."""

Pipeline = tuple[str, Callable[[], base.Estimator]]
"""A pipeline's name and its factory of fresh, untrained estimators."""


@dataclass(frozen=True)
class LearnOutcome:
    """What learning one label changed: alerts, whether the challenger was promoted, what
    the champion and the challenger (``None`` while it warms up) predicted before learning
    it, the version the watch rolls back to (``None``: none), and the canary this label
    concluded (``None``: none)."""

    alerts: list[AlertChange] = field(default_factory=list)
    promoted: bool = False
    champion_pred: float = 0.0
    challenger_pred: float | None = None
    rollback: str | None = None
    canary: CanaryOutcome | None = None


class ModelLifecycle:
    """Champion, challenger and monitor of one use case, fed by its journal.

    Parameters
    ----------
    name, task
        The use case and its learning task.
    champion
        The pipeline served at first.
    challenger
        The pipeline learning in shadow, or ``None``. It restarts from scratch when a
        concept drift alert opens, so the system re-learns instead of waiting.
    alpha, min_labels
        Of the champion/challenger test (:class:`models.challenger.PairedTest`).
    warmup
        Labels a (re)started challenger learns before the test counts its losses: a fresh
        model is bad at first, and judging it then only delays a fair comparison.
    drift_exempt
        Input features the drift monitor does not watch for data drift
        (:attr:`models.drift.MonitorConfig.exempt`): those the use case declares.
    monitor
        The drift monitor's configuration (:class:`models.drift.MonitorConfig` defaults
        when ``None``); ``drift_exempt`` is added to its exempt features.
    release
        The gate's and the watch's parameters (:class:`models.release.ReleaseConfig`).

    """

    def __init__(
        self,
        name: str,
        task: Task,
        champion: Pipeline,
        challenger: Pipeline | None,
        *,
        alpha: float = 0.01,
        min_labels: int = 1000,
        warmup: int = 1000,
        drift_exempt: frozenset[str] = frozenset(),
        monitor: MonitorConfig | None = None,
        release: ReleaseConfig | None = None,
    ) -> None:
        self.name = name
        self.task = task
        self._challenger = challenger
        self.contest = Contest(
            OnlineModel(name, task, champion[1]()),
            champion[0],
            OnlineModel(name, task, challenger[1]()) if challenger else None,
            challenger[0] if challenger else None,
            alpha=alpha,
            min_labels=min_labels,
            warmup=warmup,
        )
        config = monitor or MonitorConfig()
        self.monitor = Monitor(name, task, replace(config, exempt=config.exempt | drift_exempt))
        self.release = Release(name, task, self.contest.champion, champion[0], release or ReleaseConfig())
        self.served_metric = new_metric(task)
        self.labels_learned = 0
        # The served metric's first and latest WINDOW labels, for the model cards.
        self.first_served = new_metric(task)
        self.recent_served: deque[tuple[float, float]] = deque(maxlen=WINDOW)

    @property
    def champion(self) -> OnlineModel:
        return self.contest.champion

    def scored(self, x: Features, y_pred: float, t: float) -> list[AlertChange]:
        """An event was scored with features ``x`` and served ``y_pred`` at stream time ``t``."""
        return self.monitor.scored(x, y_pred, t, self.champion)

    def learned(
        self,
        x: Features,
        y_pred: float,
        y: float,
        t: float,
        served_version: str,
        scored_at: float | None = None,
        *,
        champion_pred: float | None = None,
        served: bool = True,
    ) -> LearnOutcome:
        """The label ``y`` of an event scored with ``x`` and served ``y_pred`` by
        ``served_version`` (at stream time ``scored_at``) is joined at ``t``.

        ``champion_pred`` is the champion's prediction of ``x``, when the caller knows it
        (the champion served the event and has learned nothing since): it is made here
        otherwise. ``served=False`` while no version serves (a bootstrap's replay, where the
        champion predicts the history it learns): the served metric does not count the label,
        and the release's gate and watch, with no version to judge, keep no evidence of it.
        """
        if served:
            self.served_metric.update(y, y_pred)
            if len(self.recent_served) < WINDOW:  # the first WINDOW labels served
                self.first_served.update(y, y_pred)
            self.recent_served.append((y, y_pred))
        # Concept drift is judged on the champion's own test-then-train error, not on the
        # served prediction: that one also carries the publication lag (a burst of fraud
        # scored before its first label arrived), which is no change of concept.
        before = self.champion.predict_one(x) if champion_pred is None else champion_pred
        alerts = self.monitor.learned(y, before, t, served=y_pred, scored_at=scored_at)
        if served:
            alerts += self.release.learned(
                x, y, served_version=served_version, served_pred=y_pred, candidate_pred=before, t=t
            )
        if self._challenger and any(a.kind == "concept_drift" and a.state == "open" for a in alerts):
            self.contest.restart_challenger(self._challenger[1], self._challenger[0])
        canary = None
        if self.release.canary_outcome is not None:
            canary, changes = self.release.conclude_canary(t)
            alerts += changes
            if canary == "rolled_back":  # the champion descends from the bad canary
                self.adopt(frozen(self.release.live), self.release.live_pipeline, t)
                before = self.champion.predict_one(x)
        promoted = self.contest.learn(x, y, before)
        if promoted:
            self.monitor.model_replaced(t)
        self.labels_learned += 1
        rollback = self.release.reference_version if self.release.watch.worse else None
        return LearnOutcome(alerts, promoted, before, self.contest.last_challenger_pred, rollback, canary)

    def served_windows(self) -> dict[str, float | None]:
        """The served metric over the first and the latest :data:`WINDOW` labels (``None``: none yet)."""
        last = new_metric(self.task)
        for y, y_pred in self.recent_served:
            last.update(y, y_pred)
        return {
            "first": float(self.first_served.get()) if self.recent_served else None,
            "last": float(last.get()) if self.recent_served else None,
            "window": WINDOW,
        }

    def adopt(self, champion: OnlineModel, pipeline: str, t: float | None = None) -> None:
        """Serve ``champion`` (of ``pipeline``) from stream time ``t`` on, after a rollback: the
        test starts over, the concept drift detector learns the new champion's usual error, and
        the quality estimate starts over (from its next scores if ``t`` is ``None``)."""
        self.contest.adopt(champion, pipeline)
        self.monitor.champion_replaced()
        self.monitor.model_replaced(-math.inf if t is None else t)
