"""What a version must show before it serves, and while it serves: the gate and the watch.

The learner publishes its champion about once a second. Two checks stand between that
champion and the events it would score, both on labels in journal order (so a learner that
restores a checkpoint and replays the journal decides exactly as one that never stopped):

- the **gate** (:class:`Gate`), before a candidate goes live: on every label learned since
  the live version went live, the candidate's test-then-train prediction (made before it
  learns the label) and the live version's prediction (which learns nothing while live) are
  scored with :func:`models.challenger.loss`. Over at least ``min_labels`` such labels, the
  candidate is held when its mean loss is above ``1 + tolerance`` times the live version's
  by more than :data:`HELD_Z` standard errors (the paired excess losses' mean; a candidate
  merely as noisy as the live version passes), else it passes. Until a version has passed
  the gate or was bootstrapped (the release is not yet *trusted*), the champion must also
  have learned ``first_labels`` labels: a model that learned a few hundred labels can pass
  on its evidence and still forecast wildly;
- the **watch** (:class:`Watch`), after: each label of an event served by a version newer
  than the *reference* (the last version confirmed, or bootstrapped, or the first) pairs the
  served prediction's loss with ``1 + tolerance`` times the reference's loss on the same
  features. A mixture sequential probability ratio test (:class:`models.challenger.PairedTest`, always valid:
  it is wrong with probability at most ``alpha`` however long it runs) decides when the
  served versions are worse than the reference: the learner rolls back to it. After
  ``confirm_labels`` labels without that decision, the version live then becomes the
  reference and the test starts over;
- the **canary** (``canary_fraction`` > 0): a candidate that passed the gate first serves
  that fraction of entities while the live version serves the rest. Each label of an event
  the canary served pairs its loss with ``1 + tolerance`` times the live version's loss on
  the same features, in the watch's test (its own instance): worse, the canary is rolled
  back and the champion starts over from the live version (nothing learned from the bad
  lineage is published); after ``canary_labels`` labels without that decision, it is
  promoted to every entity if its mean loss is within the tolerance of the live version's
  on those labels, else rolled back the same way.

Each raises its alerts through :class:`models.drift.Alerts`: ``version_held`` opens when
the gate first holds a candidate, is updated every ``update_every`` held candidates, and
resolves when one passes; ``rollback`` (critical) opens when the watch rolls back and
resolves when a candidate passes the gate after it (with a canary: when one is promoted).
A canary rolled back opens (or updates) the same ``rollback`` alert.

Examples
--------
A candidate that predicts the opposite of the truth is held; one that predicts it is not.

>>> from models.online import OnlineModel
>>> from models.pipelines import CANDIDATES
>>> def model():
...     return OnlineModel("fraud", "classification", CANDIDATES["classification"]["logistic_regression"]())
>>> release = Release("fraud", "classification", model(), "logistic_regression",
...                   ReleaseConfig(min_labels=10, first_labels=0))
>>> def label(n, candidate_pred):
...     y = float(n % 2)
...     release.learned({"x": y}, y, served_version="fraud.0", served_pred=0.5,
...                     candidate_pred=candidate_pred(y), t=float(n))
>>> for n in range(20):
...     _ = label(n, lambda y: 1.0 - y)
>>> verdict, alerts = release.judge(labels_learned=20, t=20.0)
>>> verdict.passed, [(a.kind, a.state) for a in alerts]
(False, [('version_held', 'open')])
>>> release.reset_evidence()
>>> for n in range(20, 40):
...     _ = label(n, lambda y: 0.9 * y + 0.05)
>>> verdict, alerts = release.judge(labels_learned=40, t=40.0)
>>> verdict.passed, [(a.kind, a.state) for a in alerts]
(True, [('version_held', 'resolve')])
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field
from typing import Literal, cast

from models.challenger import PairedTest, loss
from models.drift.alerts import AlertChange, Alerts, Detector, Kind, Signal, State
from models.online import Features, OnlineModel
from models.pipelines import Task

__all__ = [
    "Canary",
    "CanaryOutcome",
    "Gate",
    "Release",
    "ReleaseConfig",
    "Verdict",
    "Watch",
    "version_number",
]

CanaryOutcome = Literal["promoted", "rolled_back"]


def version_number(version: str) -> int:
    """The sequence number of ``<model>.<n>``.

    >>> version_number("fraud.12")
    12
    """
    return int(version.rpartition(".")[2])


def frozen(model: OnlineModel) -> OnlineModel:
    """A copy of ``model`` that its learning no longer changes: a pickle round trip, as a
    snapshot is made, about twice as fast as ``copy.deepcopy`` on a grown Hoeffding tree
    (33 against 62 ms), and a learner makes one each time it publishes."""
    return cast(OnlineModel, pickle.loads(pickle.dumps(model, pickle.HIGHEST_PROTOCOL)))


@dataclass(frozen=True)
class ReleaseConfig:
    """The gate's and the watch's parameters (settings ``SCORING_GATE_*``, ``SCORING_ROLLBACK_*``).

    Parameters
    ----------
    tolerance
        A candidate passes when its mean loss is at most ``1 + tolerance`` times the live
        version's, on the same labels.
    min_labels
        Labels of evidence the gate needs for a decision.
    first_labels
        Labels the champion must have learned before the first version it serves, until a
        version has passed the gate or was bootstrapped.
    update_every
        Held candidates between two updates of an open ``version_held`` alert.
    alpha
        The watch's error rate: the probability that it ever rolls back versions that are not
        worse than the reference (under independent losses).
    watch_min_labels
        Labels the watch needs before it may decide.
    confirm_labels
        Labels after which, undecided, the watch confirms the versions served and starts over
        with the live one as its reference.
    canary_fraction
        Fraction of entities a candidate that passed the gate serves first (0: no canary, it
        serves every entity at once).
    canary_labels
        Labels of events the canary served after which, not found worse, it is promoted.
    """

    tolerance: float = 0.05
    min_labels: int = 200
    first_labels: int = 1000
    update_every: int = 60
    alpha: float = 0.01
    watch_min_labels: int = 100
    confirm_labels: int = 2000
    canary_fraction: float = 0.0
    canary_labels: int = 500

    def __post_init__(self) -> None:
        if self.tolerance < 0:
            raise ValueError("tolerance must be >= 0")
        if min(self.min_labels, self.first_labels, self.watch_min_labels) < 0 or self.update_every < 1:
            raise ValueError("label counts must be >= 0 and update_every >= 1")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError("alpha must be within (0, 1)")
        if not 0.0 <= self.canary_fraction < 1.0:
            raise ValueError("a canary serves a fraction of entities within [0, 1)")
        if self.canary_fraction and self.canary_labels < self.watch_min_labels:
            raise ValueError(
                f"a canary would be promoted after {self.canary_labels} labels, before the test may "
                f"decide ({self.watch_min_labels}): SCORING_CANARY_LABELS must be >= "
                "SCORING_ROLLBACK_MIN_LABELS"
            )
        if self.confirm_labels < self.watch_min_labels:
            raise ValueError(
                f"the watch would confirm versions after {self.confirm_labels} labels, before it may "
                f"decide ({self.watch_min_labels}): SCORING_ROLLBACK_CONFIRM_LABELS must be >= "
                "SCORING_ROLLBACK_MIN_LABELS"
            )


@dataclass(frozen=True)
class Verdict:
    """The gate's decision on a candidate, with its evidence (kept in the version's record).

    ``decision`` is ``passed``, ``held`` (worse than the live version beyond the tolerance)
    or ``waiting`` (too little evidence yet, or too few labels learned for a first version).
    """

    decision: str
    labels: int
    candidate_loss: float
    live_loss: float
    tolerance: float
    live_version: str

    @property
    def passed(self) -> bool:
        return self.decision == "passed"

    @property
    def ratio(self) -> float:
        """The candidate's mean loss over the live version's (``nan`` without evidence)."""
        if self.labels == 0:
            return math.nan
        return self.candidate_loss / self.live_loss if self.live_loss > 0 else math.inf

    def as_record(self) -> dict[str, object]:
        return {
            "decision": self.decision,
            "labels": self.labels,
            "candidate_loss": self.candidate_loss,
            "live_loss": self.live_loss,
            "ratio": None if self.labels == 0 or math.isinf(self.ratio) else self.ratio,
            "tolerance": self.tolerance,
            "against": self.live_version,
        }


HELD_Z = 3.0
"""The gate holds a candidate when its excess loss over ``1 + tolerance`` times the live
version's is this many standard errors above zero (one-sided 0.13 % for one look; the gate
looks about once a second on growing evidence, so its false holds are rarer than a fixed
ratio's, not as rare as that: README gives the measured rate)."""


