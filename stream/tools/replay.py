"""Replaying a labelled history through the service's own code, offline, in stream time.

:class:`Replay` is what ``scoring bootstrap`` and ``scoring backtest`` share. Events come
in event-time order (``ts``) and stream time is their ``ts``. Each event:

1. makes due whatever its time has reached: labels that arrived (``label_delay`` after
   their event) and, under an implicit label policy, events that matured without one;
2. updates its entity's state and gets its features from the state before it, by the
   declared features (:class:`stream.features.FeatureSet` and
   :class:`stream.features.EntityState`: the updates the stream's Lua script makes);
3. is scored by the served model: the version last published (a copy of the champion
   taken at most every ``publish_seconds`` of stream time, when it learned something),
   or the champion itself when ``publish_seconds`` is ``None``;
4. goes to the learner as a journal entry would (:class:`stream.runtime.learner.LearnerState`):
   the drift monitor sees it, and a label learns it, test-then-train, for champion and
   challenger, with promotions and alerts as in the stream.

A label is the target of its row; under an implicit policy, a row whose target is the
implicit one, or none, is not sent as a label: the event matures into it, and an explicit
label due after its maturity is counted as ``matured_event`` and not learned, as the stream
dead-letters it.

Examples
--------
>>> import datetime as dt
>>> from stream.records import Sale
>>> from stream.settings import Settings
>>> from stream.usecases import DEMAND
>>> replay = Replay(Settings.defaults(), DEMAND, label_delay=60.0)
>>> day = dt.date(2026, 3, 2)
>>> for n in range(3):
...     sale = Sale(event_id=f"s{n}", ts=dt.datetime(2026, 3, 2, n, tzinfo=dt.UTC), store_id="st",
...                 product_id="p", product_name="Milk", category="dairy", price=2.0, sale_date=day)
...     replay.add(sale, 4.0)
>>> replay.finish(flush=True)
>>> replay.counts["learned"], len(replay.labels), replay.entities[entity_key(("st", "p"))].n
(3, 3, 3)
"""

from __future__ import annotations

import heapq
import pickle
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from models.lifecycle import LearnOutcome
from models.online import OnlineModel
from stream.features import EntityState
from stream.runtime.keys import EntityKey, entity_key
from stream.runtime.learner import LearnerState, fresh_state
from stream.runtime.state import JournalEntry, Pending
from stream.settings import Settings
from stream.usecases import IMPLICIT_SOURCE, UseCase

HISTORY_SOURCE = "history"
"""The label source of a label from a history file (the stream's is ``topic/partition/offset``)."""


@dataclass(frozen=True, slots=True)
class LearnedLabel:
    """A label the replay learned: when, its target, and what each role predicted before."""

    t: float
    y: float
    served: float
    champion: float
    challenger: float | None
    baseline: float
    source: str


@dataclass(frozen=True, slots=True)
class AlertChange:
    """An alert's change, in stream time."""

    t: float
    kind: str
    state: str
    feature: str


