"""``scoring bootstrap <use case> <file>``: a labelled history in, a trained live version out.

The file is read and cleaned (:mod:`stream.tools.history`: every row accepted or
quarantined with the stream's reason codes), replayed in event-time order through the
stream's declared features, entity-state updates and learner (:mod:`stream.tools.replay`),
and then, in this order:

1. the entity states at the end of history are written to Redis, so the stream's features
   continue from them;
2. the champion is published as the new live version, with the learner's checkpoint, in
   one atomic step (:meth:`stream.runtime.registry.ModelRegistry.bootstrap`): workers
   load it at their next poll, and a running learner restores the checkpoint and goes on
   learning from the bootstrapped models. Its record carries the lineage: the file (name,
   size, sha256), rows by outcome, time range, the cleaning report, metrics on the last
   20 % of the history, the declaration's fingerprint and the code's version.

A file the live lineage was bootstrapped from already is a no-op. A live lineage that has
learned labels is not started over unless ``force``: a forced bootstrap starts a new
lineage and says so in its record.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np

from models import snapshot
from stream.records import AuditRecord
from stream.redis_client import redis_client
from stream.runtime.learner import version_record
from stream.runtime.registry import ModelRegistry, RegistryError
from stream.runtime.state import StateStore
from stream.settings import Settings
from stream.tools.history import History
from stream.tools.progress import rows_progress
from stream.tools.replay import Replay, processes_for
from stream.tools.report import METRICS, prequential
from stream.usecases import UseCase

EVALUATED_SHARE = 0.2
"""The share of the history, at its end, that the version's metrics describe."""


class BootstrapRefused(RuntimeError):
    """A bootstrap that would start over a lineage that learned labels, without ``force``."""


@dataclass(frozen=True)
class Outcome:
    """What a bootstrap did: ``published`` a version, or nothing (``unchanged``), and why."""

    status: Literal["published", "unchanged"]
    version: str
    lines: list[str]
    audit: AuditRecord | None = None
    """The audit record the registry kept with the version (with an ``actor``), to deliver."""


def file_digest(path: Path) -> tuple[int, str]:
    """The file's size and sha256."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as raw:
        while block := raw.read(1 << 20):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def code_version() -> str:
    """The package's version, and the git commit of a checkout."""
    version = metadata.version("scoring")
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        if commit:
            return f"{version}+{commit}"
    return version


async def _bootstrapped_from(registry: ModelRegistry, live: str | None, sha256: str) -> str | None:
    """The version of the live lineage bootstrapped from the file of ``sha256``, if any."""
    version = live
    while version:
        try:
            record = await registry.record(version)
        except RegistryError:  # pruned: older than every kept version
            return None
        if record.get("reason") == "bootstrap":
            return version if record.get("lineage", {}).get("sha256") == sha256 else None
        version = record.get("parent") or None
    return None


def _tail_metrics(replay: Replay) -> dict[str, Any]:
    """Each role's prequential metric on the labels of the history's last :data:`EVALUATED_SHARE`."""
    labels = replay.labels[int(len(replay.labels) * (1 - EVALUATED_SHARE)) :]
    task = replay.use_case.task
    ys = np.array([label.y for label in labels], dtype=float)
    roles = {
        "champion": np.array([label.champion for label in labels], dtype=float),
        "challenger": np.array(
            [np.nan if label.challenger is None else label.challenger for label in labels]
        ),
        "baseline": np.array([label.baseline for label in labels], dtype=float),
    }
    return {
        "labels": len(labels),
        "since": labels[0].t if labels else None,
        **{
            f"{role}_{METRICS[task]}": prequential(task, ys, predictions)
            for role, predictions in roles.items()
        },
    }