class Gate(Detector):
    """The candidate against the live version, on the labels since it went live."""

    kind: Kind = "version_held"
    name = "gate"

    def __init__(self, task: Task, config: ReleaseConfig) -> None:
        super().__init__(update_every=config.update_every)
        self.task: Task = task
        self.config = config
        self.threshold = 1.0 + config.tolerance
        self.reset()

    def reset(self) -> None:
        """A new live version: the evidence starts over."""
        self.n = 0
        self._candidate = 0.0
        self._live = 0.0
        self._excess_mean = 0.0  # of the excess loss c - (1 + tolerance) l, and its M2 (Welford)
        self._excess_m2 = 0.0

    def add(self, y: float, candidate_pred: float, live_pred: float) -> None:
        c, live = loss(self.task, y, candidate_pred), loss(self.task, y, live_pred)
        self.n += 1
        self._candidate += c
        self._live += live
        excess = c - self.threshold * live
        delta = excess - self._excess_mean
        self._excess_mean += delta / self.n
        self._excess_m2 += delta * (excess - self._excess_mean)

    @property
    def z(self) -> float:
        """How many standard errors the candidate's mean loss is above ``1 + tolerance`` times the live's."""
        if self.n < 2:
            return 0.0
        se = math.sqrt(self._excess_m2 / (self.n - 1) / self.n)
        return self._excess_mean / se if se > 0 else math.copysign(math.inf, self._excess_mean)

    def judge(self, live_version: str, first_ready: bool) -> tuple[Verdict, Signal | None]:
        n, config = self.n, self.config
        candidate, live = (self._candidate / n, self._live / n) if n else (0.0, 0.0)
        if n < config.min_labels or not first_ready:
            decision = "waiting"
        elif self.z <= HELD_Z:
            decision = "passed"
        else:
            decision = "held"
        verdict = Verdict(decision, n, candidate, live, config.tolerance, live_version)
        if decision == "waiting":
            return verdict, None
        self.statistic = verdict.ratio if n and not math.isinf(verdict.ratio) else 0.0
        state = self._judge(crossed=decision == "held", cleared=decision == "passed")
        if state is None:
            return verdict, None
        detail = (
            f"candidate held: mean loss {candidate:.4g} against {live:.4g} for the live {live_version} "
            f"on {n} labels (tolerance {config.tolerance:.0%})"
            if decision == "held"
            else f"a candidate passed the gate against {live_version} ({candidate:.4g} against {live:.4g})"
        )
        return verdict, Signal(state, f"{n} labels", detail)


