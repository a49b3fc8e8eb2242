"""Replaying a labelled history through the service's own code, offline, in stream time.

:class:`Replay` is what ``scoring bootstrap`` and ``scoring backtest`` share. Events come
in event-time order (``ts``) and stream time is their ``ts``. Each event:

1. makes due whatever its time has reached: labels that arrived (``label_delay`` after
   their event) and, under an implicit label policy, events that matured without one;
2. updates its entity's state and gets its features from the state before it, by the
   declared features (:class:`stream.features.FeatureSet` and
   :class:`stream.features.EntityState`: the updates the stream's Lua script makes);
3. is scored by the served model: the version last published (a copy of the champion
   taken at most every ``publish_seconds`` of stream time, when it learned something) from
   half a worker's poll interval (``poll_seconds``) after its publication, when a worker
   finds it on average; or the champion itself when ``publish_seconds`` is ``None``;
4. goes to the learner as a journal entry would (:class:`stream.runtime.learner.LearnerState`):
   the drift monitor sees it, and a label learns it, test-then-train, for champion and
   challenger, with promotions and alerts as in the stream.

Steps 1 and 2 are the events' side (:class:`Replay`), 3 and 4 the learner's
(:class:`Learning`), as in the stream, where the journal lies between a worker and the
learner. A long replay runs the learner's side in a second process (:func:`processes_for`),
which gets the same entries in the same order and so learns the very same models.

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
import math
import os
import pickle
import signal
import subprocess
import sys
import traceback
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any, overload

from models.lifecycle import LearnOutcome
from models.online import OnlineModel
from models.release import frozen
from stream.features import EntityState, Features
from stream.runtime.keys import EntityKey, entity_key, observed
from stream.runtime.learner import LearnerState, fresh_state
from stream.runtime.pending import Pending
from stream.runtime.served import Served
from stream.runtime.state import JournalEntry
from stream.settings import Settings, code_path
from stream.usecases import IMPLICIT_SOURCE, UseCase

HISTORY_SOURCE = "history"
"""The label source of a label from a history file (the stream's is ``topic/partition/offset``)."""

PARALLEL_MIN_ROWS = 100_000
"""Rows from which a replay learns in a second process (:func:`processes_for`): below, starting
one (about 2 s of imports, run beside the first rows) gains less than it costs."""


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


class LearnedLabels(Sequence[LearnedLabel]):
    """The labels a replay learned, in order: a sequence of :class:`LearnedLabel` held as
    columns (a million labels take about 60 MB, not 250, and pickle as a few buffers).

    Each column is also there as such: ``t``, ``y``, ``served``, ``champion``, ``baseline``
    (arrays of floats), :meth:`challenger` (NaN while the challenger warmed up) and ``source``.
    """

    def __init__(self) -> None:
        self.t = array("d")
        self.y = array("d")
        self.served = array("d")
        self.champion = array("d")
        self._challenger = array("d")
        self._tested = bytearray()  # 1 where the challenger predicted (else its column holds 0)
        self.baseline = array("d")
        self.source: list[str] = []

    def append(
        self,
        t: float,
        y: float,
        served: float,
        champion: float,
        challenger: float | None,
        baseline: float,
        source: str,
    ) -> None:
        self.t.append(t)
        self.y.append(y)
        self.served.append(served)
        self.champion.append(champion)
        self._challenger.append(0.0 if challenger is None else challenger)
        self._tested.append(challenger is not None)
        self.baseline.append(baseline)
        self.source.append(source)

    def challenger(self) -> list[float]:
        """The challenger's predictions, NaN where it had none (its warm-up)."""
        return [c if tested else math.nan for c, tested in zip(self._challenger, self._tested, strict=True)]

    def __len__(self) -> int:
        return len(self.t)

    @overload
    def __getitem__(self, i: int) -> LearnedLabel: ...

    @overload
    def __getitem__(self, i: slice) -> list[LearnedLabel]: ...

    def __getitem__(self, i: int | slice) -> LearnedLabel | list[LearnedLabel]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return LearnedLabel(
            self.t[i],
            self.y[i],
            self.served[i],
            self.champion[i],
            self._challenger[i] if self._tested[i] else None,
            self.baseline[i],
            self.source[i],
        )


@dataclass(frozen=True, slots=True)
class AlertChange:
    """An alert's change, in stream time."""

    t: float
    kind: str
    state: str
    feature: str


class Replay:
    """A use case's stream, replayed offline: entity states, learner, versions, alerts.

    The replay has the stream's two sides. The events' side (this object: entity states,
    features, labels and maturities coming due) hands each scored event and each label due
    to the learner's side (:class:`Learning`: the served model, the learner, versions and
    alerts) in the order the stream's journal would hold them. With ``processes=2`` the
    learner's side runs in a second process, fed in batches, and what it learned comes back
    at :meth:`finish`; the two sides then work at once, on two cores, through the same code.

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
    poll_seconds
        Stream seconds between two polls of the live version by a worker: a version is
        served from ``poll_seconds / 2`` after its publication (0: at once).
    on_scored
        Called with each event, its pending record (features, prediction) and its row's
        target, as it is scored: what an offline evaluation compares. It needs the
        prediction at once, so it needs ``processes=1``.
    processes
        1: both sides in this process. 2: the learner's side in a second one
        (:func:`processes_for` chooses); :attr:`learner`, :attr:`labels`,
        :attr:`publications` and :attr:`alerts` are then known after :meth:`finish`.
    """

    def __init__(
        self,
        settings: Settings,
        use_case: UseCase[Any, Any],
        *,
        label_delay: float = 0.0,
        publish_seconds: float | None = None,
        poll_seconds: float = 0.0,
        on_scored: Callable[[Any, Pending, float | None], None] | None = None,
        processes: int = 1,
    ) -> None:
        if processes not in (1, 2):
            raise ValueError(f"a replay runs in 1 or 2 processes, not {processes}")
        if processes == 2 and on_scored is not None:
            raise ValueError("on_scored needs each prediction as it is made: replay in 1 process")
        self.use_case = use_case
        self.features = use_case.features
        self.entities: dict[EntityKey, EntityState] = {}
        self._keys: dict[tuple[str, ...], EntityKey] = {}  # an entity's ids -> its key, encoded once
        self._entity = use_case.entity
        self._secret = settings.pii_secret  # entities and their sets' values as Redis stores them
        self.label_delay = label_delay
        self.publish_seconds = publish_seconds
        self.poll_seconds = poll_seconds
        self._on_scored = on_scored
        self.counts: Counter[str] = Counter()
        policy = use_case.labels
        self._maturity = policy.maturity_seconds
        self._implicit = policy.implicit_target
        # Due items: (time, order, kind, entity, target). kind: "label" or "mature".
        self._due: list[tuple[float, int, str, EntityKey, float]] = []
        # Event orders learned (an explicit label or matured): only an event that can both
        # mature and get a label has two due items, of which the second is not learned.
        self._learned: set[int] = set()
        self._both_due = self._maturity is not None and self._implicit is not None
        self._order = 0
        self.processes = processes
        learning = Learning(use_case.name, fresh_state(settings, use_case), publish_seconds, poll_seconds)
        self._learning: Learning | LearningProcess = learning if processes == 1 else LearningProcess(learning)
        self._finished: Learning | None = learning if processes == 1 else None

    @classmethod
    def as_deployed(
        cls,
        settings: Settings,
        use_case: UseCase[Any, Any],
        *,
        label_delay: float,
        on_scored: Callable[[Any, Pending, float | None], None] | None = None,
    ) -> Replay:
        """A replay that publishes a version every ``model_publish_seconds`` and serves each
        ``model_poll_seconds`` later, as a deployment with ``settings`` does."""
        return cls(
            settings,
            use_case,
            label_delay=label_delay,
            publish_seconds=settings.model_publish_seconds,
            poll_seconds=settings.model_poll_seconds,
            on_scored=on_scored,
        )

    @property
    def learner(self) -> LearnerState:
        return self._result().learner

    @property
    def labels(self) -> LearnedLabels:
        return self._result().labels

    @property
    def publications(self) -> list[tuple[float, str]]:
        return self._result().publications

    @property
    def alerts(self) -> list[AlertChange]:
        return self._result().alerts

    @property
    def version(self) -> str:
        return self._result().version

    def add(self, event: Any, target: float | None) -> None:
        """Replay one event (in event-time order) and its row's target (``None``: unlabelled)."""
        t = event.ts.timestamp()
        if self._due and self._due[0][0] <= t:
            self._advance(t)
        ids = self._entity(event)
        key = self._keys.get(ids)
        if key is None:
            key = self._keys[ids] = entity_key(ids, self._secret)
        state = self.entities.get(key)
        if state is None:
            state = self.entities[key] = EntityState()
        features = self.features
        prior = state.observe(observed(features, event, self._secret), features.decay)
        x = features.compute(event, prior)
        self.counts["scored"] += 1
        self._order = order = self._order + 1
        implicit = self._implicit is not None and (target is None or target == self._implicit)
        label = target is not None and not implicit
        matures = self._maturity is not None and self._implicit is not None
        pending = self._learning.score(order, x, key, t, label or matures)
        if self._on_scored is not None:
            assert pending is not None  # in this process
            self._on_scored(event, pending, target)
        if label:
            assert target is not None
            heapq.heappush(self._due, (t + self.label_delay, order, "label", key, target))
        if matures:
            assert self._maturity is not None and self._implicit is not None
            heapq.heappush(self._due, (t + self._maturity, order, "mature", key, self._implicit))
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
        self._finished = self._learning.finish()

    # -- internals -------------------------------------------------------------------------

    def _result(self) -> Learning:
        if self._finished is None:
            raise RuntimeError("a replay in 2 processes knows what it learned after finish()")
        return self._finished

    def _advance(self, t: float) -> None:
        """Learn every label and maturity due by ``t``, in due order."""
        due = self._due
        while due and due[0][0] <= t:
            at, order, kind, key, y = heapq.heappop(due)
            if self._both_due:
                if order in self._learned:
                    if kind == "label":
                        self.counts["matured_event"] += 1  # the stream dead-letters it
                    continue
                self._learned.add(order)
            source = IMPLICIT_SOURCE if kind == "mature" else HISTORY_SOURCE
            self._learning.learn(order, at, y, source)
            self.entities[key].learn(y, self.features.decay)
            self.counts["learned" if source != IMPLICIT_SOURCE else "matured"] += 1


def processes_for(rows: int) -> int:
    """How many processes a replay of ``rows`` rows runs in: 2 from :data:`PARALLEL_MIN_ROWS`
    rows on a machine of two cores or more, else 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 2 if rows >= PARALLEL_MIN_ROWS and cores >= 2 else 1


class Learning:
    """The learner's side of a replay: the served model, the learner, versions and alerts.

    It takes the journal's entries as the stream's learner does, in journal order: each
    scored event (:meth:`score`: served, then seen by the learner) and each label coming due
    (:meth:`learn`: learned, test-then-train, by champion and challenger). It pickles: what
    a replay in two processes sends back.
    """

    def __init__(
        self, name: str, learner: LearnerState, publish_seconds: float | None, poll_seconds: float = 0.0
    ) -> None:
        self.name = name
        self.learner = learner
        self.publish_seconds = publish_seconds
        self.poll_seconds = poll_seconds
        self.labels = LearnedLabels()
        self.publications: list[tuple[float, str]] = []
        self.alerts: list[AlertChange] = []
        # By order, the events whose label or maturity is due: the pending record, and how many
        # labels the champion had learned when it served the event itself (-1: a version served it).
        self._pending: dict[int, tuple[Pending, int]] = {}
        self._seq = 0
        self._version = 0
        self.version = f"{name}.0"
        # Served: the version events are scored with (None: the champion serves itself);
        # next: the version published and not yet polled, with the time it will be.
        self._served = None if publish_seconds is None else Served(self.version, self._champion_copy())
        self._next: tuple[float, Served] | None = None
        self._published_at = float("-inf")
        self._changed = False
        self._baseline_sum = 0.0

    def score(self, order: int, x: Features, entity: EntityKey, t: float, due: bool) -> Pending:
        """Serve the event ``order`` (features ``x``) at ``t`` and journal it; keep it if
        a label or its maturity will come ``due``."""
        if self.publish_seconds is not None:
            self._publish_if_due(t)
            if self._next is not None and self._next[0] <= t:
                self._served, self._next = self._next[1], None
        served, learned = self._served, -1
        if served is None:  # the champion serves itself
            lifecycle = self.learner.lifecycle
            model, version, learned = lifecycle.champion, self.version, lifecycle.labels_learned
        else:
            model, version = served.model, served.version
        y_pred = model.predict_one(x)
        pending: Pending = {
            "x": x,
            "y_pred": y_pred,
            "entity": entity,
            "model_version": version,
            "scored_at": t,
        }
        self._learn_entry(JournalEntry(self._entry_id(t), pending))
        if due:
            self._pending[order] = pending, learned
        return pending

    def learn(self, order: int, t: float, y: float, source: str) -> None:
        """Learn the label ``y`` of the event ``order``, joined at ``t`` from ``source``.

        The champion's prediction before it learns is the one it served, when it served the
        event itself and has learned no label since (the champion changes only as a label is
        learned): a bootstrap, whose labels come at once, predicts each row once. Nothing is
        served from a bootstrap's replay (``publish_seconds`` is ``None``): its labels count in
        no served metric, and no gate or watch judges a version on them.
        """
        pending, learned = self._pending.pop(order)
        n = len(self.labels)
        baseline = self._baseline_sum / n if n else 0.0
        entry = JournalEntry(self._entry_id(t), pending, y, source if source == IMPLICIT_SOURCE else None)
        unchanged = learned == self.learner.lifecycle.labels_learned
        outcome = self._learn_entry(
            entry,
            champion_pred=pending["y_pred"] if unchanged else None,
            served=self.publish_seconds is not None,
        )
        self.labels.append(
            t, y, pending["y_pred"], outcome.champion_pred, outcome.challenger_pred, baseline, source
        )
        self._baseline_sum += y
        self._changed = True

    def apply(self, entries: Iterable[tuple[Any, ...]]) -> None:
        """Take a batch of what :class:`LearningProcess` sends: the arguments of :meth:`score`
        (five) and of :meth:`learn` (four), in order."""
        score, learn = self.score, self.learn
        for entry in entries:
            if len(entry) == 5:
                score(*entry)
            else:
                learn(*entry)

    def finish(self) -> Learning:
        """The end of the replay: what is not due by now never will be."""
        self._pending.clear()
        return self

    # -- internals -------------------------------------------------------------------------

    def _entry_id(self, t: float) -> str:
        self._seq += 1
        return f"{max(0, int(t * 1000))}-{self._seq}"

    def _learn_entry(
        self, entry: JournalEntry, *, champion_pred: float | None = None, served: bool = True
    ) -> LearnOutcome:
        outcome = self.learner.apply(entry, champion_pred=champion_pred, served=served)
        for change in outcome.alerts:
            self.alerts.append(AlertChange(entry.time, change.kind, change.state, change.feature or ""))
        if outcome.promoted:
            self.alerts.append(AlertChange(entry.time, "promotion", "open", ""))
            self._changed = True
        if outcome.rollback is not None:
            self._roll_back(entry.time)
        return outcome

    def _publish_if_due(self, t: float) -> None:
        """Publish the champion if it passes the gate, at most every ``publish_seconds``."""
        if self.publish_seconds is None or not self._changed or t - self._published_at < self.publish_seconds:
            return
        lifecycle = self.learner.lifecycle
        verdict, changes = lifecycle.release.judge(lifecycle.labels_learned, t)
        self.alerts += [AlertChange(t, c.kind, c.state, c.feature or "") for c in changes]
        self._published_at = t  # judged now: again in publish_seconds, as the learner does
        if not verdict.passed:
            return
        self._version += 1
        self.version = f"{self.name}.{self._version}"
        published = self._champion_copy()
        lifecycle.release.went_live(self.version, published, pipeline=lifecycle.contest.champion_name)
        self._next = (t + self.poll_seconds / 2, Served(self.version, published))
        self._changed = False
        self.publications.append((t, self.version))

    def _roll_back(self, t: float) -> None:
        """The watch found the versions served since its reference worse: the reference serves
        again from the next poll, and the learner goes on from it, as in the stream."""
        lifecycle = self.learner.lifecycle
        release = lifecycle.release
        reference = frozen(release.reference)
        lifecycle.adopt(reference, lifecycle.contest.champion_name)
        release.adopted(
            release.reference_version,
            reference,
            pipeline=lifecycle.contest.champion_name,
            latest=self._version,
        )
        if self.publish_seconds is not None:
            self._next = (t + self.poll_seconds / 2, Served(release.reference_version, release.reference))
        self._changed = False

    def _champion_copy(self) -> OnlineModel:
        """The champion as published: a snapshot, which its further learning leaves alone."""
        return frozen(self.learner.lifecycle.champion)


BATCH_ENTRIES = 2000
"""Entries a :class:`LearningProcess` sends at a time."""


class LearningProcess:
    """A :class:`Learning` in a second process (``python -c``, importing this module alone):
    the entries go to its standard input, pickled in batches; at :meth:`finish` it sends
    itself back, pickled, on its standard output. Its errors come back with their traceback."""

    def __init__(self, learning: Learning) -> None:
        self._child = subprocess.Popen(
            [sys.executable, "-c", "from stream.tools.replay import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": code_path()},  # the child imports this very code
        )
        assert self._child.stdin is not None and self._child.stdout is not None
        self._to: IO[bytes] = self._child.stdin
        self._from: IO[bytes] = self._child.stdout
        self._entries: list[tuple[Any, ...]] = []
        self._send(learning)

    def score(self, order: int, x: Features, entity: EntityKey, t: float, due: bool) -> None:
        self._entries.append((order, x, entity, t, due))
        if len(self._entries) >= BATCH_ENTRIES:
            self._send(self._entries)
            self._entries = []

    def learn(self, order: int, t: float, y: float, source: str) -> None:
        self._entries.append((order, t, y, source))
        if len(self._entries) >= BATCH_ENTRIES:
            self._send(self._entries)
            self._entries = []

    def finish(self) -> Learning:
        self._send(self._entries)
        self._entries = []
        self._send(None)
        self._to.close()
        try:
            ok, result = pickle.load(self._from)
        except EOFError:
            ok, result = False, "it sent nothing back"
        code = self._child.wait()
        if not ok or code != 0:
            raise RuntimeError(f"the replay's learning process failed (exit code {code}): {result}")
        assert isinstance(result, Learning)
        return result

    def _send(self, what: object) -> None:
        try:
            pickle.dump(what, self._to, protocol=pickle.HIGHEST_PROTOCOL)
            self._to.flush()
        except BrokenPipeError:
            code = self._child.wait()
            raise RuntimeError(f"the replay's learning process stopped (exit code {code})") from None


def serve() -> None:
    """The second process of a replay (:class:`LearningProcess`): a :class:`Learning`, then
    batches of entries, then ``None``, on standard input; itself, learned, on standard output."""
    reply = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to standard error, not into the reply
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # an interrupted replay ends by closing our input
    source = sys.stdin.buffer
    try:
        learning = pickle.load(source)
        while (entries := pickle.load(source)) is not None:
            learning.apply(entries)
        result = pickle.dumps((True, learning.finish()), protocol=pickle.HIGHEST_PROTOCOL)
    except EOFError:
        return  # the replay stopped before its end (it failed, or was interrupted): nothing to send
    except Exception as exc:
        traceback.print_exc()  # on standard error, which is the replay's
        result = pickle.dumps((False, f"{type(exc).__name__}: {exc}"))
    with reply:
        reply.write(result)