async def bootstrap(
    settings: Settings,
    use_case: UseCase[Any, Any],
    path: Path,
    *,
    force: bool = False,
    out: TextIO | None = None,
    actor: str | None = None,
) -> Outcome:
    """Learn ``use_case`` from the history at ``path`` and publish it live (see the module).

    With an ``actor`` (who runs it), the registry keeps the bootstrap's audit record with the
    version, for the caller to deliver (:attr:`Outcome.audit`,
    :meth:`~stream.runtime.registry.ModelRegistry.deliver_audit`).
    """
    size, sha256 = file_digest(path)
    client = redis_client(settings)
    try:
        registry, store = ModelRegistry(client, settings), StateStore(client, settings)
        live = await registry.live(use_case.name)
        same = await _bootstrapped_from(registry, live, sha256)
        if same is not None and not force:
            return Outcome(
                "unchanged",
                same,
                [
                    f"{use_case.name}: the live lineage was bootstrapped from this file "
                    f"(sha256 {sha256[:12]}…) as {same}: nothing to learn again"
                ],
            )
        learned = (await registry.record(live)).get("learner_labels", 0) if live else 0
        if learned and not force:
            raise BootstrapRefused(
                f"{use_case.name}: the live version {live} has learned {learned} labels; bootstrapping "
                "would start its lineage over: run again with --force to start a new lineage"
            )
        began = time.perf_counter()
        with History(use_case, path) as history:
            with rows_progress(out, f"{use_case.name}: cleaning {path.name}", None) as advance:
                history.on_rows = advance
                report = history.clean()
            # A long history learns in a second process, beside the reading and the features.
            replay = Replay(settings, use_case, processes=processes_for(report.accepted))
            with rows_progress(out, f"{use_case.name}: learning", report.accepted) as advance:
                for batch in history.batches():
                    replay.add_all(batch)
                    advance(len(batch))
        replay.finish(flush=True)
        replay.learner.lifecycle.monitor.restart_clock()  # the stream's time is not the history's
        seconds = time.perf_counter() - began
        written = await store.restore_entities(use_case, replay.entities.items())
        state = replay.learner
        state.position = await store.journal_head(use_case.name) or "0-0"
        record = version_record(settings, use_case, state, "bootstrap")
        record["lineage"] = {
            "file": path.name,
            "size": size,
            "sha256": sha256,
            "rows": report.rows,
            "accepted": report.accepted,
            "rejected": report.rejected,
            "first_ts": report.first_ts.isoformat() if report.first_ts else None,
            "last_ts": report.last_ts.isoformat() if report.last_ts else None,
            "cleaning": report.model_dump(mode="json"),
            "replay": dict(replay.counts),
            f"last_{int(EVALUATED_SHARE * 100)}_percent": _tail_metrics(replay),
            "entities": written,
            "code_version": code_version(),
            "forced": force,
            "replaces": live,
        }
        blob = snapshot.dumps(state, settings.signing_key)
        replaces = f", a new lineage replacing {live}" if force and live else ""
        audit = (
            None
            if actor is None
            else AuditRecord.now(
                "bootstrap",
                actor,
                model=use_case.name,
                target=f"{path} (sha256 {sha256})",
                detail=f"{report.accepted} rows learned (declaration {use_case.fingerprint}){replaces}",
            )
        )
        outcome, version = await registry.bootstrap(
            use_case.name,
            live or "",
            state.lifecycle.champion,
            record,
            blob,
            labels_learned_max=-1 if force else 0,
            audit=audit,
        )
        if outcome != "published":
            raise BootstrapRefused(
                f"{use_case.name}: the live version moved to {version} while bootstrapping "
                f"({outcome}): run again"
            )
        tail = record["lineage"][f"last_{int(EVALUATED_SHARE * 100)}_percent"]
        metric = METRICS[use_case.task]
        return Outcome(
            "published",
            version,
            [
                report.table(),
                f"rejected rows: {history.rejected_path}"
                if sum(report.rejected.values())
                else "no rejected rows",
                f"replayed {report.accepted} rows in {seconds:.1f} s "
                f"({report.accepted / max(seconds, 1e-9):,.0f} rows/s); "
                f"{replay.counts['learned'] + replay.counts['matured']} labels learned, {written} entities",
                f"last {EVALUATED_SHARE:.0%} of the history ({tail['labels']} labels): "
                + ", ".join(
                    f"{role} {metric} {value:.4f}"
                    for role in ("champion", "challenger", "baseline")
                    if (value := tail[f"{role}_{metric}"]) is not None
                ),
                f"published {version} (declaration {use_case.fingerprint}, file sha256 {sha256}){replaces}",
            ],
            audit,
        )
    finally:
        await client.aclose()