class Watch(Detector):
    """The versions served since the reference against it, on their own events' labels."""

    kind: Kind = "rollback"
    name = "mSPRT"
    critical = True

    def __init__(self, task: Task, config: ReleaseConfig) -> None:
        super().__init__()
        self.task: Task = task
        self.config = config
        self.settle_labels = config.confirm_labels
        self.test = PairedTest(alpha=config.alpha, min_labels=config.watch_min_labels)
        self.threshold = self.test.threshold
        self.reset()

    def reset(self) -> None:
        self.test.reset()
        self.served_loss = 0.0  # sums over the labels of the test, for the gauges
        self.reference_loss = 0.0

    def add(self, y: float, served_pred: float, reference_pred: float) -> None:
        # "champion" is the served side: decided means the served versions lose more than the
        # reference by more than the gate's tolerance (a small, real difference is no fault).
        served, reference = loss(self.task, y, served_pred), loss(self.task, y, reference_pred)
        self.served_loss += served
        self.reference_loss += reference
        self.test.update(served, (1.0 + self.config.tolerance) * reference)
        self.statistic = self.test.statistic if self.test.mean_difference > 0 else 0.0

    @property
    def worse(self) -> bool:
        return self.test.decided

    @property
    def confirmed(self) -> bool:
        """Undecided after ``settle_labels`` labels: the served versions are not worse."""
        return not self.test.decided and self.test.n >= self.settle_labels