class Replay:
    """A use case's stream, replayed offline: entity states, learner, versions, alerts.

    Parameters
    ----------
    settings
        The deployment's settings: pipelines and the champion/challenger test.
    use_case
        The use case, with the declaration to replay.
    label_delay
        Seconds of stream time between an event and its label.
    publish_seconds
        Stream seconds between two versions published (``None``: the champion serves
        itself, as in a bootstrap, where nothing is served while it learns).
    on_scored
        Called with each event, its pending record (features, prediction) and its row's
        target, as it is scored: what an offline evaluation compares.
    """

    def __init__(
        self,
        settings: Settings,
        use_case: UseCase[Any, Any],
        *,
        label_delay: float = 0.0,
        publish_seconds: float | None = None,
        on_scored: Callable[[Any, Pending, float | None], None] | None = None,
    ) -> None:
        self.use_case = use_case
        self.features = use_case.features
        self.learner: LearnerState = fresh_state(settings, use_case)
        self.entities: dict[EntityKey, EntityState] = {}
        self._keys: dict[tuple[str, ...], EntityKey] = {}  # an entity's ids -> its key, encoded once
        self._entity = use_case.entity
        self.label_delay = label_delay
        self.publish_seconds = publish_seconds
        self._on_scored = on_scored
        self.labels: list[LearnedLabel] = []
        self.publications: list[tuple[float, str]] = []
        self.alerts: list[AlertChange] = []
        self.counts: Counter[str] = Counter()
        policy = use_case.labels
        self._maturity = policy.maturity_seconds
        self._implicit = policy.implicit_target
        # Due items: (time, order, kind, pending, target). kind: "label" or "mature".
        self._due: list[tuple[float, int, str, Pending, float]] = []
        # Event orders learned (an explicit label or matured): only an event that can both
        # mature and get a label has two due items, of which the second is not learned.
        self._learned: set[int] = set()
        self._both_due = self._maturity is not None and self._implicit is not None
        self._seq = 0
        self._served: OnlineModel | None = None
        self._version = 0
        self._version_name = self.version
        self._published_at = float("-inf")
        self._changed = False
        self._baseline_sum = 0.0

    @property
    def version(self) -> str:
        return f"{self.use_case.name}.{self._version}"

    def add(self, event: Any, target: float | None) -> None:
        """Replay one event (in event-time order) and its row's target (``None``: unlabelled)."""
        t = event.ts.timestamp()
        if self._due and self._due[0][0] <= t:
            self._advance(t)
        ids = self._entity(event)
        key = self._keys.get(ids)
        if key is None:
            key = self._keys[ids] = entity_key(ids)
        state = self.entities.get(key)
        if state is None:
            state = self.entities[key] = EntityState()
        features = self.features
        prior = state.observe(features.observe(event), features.decay)
        x = features.compute(event, prior)
        if self.publish_seconds is not None:
            self._publish_if_due(t)
        y_pred = (self._served or self.learner.lifecycle.champion).predict_one(x)
        pending: Pending = {
            "x": x,
            "y_pred": y_pred,
            "entity": key,
            "model_version": self._version_name,
            "scored_at": t,
        }
        self._learn_entry(JournalEntry(self._entry_id(t), pending))
        self.counts["scored"] += 1
        if self._on_scored is not None:
            self._on_scored(event, pending, target)
        order = self._seq
        implicit = self._implicit is not None and (target is None or target == self._implicit)
        if target is not None and not implicit:
            heapq.heappush(self._due, (t + self.label_delay, order, "label", pending, target))
        if self._maturity is not None and self._implicit is not None:
            heapq.heappush(self._due, (t + self._maturity, order, "mature", pending, self._implicit))
        if target is None and self._implicit is None:
            self.counts["unlabelled"] += 1

    def add_all(self, rows: Iterable[tuple[Any, float | None]]) -> None:
        for event, target in rows:
            self.add(event, target)

    def finish(self, *, flush: bool) -> None:
        """End of history: with ``flush``, learn every label and maturity still due (a
        bootstrap: the file's labels are known today), else leave them unlearned (a backtest:
        nothing is learned past the end of the history)."""
        if flush:
            self._advance(float("inf"))
        self.counts["not_due"] += len(self._due)
        self._due.clear()

    # -- internals -------------------------------------------------------------------------

    def _entry_id(self, t: float) -> str:
        self._seq += 1
        return f"{max(0, int(t * 1000))}-{self._seq}"

    def _advance(self, t: float) -> None:
        """Learn every label and maturity due by ``t``, in due order."""
        due = self._due
        while due and due[0][0] <= t:
            at, order, kind, pending, y = heapq.heappop(due)
            if self._both_due:
                if order in self._learned:
                    if kind == "label":
                        self.counts["matured_event"] += 1  # the stream dead-letters it
                    continue
                self._learned.add(order)
            self._learn_label(at, pending, y, IMPLICIT_SOURCE if kind == "mature" else HISTORY_SOURCE)

    def _learn_label(self, t: float, pending: Pending, y: float, source: str) -> None:
        n = len(self.labels)
        baseline = self._baseline_sum / n if n else 0.0
        entry = JournalEntry(self._entry_id(t), pending, y, source if source == IMPLICIT_SOURCE else None)
        outcome = self._learn_entry(entry)
        self.labels.append(
            LearnedLabel(
                t, y, pending["y_pred"], outcome.champion_pred, outcome.challenger_pred, baseline, source
            )
        )
        self._baseline_sum += y
        self.entities[pending["entity"]].learn(y, self.features.decay)
        self.counts["learned" if source != IMPLICIT_SOURCE else "matured"] += 1
        self._changed = True

    def _learn_entry(self, entry: JournalEntry) -> LearnOutcome:
        outcome = self.learner.apply(entry)
        for change in outcome.alerts:
            self.alerts.append(AlertChange(entry.time, change.kind, change.state, change.feature or ""))
        if outcome.promoted:
            self.alerts.append(AlertChange(entry.time, "promotion", "open", ""))
            self._changed = True
        return outcome

    def _publish_if_due(self, t: float) -> None:
        if self.publish_seconds is None or not self._changed or t - self._published_at < self.publish_seconds:
            return
        champion = self.learner.lifecycle.champion
        self._served = pickle.loads(pickle.dumps(champion, protocol=pickle.HIGHEST_PROTOCOL))
        self._version += 1
        self._version_name = self.version
        self._published_at, self._changed = t, False
        self.publications.append((t, self.version))
