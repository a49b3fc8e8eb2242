"""The learner of a use case: one per deployment, it owns the model's updates.

Every worker runs a learner per use case, each in a learner process (:mod:`stream.runtime.learning`:
learning never holds up the worker's scoring), but only the holder of the use case's lease in
Redis learns; the others wait to take over if it stops renewing it. The leader:

1. reads the use case's journal (:class:`stream.runtime.state.JournalEntry`) in order: scored
   events and joined labels, written by every worker's agents;
2. feeds them to a :class:`models.lifecycle.ModelLifecycle` (champion, challenger,
   drift monitor), and publishes the alerts it raises on ``alerts.drift``;
3. at most every ``model_publish_seconds``, publishes the champion as a new version
   (:class:`stream.runtime.registry.ModelRegistry`), with its checkpoint — the pickled, signed
   lifecycle and the journal position it includes — in the same atomic step, if it passes
   the gate (:mod:`models.release`); a candidate the gate holds is kept as a ``held``
   version once an episode (and at its alert's updates); when no label was learned, or the
   gate did not pass the champion, it only checkpoints. With a canary (``SCORING_CANARY``),
   a candidate that passes goes live for a fraction of entities first, one at a time: the
   label that decides it promotes it or rolls it back, in the same atomic step as the
   checkpoint;
4. rolls the live version back when the watch finds the versions served since its
   reference worse than it, and goes on learning from the reference.

After a crash, the next leader restores the checkpoint and replays the journal from its
position: the journal's order is fixed, so the model it reaches is exactly the one an
uninterrupted learner would have, and no label is learned twice or skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

from river.metrics.base import Metric

from models import snapshot
from models.drift import AlertChange, Kind, MonitorConfig
from models.drift.estimate import METRICS as ESTIMATED_METRICS
from models.lifecycle import LearnOutcome, ModelLifecycle
from models.online import OnlineModel
from models.release import CanaryOutcome, version_number
from stream.records import Alert, AuditAction, AuditRecord
from stream.runtime import metrics
from stream.runtime.registry import (
    DeclarationMismatch,
    ModelRegistry,
    Publish,
    RegistryError,
    audit_message,
    check_declaration,
)
from stream.runtime.retry import ErrorPolicy
from stream.runtime.served import configured_champion, configured_pipeline
from stream.runtime.state import JournalEntry, StateStore, position_ms
from stream.settings import Settings
from stream.usecases import ALERTS_TOPIC, IMPLICIT_SOURCE, UseCase

log = logging.getLogger(__name__)

# Journal entries read at a time, and how long a read waits for the first one.
READ_COUNT = 500
READ_BLOCK_MS = 100
# How often a leading learner refreshes its gauges. Prometheus scrapes seconds apart; done
# at every read, which under a light load holds a few entries, the refresh (the journal's
# head read from Redis among it) took 15 % of the learner's CPU.
METRICS_SECONDS = 1.0


@dataclass
class LearnerState:
    """What a checkpoint holds: the lifecycle and how far into the journal it has read."""

    lifecycle: ModelLifecycle
    declaration: str
    """Fingerprint of the declaration the lifecycle learned under (``Declaration.fingerprint``)."""
    position: str = "0-0"
    """The journal position it includes: an entry's stream id, or one per journal merged
    (several buckets of a Redis Cluster, :meth:`stream.runtime.state.StateStore.read_journal`)."""
    label_offsets: dict[str, int] = field(default_factory=dict)  # "topic/partition" -> offset

    def apply(
        self, entry: JournalEntry, *, champion_pred: float | None = None, served: bool = True
    ) -> LearnOutcome:
        """Feed one journal entry to the lifecycle: what it changed (a scored event: its alerts).

        ``champion_pred`` and ``served``: of a label, as
        :meth:`models.lifecycle.ModelLifecycle.learned` takes them.
        """
        x, y_pred = entry.pending["x"], entry.pending["y_pred"]
        self.position = entry.position
        if entry.y is None:
            return LearnOutcome(self.lifecycle.scored(x, y_pred, entry.time))
        if entry.source is not None and entry.source != IMPLICIT_SOURCE:
            where, _, offset = entry.source.rpartition("/")
            self.label_offsets[where] = max(int(offset), self.label_offsets.get(where, -1))
        return self.lifecycle.learned(
            x,
            y_pred,
            entry.y,
            entry.time,
            entry.pending["model_version"],
            entry.pending.get("scored_at"),
            champion_pred=champion_pred,
            served=served,
        )


def fresh_state(settings: Settings, use_case: UseCase[Any, Any]) -> LearnerState:
    """The state of a learner that has learned nothing, with the configured pipelines."""
    return LearnerState(
        ModelLifecycle(
            use_case.name,
            use_case.task,
            configured_champion(settings, use_case),
            configured_pipeline(settings, use_case, "challengers"),
            alpha=settings.promotion_alpha,
            min_labels=settings.promotion_min_labels,
            drift_exempt=use_case.features.drift_exempt,
            monitor=monitor_config(settings),
            release=settings.release(use_case.name),
        ),
        declaration=use_case.fingerprint,
    )


def monitor_config(settings: Settings) -> MonitorConfig:
    """The drift monitor's configuration: its defaults, and the quality estimate's settings."""
    return MonitorConfig(
        estimate_threshold=settings.estimate_threshold,
        estimate_window=settings.estimate_window,
        estimate_drop=settings.estimate_drop,
    )


class Learner:
    """The learner of one use case in one worker: leader while it holds the lease."""

    def __init__(
        self,
        settings: Settings,
        use_case: UseCase[Any, Any],
        store: StateStore,
        registry: ModelRegistry,
        publish: Publish,
        policy: ErrorPolicy,
    ) -> None:
        self.settings = settings
        self.use_case = use_case
        self.name = use_case.name
        self._store = store
        self._registry = registry
        self._publish = publish
        self._policy = policy
        self._token = uuid.uuid4().hex
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()  # set while no step is running
        self._idle.set()
        self.state: LearnerState | None = None
        self.version = ""
        self._changed = False  # the champion learned or changed since the last publication
        self._published_position = ""
        self._checkpointed_at = time.time()
        self._metrics_due = 0.0  # time.monotonic() of the next refresh of the gauges
        metrics.CHECKPOINT_AGE.labels(self.name).set_function(lambda: time.time() - self._checkpointed_at)
        for outcome in get_args(CanaryOutcome):  # exported at 0: "no canary concluded" is data too
            metrics.CANARY_OUTCOMES.labels(self.name, outcome)

    async def run(self) -> None:
        """Learn while holding the lease, until :meth:`stop`.

        An error never stops the worker's scoring: the learner lets its state go (it may be
        half-way through a step) and, after the error policy's pause, restores its last
        checkpoint and tries again. A Redis or Kafka outage thus ends in a replay, and a
        refused checkpoint or a bug is logged with its traceback at each try until fixed.
        """
        retry = self._policy.retry(f"learner:{self.name}")
        while not self._stopping.is_set():
            try:
                leading = await self._lead()
            except Exception as exc:
                self._follow()
                await self._sleep(retry.failed(exc))
                continue
            retry.succeeded()
            if not leading:
                self._follow()
                await self._sleep(self.settings.learner_lease_seconds / 4)

    async def _lead(self) -> bool:
        """One step if this worker holds the lease; whether it does."""
        if not await self._registry.lease(self.name, self._token):
            return False
        metrics.LEARNER_LEADER.labels(self.name).set(1)
        self._idle.clear()
        try:
            await self.step()
        finally:
            self._idle.set()
        return True

    async def stop(self) -> None:
        """Let the current step finish, checkpoint (if leading) and hand the lease over."""
        self._stopping.set()
        await self._idle.wait()
        if self.state is not None:
            await self._save(force=True)
            await self._registry.release(self.name, self._token)
            log.info("%s: learner checkpointed %s and handed its lease over", self.name, self.version)
            self._follow()

    async def step(self) -> None:
        """Read and learn one slice of the journal; publish or checkpoint when due.

        Alerts are published before the checkpoint that moves past their entries, so a
        crash in between publishes them again (with the same ids), never loses them. Audit
        records the registry keeps undelivered past their actor's grace (it died, or the
        broker did not answer, after its action) are delivered first.
        """
        await self._registry.deliver_audit(self.name, self._publish)
        if self.state is None:
            await self._restore()
        state = self.state
        assert state is not None
        entries = await self._store.read_journal(self.use_case, state.position, READ_COUNT, READ_BLOCK_MS)
        alerts: list[Alert] = []
        for entry in entries:
            outcome = state.apply(entry)
            alerts += [self._alert(change) for change in outcome.alerts]
            self._changed |= entry.y is not None
            if outcome.rollback is not None:
                await self._raise(alerts)
                await self._roll_back(outcome.rollback, outcome.alerts, entry)
                return
            if outcome.canary is not None:
                await self._raise(alerts)
                await self._conclude(outcome.canary, outcome.alerts, entry)
                return
            if outcome.promoted:
                promotion = self._promotion(entry)
                await self._raise([*alerts, *promotion])
                alerts = []
                contest = state.lifecycle.contest
                before, after = contest.challenger_name, contest.champion_name
                audit = self._audit_record(
                    entry,
                    "promotion",
                    "learner",
                    after,
                    before=before,
                    after=after,
                    detail=promotion[0].detail,
                )
                await self._publish([audit_message(self.settings, audit)])
                await self._save(force=True, reason="promotion")
                if self.state is None:
                    return  # the lease or the live version moved: the next step restores
        await self._raise(alerts)
        await self._save()
        if self.state is not None and time.monotonic() >= self._metrics_due:
            self._metrics_due = time.monotonic() + METRICS_SECONDS
            await self._export_metrics()

    # Checkpoints and publications --------------------------------------------------------

    async def _restore(self) -> None:
        checkpoint = await self._registry.last_checkpoint(self.name)
        if checkpoint is None:
            self.state = fresh_state(self.settings, self.use_case)
            live = await self._registry.live(self.name)
            self.version = live or ""  # the parent of its next version (none in a Redis that lost its data)
            if live is None:
                await self._save(force=True, reason="bootstrap")
            else:
                await self._adopt_live()
            log.info("%s: learner starts from scratch at %s", self.name, self.version)
            return
        # A refused checkpoint raises SnapshotError: learning stops with that error rather
        # than unpickle bytes it cannot vouch for, or silently start over.
        state = snapshot.loads(checkpoint.state, self.settings.signing_key)
        if not isinstance(state, LearnerState):
            raise snapshot.SnapshotError(f"{self.name}: checkpoint holds a {type(state).__name__}")
        if state.declaration != self.use_case.fingerprint:
            raise DeclarationMismatch(
                self.name, "the learner's checkpoint", state.declaration, self.use_case.fingerprint
            )
        self.state, self.version = state, checkpoint.version
        release = state.lifecycle.release
        if release.live_version != checkpoint.version:
            # The checkpoint was written with its version, which the state inside could not
            # name yet: a publication of ours (gated), or a bootstrap (the watch's reference).
            try:
                bootstrapped = (await self._registry.record(checkpoint.version)).get("reason") == "bootstrap"
            except RegistryError:  # pruned: not the bootstrap, kept as live or recent
                bootstrapped = False
            release.went_live(
                checkpoint.version,
                state.lifecycle.champion,
                pipeline=state.lifecycle.contest.champion_name,
                trusted=bootstrapped,
            )
        if checkpoint.canary is not None and release.canary_version != checkpoint.canary:
            # Likewise a canary's checkpoint: the state was pickled before the version had a name.
            release.canary_started(
                checkpoint.canary, state.lifecycle.champion, pipeline=state.lifecycle.contest.champion_name
            )
        self._published_position = state.position
        metrics.PUBLISHED_VERSION.labels(self.name).set(version_number(self.version))
        log.info("%s: learner restored %s at journal %s", self.name, self.version, state.position)
        if await self._registry.live(self.name) != checkpoint.version:
            await self._adopt_live()

    async def _adopt_live(self) -> None:
        """Take the live version (a rollback) as the champion and go on learning from it."""
        live = await self._registry.live(self.name)
        assert self.state is not None and live is not None
        model = await self._registry.load(live)
        record = await self._registry.record(live)
        check_declaration(self.use_case, live, record)
        self.state.lifecycle.adopt(model, record["pipeline"])
        self.state.lifecycle.release.adopted(
            live, model, pipeline=record["pipeline"], latest=await self._registry.latest(self.name)
        )
        log.warning("%s: learner adopts %s (was %s)", self.name, live, self.version)
        self.version = live
        self._changed = False
        await self._save(force=True)

    async def _save(self, *, force: bool = False, reason: str = "learned") -> None:
        """Publish a version (if the champion changed) or checkpoint, when due or forced."""
        state = self.state
        assert state is not None
        now = time.time()
        if not force and now - self._checkpointed_at < self.settings.model_publish_seconds:
            return
        if not force and state.position == self._published_position:
            self._checkpointed_at = now  # nothing new: the last checkpoint is current
            return
        release = state.lifecycle.release
        gated = reason != "bootstrap" and self._changed  # the first, untrained version is not judged
        passed = True
        if gated:
            verdict, changes = release.judge(
                state.lifecycle.labels_learned, position_ms(state.position) / 1000
            )
            await self._raise([self._alert(change) for change in changes])
            passed = verdict.passed
            metrics.GATE_DECISIONS.labels(self.name, verdict.decision).inc()
            if verdict.labels:
                metrics.GATE_LOSS_RATIO.labels(self.name).set(verdict.ratio)
            if verdict.decision == "held" and changes:  # once an episode, and at its alert's updates
                await self._hold(state, verdict.as_record())
                if self.state is None:
                    return
        blob = snapshot.dumps(state, self.settings.signing_key)
        champion, pipeline = state.lifecycle.champion, state.lifecycle.contest.champion_name
        canary = reason != "bootstrap" and release.config.canary_fraction > 0
        if canary and passed and release.canary_version is not None:
            passed = False  # one canary at a time: the champion is judged again after it
        if (self._changed and passed) or reason == "bootstrap":
            record = version_record(self.settings, self.use_case, state, reason)
            if canary:
                record["canary_fraction"] = release.config.canary_fraction  # the workers' split
                outcome, version = await self._registry.canary(
                    self.name, self._token, self.version, champion, record, blob
                )
            else:
                outcome, version = await self._registry.publish(
                    self.name, self._token, self.version, champion, record, blob
                )
            if outcome == "canary":
                release.canary_started(version, champion, pipeline=pipeline)
                metrics.PUBLICATIONS.labels(self.name, "canary").inc()
                log.info(
                    "%s: %s serves %.0f%% of entities as canary",
                    self.name,
                    version,
                    100 * release.config.canary_fraction,
                )
                version = self.version  # the live version, which the checkpoint goes with
            elif outcome == "published":
                release.went_live(version, champion, pipeline=pipeline)
                metrics.PUBLICATIONS.labels(self.name, reason).inc()
                metrics.PUBLISHED_VERSION.labels(self.name).set(version_number(version))
                log.info("%s: published %s (%s)", self.name, version, reason)
        else:
            outcome, version = await self._registry.checkpoint(self.name, self._token, self.version, blob)
        if outcome == "conflict":
            # The live version moved (a rollback, a bootstrap): start again from the
            # checkpoint, which adopts the live version or is the bootstrapped state.
            log.warning("%s: live version is now %s; the learner restores its checkpoint", self.name, version)
            self._follow()
        elif outcome == "lost_lease":
            log.warning("%s: learner lost its lease to another worker", self.name)
            self._follow()
        else:
            self._changed = self._changed and not passed  # a held or waiting champion is judged again
            self.version = version
            self._published_position = state.position
            self._checkpointed_at = now
            await self._trim()

    async def _hold(self, state: LearnerState, verdict: dict[str, Any]) -> None:
        """Keep the candidate the gate held as a ``held`` version (never live)."""
        record = version_record(self.settings, self.use_case, state, "held")
        outcome, version = await self._registry.hold(
            self.name, self._token, self.version, state.lifecycle.champion, record
        )
        if outcome == "held":
            log.warning("%s: gate held candidate %s: %s", self.name, version, verdict)
        else:
            log.warning("%s: cannot record the held candidate (%s); the learner restores", self.name, outcome)
            self._follow()

    async def _roll_back(self, target: str, changes: Sequence[AlertChange], entry: JournalEntry) -> None:
        """The watch found the versions served since ``target`` worse: make it live, learn on from it."""
        detail = next((c.detail for c in changes if c.kind == "rollback"), "")
        try:
            audit = self._audit_record(entry, "rollback", "watch", target, detail=detail)
            previous = await self._registry.rollback(target, by="watch", reason=detail, audit=audit)
        except RegistryError as exc:  # the reference was pruned: watch the live version instead
            log.error("%s: cannot roll back to %s (%s); the watch starts over", self.name, target, exc)
            assert self.state is not None
            release = self.state.lifecycle.release
            release.adopted(
                release.live_version,
                release.live,
                pipeline=release.live_pipeline,
                latest=await self._registry.latest(self.name),
            )
            return
        metrics.ROLLBACKS.labels(self.name).inc()
        log.error("%s: rolled back from %s to %s: %s", self.name, previous, target, detail)
        await self._registry.deliver_audit(self.name, self._publish, audit)
        await self._adopt_live()

    async def _conclude(
        self, outcome: CanaryOutcome, changes: Sequence[AlertChange], entry: JournalEntry
    ) -> None:
        """The canary was decided (the lifecycle has concluded it): make that the registry's state."""
        assert self.state is not None
        release = self.state.lifecycle.release
        canary = release.concluded_canary
        detail = next((c.detail for c in changes if c.kind == "rollback"), "") or (
            f"promoted after {release.canary.test.n} labels of the events it served, not worse than "
            f"{self.version} (mSPRT, alpha {release.config.alpha})"
        )
        blob = snapshot.dumps(self.state, self.settings.signing_key)
        promote = outcome == "promoted"
        audit = self._audit_record(entry, "canary", "canary", canary, detail=f"{outcome}: {detail}")
        result, live = await self._registry.conclude(
            self.name,
            self._token,
            self.version,
            canary,
            promote=promote,
            reason=detail,
            state=blob,
            audit=audit,
        )
        if result != outcome:
            log.warning(
                "%s: cannot conclude canary %s (%s, live %s); the learner restores",
                self.name,
                canary,
                result,
                live,
            )
            self._follow()
            return
        metrics.CANARY_OUTCOMES.labels(self.name, outcome).inc()
        (log.info if promote else log.error)("%s: canary %s %s: %s", self.name, canary, outcome, detail)
        await self._registry.deliver_audit(self.name, self._publish, audit)
        self.version = live
        metrics.PUBLISHED_VERSION.labels(self.name).set(version_number(live))
        self._published_position = self.state.position
        self._checkpointed_at = time.time()
        self._changed = promote  # rolled back, the champion starts over from the live version: nothing new

    async def _trim(self) -> None:
        assert self.state is not None
        if self.state.position != "0-0":
            kept_since = position_ms(self.state.position) / 1000 - self.settings.journal_retention_seconds
            await self._store.trim_journal(self.name, kept_since)

    def _follow(self) -> None:
        """Not the leader (any more): forget the state, the next leadership restores it."""
        metrics.LEARNER_LEADER.labels(self.name).set(0)
        self.state = None

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # Alerts and metrics ---------------------------------------------------------------

    def _alert(self, change: AlertChange) -> Alert:
        log.warning(
            "alert %s: %s %s %s (%s %.4g, threshold %.4g): %s",
            change.state,
            self.name,
            change.kind,
            change.feature or "",
            change.detector,
            change.statistic,
            change.threshold,
            change.detail,
        )
        return Alert(
            id=change.id,
            state=change.state,
            kind=change.kind,
            model=self.name,
            model_version=self.version,
            feature=change.feature,
            detector=change.detector,
            statistic=change.statistic,
            threshold=change.threshold,
            severity=change.severity,
            window=change.window,
            first_seen=_utc(change.first_seen),
            at=_utc(change.at),
            detail=change.detail,
        )

    def _promotion(self, entry: JournalEntry) -> list[Alert]:
        """A promotion is an event, not a condition: its alert opens and resolves at once."""
        assert self.state is not None
        contest = self.state.lifecycle.contest
        test = contest.last_decision
        assert test is not None
        detail = (
            f"{contest.champion_name} replaces {contest.challenger_name} as champion after "
            f"{test.n} paired labels (mean loss difference {test.mean_difference:.4g})"
        )
        log.warning("%s: %s", self.name, detail)
        opened = Alert(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"scoring/{self.name}/promotion/{entry.id}")),
            state="open",
            kind="promotion",
            model=self.name,
            model_version=self.version,
            detector="mSPRT",
            statistic=test.statistic,
            threshold=test.threshold,
            severity="info",
            window=f"{test.n} labels",
            first_seen=_utc(entry.time),
            at=_utc(entry.time),
            detail=detail,
        )
        return [opened, opened.model_copy(update={"state": "resolve"})]

    def _audit_record(
        self,
        entry: JournalEntry,
        action: AuditAction,
        actor: str,
        target: str,
        *,
        before: str | None = None,
        after: str | None = None,
        detail: str,
    ) -> AuditRecord:
        """The record of what the learner did, as of the journal ``entry`` that decided it: its id
        and time from the entry, so that a learner replaying its journal makes the same one.
        A registry call that keeps it (a rollback, a canary's outcome) sets ``before`` and
        ``after``; a promotion's are the champion's pipelines, published before the checkpoint
        that moves past ``entry`` (a crash in between publishes it again)."""
        return AuditRecord(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"scoring/{self.name}/audit/{action}/{entry.id}")),
            action=action,
            actor=actor,
            at=_utc(entry.time),
            model=self.name,
            target=target,
            before=before,
            after=after,
            detail=detail,
        )

    async def _raise(self, alerts: Sequence[Alert]) -> None:
        if not alerts:
            return
        topic = self.settings.topic(ALERTS_TOPIC)
        await self._publish([(topic, alert.id.encode(), alert.to_json()) for alert in alerts])
        for alert in alerts:
            metrics.ALERT_CHANGES.labels(self.name, alert.kind, alert.state).inc()

    async def _export_metrics(self) -> None:
        assert self.state is not None
        lifecycle, name = self.state.lifecycle, self.name
        contest = lifecycle.contest
        metrics.LEARNER_LABELS.labels(name).set(lifecycle.labels_learned)
        for role, pipeline, model, metric in _roles(lifecycle):
            value = math.nan if metric is None else metric.get()
            metrics.PREQUENTIAL.labels(name, role, pipeline, _metric_name(lifecycle)).set(value)
            if role != "served":
                metrics.LABELS_LEARNED.labels(name, role).set(model.labels_learned)
        if contest.challenger_name is not None:
            metrics.PROMOTION_STATISTIC.labels(name, contest.challenger_name).set(contest.test.statistic)
        open_by_kind = dict.fromkeys(get_args(Kind), 0)
        for alert in [*lifecycle.monitor.open_alerts(), *lifecycle.release.alerts.open.values()]:
            open_by_kind[alert.kind] += 1
        watch = lifecycle.release.watch
        metrics.WATCH_STATISTIC.labels(name).set(watch.statistic)
        metrics.WATCH_THRESHOLD.labels(name).set(watch.threshold)
        canary = lifecycle.release.canary
        serving, n = lifecycle.release.canary_version is not None, canary.test.n
        metrics.CANARY_STATISTIC.labels(name).set(canary.statistic if serving else 0.0)
        metrics.CANARY_LOSS.labels(name, "canary").set(canary.served_loss / n if serving and n else math.nan)
        metrics.CANARY_LOSS.labels(name, "live").set(canary.reference_loss / n if serving and n else math.nan)
        for kind, count in open_by_kind.items():
            metrics.OPEN_ALERTS.labels(name, kind).set(count)
        estimate = lifecycle.monitor.estimate
        if estimate is not None:
            for what in ESTIMATED_METRICS:
                metrics.ESTIMATED.labels(name, what).set(estimate.estimated.get(what, math.nan))
                metrics.REALIZED.labels(name, what).set(estimate.realized.get(what, math.nan))
            metrics.CALIBRATION_ERROR.labels(name).set(estimate.calibration_error)
            metrics.ESTIMATE_VALID.labels(name).set(int(estimate.valid))
        for reading in lifecycle.monitor.readings():
            labels = (name, reading.kind, reading.detector, reading.feature)
            metrics.DRIFT_STATISTIC.labels(*labels).set(reading.statistic)
            metrics.DRIFT_THRESHOLD.labels(*labels).set(reading.threshold)
        head = await self._store.journal_head(name)
        if head is not None and self.state.position != "0-0":
            lag = (position_ms(head) - position_ms(self.state.position)) / 1000
            metrics.LEARNER_LAG.labels(name).set(max(0.0, lag))