class Canary(Watch):
    """The canary against the live version, on the labels of the events the canary served;
    ``confirmed``: promote it."""

    name = "canary"

    def __init__(self, task: Task, config: ReleaseConfig) -> None:
        super().__init__(task, config)
        self.settle_labels = config.canary_labels


@dataclass
class Release:
    """The gate, the watch and the canary of one model, and the versions they compare with.

    Parameters
    ----------
    model, task
        The use case and its task.
    live
        The model of the version live when the release starts (the untrained champion).
    live_pipeline
        Its pipeline's name.
    config
        Tolerances and label counts.
    """

    model: str
    task: Task
    live: OnlineModel
    live_pipeline: str
    config: ReleaseConfig = field(default_factory=ReleaseConfig)
    live_version: str = ""
    trusted: bool = False
    """Whether a version passed the gate or was bootstrapped: ``first_labels`` no longer applies."""
    floor: int = -1
    """Versions numbered up to here were rolled back from: the watch ignores what they served."""

    def __post_init__(self) -> None:
        self.live = frozen(self.live)  # frozen: the model it was given goes on learning
        self.live_version = self.live_version or f"{self.model}.0"
        self.reference, self.reference_version = self.live, self.live_version
        self.gate = Gate(self.task, self.config)
        self.watch = Watch(self.task, self.config)
        self.canary = Canary(self.task, self.config)
        self.canary_version: str | None = None
        self.canary_model: OnlineModel | None = None
        self.canary_pipeline = ""
        self.concluded_canary = ""  # the version the last conclusion was about
        self.withdrawn: set[str] = set()  # canaries rolled back: their late labels judge nothing
        self.alerts = Alerts(self.model, critical_ratio=math.inf)  # critical: the rollbacks only
        self.last_verdict: Verdict | None = None
        self.rolled_back: str | None = None  # the version the watch last rolled back to

    # -- labels ------------------------------------------------------------------------

    def learned(
        self,
        x: Features,
        y: float,
        *,
        served_version: str,
        served_pred: float,
        candidate_pred: float,
        t: float,
    ) -> list[AlertChange]:
        """A label, before the champion (the candidate) learns it; ``served_*``: what scored its event.

        Returns the alert changes; :attr:`watch` is ``worse`` when the served versions must
        be rolled back to :attr:`reference_version`, :attr:`canary_outcome` set when the
        canary is decided.
        """
        live_pred = self.live.predict_one(x)
        self.gate.add(y, candidate_pred, live_pred)
        if served_version == self.canary_version:
            return self._judge_canary(y, served_pred, live_pred, t)
        served = _number(served_version)
        if (
            served is None
            or served <= max(self.floor, version_number(self.reference_version))
            or served_version in self.withdrawn
        ):
            return []
        if self.watch.worse:
            return []  # decided: the learner rolls back before the next label
        self.watch.add(y, served_pred, self.reference.predict_one(x))
        if self.watch.worse:
            test = self.watch.test
            return self._rolled_back(
                self.watch,
                f"rolled back to {self.reference_version}: the versions served since lost "
                f"{test.mean_difference:.4g} more per label on {test.n} labels "
                f"(mSPRT, alpha {self.config.alpha})",
                t,
            )
        if self.watch.confirmed:
            self.reference, self.reference_version = self.live, self.live_version
            self.watch.reset()
        return []

    def _judge_canary(self, y: float, served_pred: float, live_pred: float, t: float) -> list[AlertChange]:
        self.canary.add(y, served_pred, live_pred)
        if self.canary_outcome != "rolled_back":
            return []
        test, canary = self.canary.test, self.canary
        why = (
            f"it lost {test.mean_difference:.4g} more per label than {self.live_version} (mSPRT, alpha "
            f"{self.config.alpha})"
            if canary.worse
            else f"its mean loss {canary.served_loss / test.n:.4g} is above {1 + self.config.tolerance:g} "
            f"times {self.live_version}'s {canary.reference_loss / test.n:.4g}"
        )
        return self._rolled_back(
            canary,
            f"canary {self.canary_version} rolled back: on the {test.n} labels of the events it served "
            f"({self.config.canary_fraction:.0%} of entities) {why}",
            t,
        )

    def _rolled_back(self, detector: Watch, detail: str, t: float) -> list[AlertChange]:
        # Open until a candidate passes the gate (is promoted, with a canary); a second rollback
        # before that updates it.
        state: State = "update" if ("rollback", "") in self.alerts.open else "open"
        return self.alerts.follow(detector, Signal(state, f"{detector.test.n} labels", detail), t)

    @property
    def canary_outcome(self) -> CanaryOutcome | None:
        """What the canary's labels decided so far (``None``: nothing yet, or no canary): rolled
        back as soon as the test finds it worse; after ``canary_labels`` labels, promoted if its
        mean loss is at most ``1 + tolerance`` times the live version's, else rolled back."""
        canary = self.canary
        if self.canary_version is None or not (canary.worse or canary.confirmed):
            return None
        if canary.worse or canary.served_loss > (1.0 + self.config.tolerance) * canary.reference_loss:
            return "rolled_back"
        return "promoted"

    # -- versions ----------------------------------------------------------------------

    def judge(self, labels_learned: int, t: float) -> tuple[Verdict, list[AlertChange]]:
        """Whether the champion, having learned ``labels_learned`` labels, may go live now
        (with a canary: may become the canary)."""
        first_ready = self.trusted or labels_learned >= self.config.first_labels
        verdict, signal = self.gate.judge(self.live_version, first_ready)
        self.last_verdict = verdict
        changes = self.alerts.follow(self.gate, signal, t)
        if verdict.passed and not self.config.canary_fraction:
            changes += self._followed_again(f"{verdict.labels} labels", t)
        return verdict, changes

    def _followed_again(self, window: str, t: float) -> list[AlertChange]:
        """A version serves every entity again after a rollback: its alert resolves."""
        if ("rollback", "") not in self.alerts.open:
            return []
        resolved = Signal("resolve", window, f"{self.live_version} is followed again")
        return self.alerts.follow(self.watch, resolved, t)

    def went_live(self, version: str, model: OnlineModel, *, pipeline: str, trusted: bool = False) -> None:
        """``version`` (a frozen copy of ``model``, of ``pipeline``) is live now: published after
        the gate, or bootstrapped (``trusted``)."""
        self.live, self.live_version, self.live_pipeline = frozen(model), version, pipeline
        self.trusted = self.trusted or trusted or (self.last_verdict is not None and self.last_verdict.passed)
        if trusted:
            self.reference, self.reference_version = self.live, version
            self.watch.reset()
        self.reset_evidence()

    def canary_started(self, version: str, model: OnlineModel, *, pipeline: str) -> None:
        """``version`` (a frozen copy of ``model``, of ``pipeline``) serves the canary's entities now."""
        self.canary_version, self.canary_model = version, frozen(model)
        self.canary_pipeline = pipeline
        self.canary.reset()

    def conclude_canary(self, t: float) -> tuple[CanaryOutcome, list[AlertChange]]:
        """End the decided canary: promoted, it is live; rolled back, it is withdrawn (the
        caller starts the champion over from :attr:`live`)."""
        outcome, version, model = self.canary_outcome, self.canary_version, self.canary_model
        assert outcome is not None and version is not None and model is not None, "no canary decided"
        self.canary_version, self.canary_model, self.concluded_canary = None, None, version
        if outcome == "rolled_back":
            self.withdrawn.add(version)
            self.reset_evidence()
            return outcome, []
        self.went_live(version, model, pipeline=self.canary_pipeline, trusted=True)
        return outcome, self._followed_again(f"{self.canary.test.n} canary labels", t)

    def adopted(self, version: str, model: OnlineModel, *, pipeline: str, latest: int) -> None:
        """``version`` (of ``pipeline``) was made live by someone else (a rollback: ours or an
        operator's), when versions up to ``latest`` had been published: they are not watched
        any more, and a canary in flight is gone."""
        self.live, self.live_version, self.live_pipeline = frozen(model), version, pipeline
        self.reference, self.reference_version = self.live, version
        self.floor = max(self.floor, latest)
        self.canary_version, self.canary_model = None, None
        self.watch.reset()
        self.reset_evidence()

    def reset_evidence(self) -> None:
        self.gate.reset()


def _number(version: str) -> int | None:
    try:
        return version_number(version)
    except ValueError:
        return None