def version_record(
    settings: Settings, use_case: UseCase[Any, Any], state: LearnerState, reason: str
) -> dict[str, Any]:
    """The registry record of the version a learner in ``state`` publishes, for ``reason``."""
    lifecycle, contest = state.lifecycle, state.lifecycle.contest
    estimate = lifecycle.monitor.estimate
    estimated = {f"estimated_{k}": v for k, v in estimate.estimated.items()} if estimate else {}
    return {
        "model": use_case.name,
        "reason": reason,
        "declaration": use_case.fingerprint,
        "pipeline": contest.champion_name,
        "challenger": contest.challenger_name,
        "labels_learned": lifecycle.champion.labels_learned,
        "learner_labels": lifecycle.labels_learned,
        "metrics": {
            **{
                f"{role}_{_metric_name(lifecycle)}": float(metric.get())
                for role, _, _, metric in _roles(lifecycle)
                if metric is not None
            },
            **estimated,
        },
        "estimate": estimate.as_record() if estimate else None,
        "served_windows": lifecycle.served_windows(),
        "open_alerts": [
            {"kind": a.kind, "feature": a.feature, "severity": a.severity, "since": a.first_seen}
            for a in [*lifecycle.monitor.open_alerts(), *lifecycle.release.alerts.open.values()]
        ],
        "gate": lifecycle.release.last_verdict.as_record() if lifecycle.release.last_verdict else None,
        "watch": {
            "reference": lifecycle.release.reference_version,
            "labels": lifecycle.release.watch.test.n,
            "statistic": lifecycle.release.watch.statistic,
        },
        "journal_position": state.position,
        "label_offsets": state.label_offsets,
        "config": {
            "champion": repr(lifecycle.champion.estimator),
            "promotion_min_labels": settings.promotion_min_labels,
            "promotion_alpha": settings.promotion_alpha,
            "release": dataclasses.asdict(settings.release(use_case.name)),
        },
    }


def _roles(lifecycle: ModelLifecycle) -> list[tuple[str, str, OnlineModel, Metric | None]]:
    """(role, pipeline, model, prequential metric): served (once a label of a served event was
    learned: a bootstrap serves nothing), champion and challenger (if any). The champion's and
    the challenger's metric is ``None`` until the contest has judged a label since it last
    started over (during the challenger's warm-up, say): a metric of nothing is no score."""
    contest = lifecycle.contest
    judged = contest.test.n > 0
    roles: list[tuple[str, str, OnlineModel, Metric | None]] = []
    if lifecycle.recent_served:
        roles.append(("served", contest.champion_name, contest.champion, lifecycle.served_metric))
    roles.append(
        ("champion", contest.champion_name, contest.champion, contest.champion_metric if judged else None)
    )
    if contest.challenger is not None and contest.challenger_name is not None:
        challenger_metric = contest.challenger_metric if judged else None
        roles.append(("challenger", contest.challenger_name, contest.challenger, challenger_metric))
    return roles


def _metric_name(lifecycle: ModelLifecycle) -> str:
    """The name of the use case's prequential metric (``ROCAUC``, ``MAE``)."""
    return type(lifecycle.served_metric).__name__


def _utc(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.UTC)
