"""Model cards: what a version is, what it learned from, why it went live (or did not).

A card is a view of the registry, which stays the source of truth: the version's record,
its lineage back to the bootstrap (or the first version) that started it, the rollbacks
and the canary outcome that name it, and the use case's declaration when the version was trained under it. It
is built by :func:`card` as plain data (``--format json``, and the API's ``GET``) and
rendered by :func:`markdown` (``--format md``).

Examples
--------
>>> from stream.usecases import DEMAND
>>> record = {"version": "demand.3", "model": "demand", "reason": "learned", "parent": "demand.2",
...           "declaration": DEMAND.fingerprint, "pipeline": "log_linear_regression",
...           "labels_learned": 900, "learner_labels": 900, "created_at": 0.0, "metrics": {},
...           "gate": {"decision": "passed", "labels": 300, "candidate_loss": 2.0,
...                    "live_loss": 2.5, "ratio": 0.8, "tolerance": 0.05, "against": "demand.2"}}
>>> c = card(record, lineage=[record], history=[], use_case=DEMAND, live="demand.3", canary=None)
>>> c["status"], c["gate"]["decision"], c["lineage"]["started_by"]
('live', 'passed', 'demand.3 (learned)')
>>> print(markdown(c).splitlines()[0])
# Model card: demand.3
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol

from stream.usecases import UseCase, use_case

__all__ = ["Registry", "card", "markdown", "version_card"]

HISTORY_READ = 1000
"""Newest rollback entries searched for those that name a version."""


class Registry(Protocol):
    """What a card reads of the model registry (:class:`stream.runtime.registry.ModelRegistry`)."""

    async def live(self, model: str) -> str | None: ...

    async def canary_of(self, model: str) -> str | None: ...

    async def lineage(self, version: str, limit: int = ...) -> list[dict[str, Any]]: ...

    async def history(self, model: str, limit: int) -> list[dict[str, Any]]: ...


async def version_card(
    registry: Registry, record: dict[str, Any], use_cases: Sequence[UseCase[Any, Any]]
) -> dict[str, Any]:
    """The card of the version of ``record``, with what it needs read from ``registry``
    (``scoring models card``, and the API's ``GET /v1/models/{model}/versions/{version}``)."""
    version, model = record["version"], record["model"]
    history = [
        entry
        for entry in await registry.history(model, HISTORY_READ)
        if version in (entry.get("version"), entry.get("previous"))
    ]
    return card(
        record,
        lineage=await registry.lineage(version),
        history=history,
        use_case=use_case(model, use_cases),
        live=await registry.live(model),
        canary=await registry.canary_of(model),
    )


def card(
    record: dict[str, Any],
    *,
    lineage: Sequence[dict[str, Any]],
    history: Sequence[dict[str, Any]],
    use_case: UseCase[Any, Any],
    live: str | None,
    canary: str | None,
) -> dict[str, Any]:
    """The card of the version of ``record``.

    Parameters
    ----------
    record
        The version's registry record.
    lineage
        The records from this version back through its parents, as far as they are kept
        (this one first).
    history
        The registry's history entries that name this version: rollbacks (to it or from
        it) and its canary's outcome.
    use_case
        The deployment's use case of that name; its declaration describes the version when
        the fingerprints agree.
    live, canary
        The live version of the model now, and its canary (``None``: none).
    """
    version = record["version"]
    declared = record.get("declaration") == use_case.fingerprint
    declaration = use_case.declaration
    origin = lineage[-1]
    bootstrap = next((r for r in lineage if r.get("reason") == "bootstrap" and "lineage" in r), None)
    status = "live" if version == live else "canary" if version == canary else "kept"
    status = "held" if record.get("reason") == "held" else status
    fraction = record.get("canary_fraction")
    outcome = next((e for e in history if e.get("action") == "canary" and e.get("version") == version), None)
    return {
        "version": version,
        "model": record["model"],
        "status": status,
        "created_at": _time(record.get("created_at")),
        "reason": record.get("reason"),
        "parent": record.get("parent") or None,
        "intended_use": declaration.intended_use if declared else None,
        "task": use_case.task,
        "pipeline": record.get("pipeline"),
        "challenger": record.get("challenger"),
        "declaration": {
            "fingerprint": record.get("declaration"),
            "this_deployment": declared,
            "features": {
                name: feature.model_dump(exclude_defaults=True)
                for name, feature in declaration.features.items()
            }
            if declared
            else None,
            "label_policy": declaration.labels.model_dump() if declared else None,
        },
        "lineage": {
            "started_by": f"{origin['version']} ({origin.get('reason')})",
            "versions_back": len(lineage) - 1,
            "complete": not origin.get("parent"),
            "bootstrap": _bootstrap(bootstrap),
            "labels_learned": record.get("learner_labels"),
            "champion_labels_learned": record.get("labels_learned"),
            "journal_position": record.get("journal_position"),
            "label_offsets": record.get("label_offsets"),
        },
        "metrics": {
            "prequential": record.get("metrics", {}),
            "served_windows": record.get("served_windows"),
            "bootstrap_last_20_percent": (bootstrap or {}).get("lineage", {}).get("last_20_percent"),
        },
        "gate": record.get("gate"),
        "watch": record.get("watch"),
        "canary": {
            "fraction": fraction,
            "outcome": outcome["outcome"] if outcome else "serving" if status == "canary" else None,
            "detail": outcome.get("reason") if outcome else None,
            "at": _time(outcome.get("at")) if outcome else None,
        }
        if fraction
        else None,
        "rollbacks": [e for e in history if e.get("action") == "rollback"],
        "drift_at_publication": record.get("open_alerts", []),
        "configuration": record.get("config", {}),
        "known_limits": _limits(record, use_case, declared),
    }


def markdown(c: dict[str, Any]) -> str:
    """The card as Markdown, for a human."""
    lines = [f"# Model card: {c['version']}", ""]
    lines.append(f"**Status:** {c['status']} · **created** {c['created_at']} · **reason** {c['reason']}")
    lines.append(f"**Parent:** {c['parent'] or '(none)'} · **pipeline** {c['pipeline']} ({c['task']})")
    lines += [
        "",
        "## Intended use",
        "",
        c["intended_use"] or "(not declared under this deployment's declaration)",
    ]
    declaration = c["declaration"]
    lines += ["", "## Features", "", f"Declaration {declaration['fingerprint']}"]
    if declaration["features"]:
        lines += [f"- `{name}`: {_inline(spec)}" for name, spec in declaration["features"].items()]
        lines.append(f"- label policy: {_inline(declaration['label_policy'])}")
    else:
        lines.append("(not this deployment's declaration: its features are not known here)")
    lineage = c["lineage"]
    lines += ["", "## Training lineage", ""]
    lines.append(
        f"Started by {lineage['started_by']}, {lineage['versions_back']} versions back"
        + ("" if lineage["complete"] else " (older versions pruned)")
    )
    if lineage["bootstrap"]:
        b = lineage["bootstrap"]
        lines.append(f"Bootstrap file {b['file']} ({b['size']} bytes, sha256 {b['sha256']}), {b['rows']}")
    lines.append(
        f"Labels learned: {lineage['labels_learned']} (champion: {lineage['champion_labels_learned']}); "
        f"journal position {lineage['journal_position']}"
    )
    metrics = c["metrics"]
    lines += ["", "## Metrics", ""]
    lines += [f"- {name}: {_number(value)}" for name, value in sorted(metrics["prequential"].items())]
    if metrics["served_windows"]:
        w = metrics["served_windows"]
        first, last = _number(w["first"]), _number(w["last"])
        lines.append(f"- served, first {w['window']} labels: {first}; latest {w['window']}: {last}")
    if metrics["bootstrap_last_20_percent"]:
        lines.append(
            f"- bootstrap, last 20 % of the history: {_inline(metrics['bootstrap_last_20_percent'])}"
        )
    lines += ["", "## Release", ""]
    lines.append(
        f"Gate: {_inline(c['gate']) if c['gate'] else '(not judged: a bootstrap or the first version)'}"
    )
    lines.append(f"Watch at publication: {_inline(c['watch']) if c['watch'] else '-'}")
    lines.append(f"Canary: {_inline(c['canary']) if c['canary'] else '(none)'}")
    lines += [f"Rollback: {_inline(r)}" for r in c["rollbacks"]]
    lines += ["", "## Drift at publication", ""]
    lines += [f"- {_inline(a)}" for a in c["drift_at_publication"]] or ["No alert was open."]
    lines += ["", "## Configuration", "", *[f"- {k}: {_inline(v)}" for k, v in c["configuration"].items()]]
    lines += ["", "## Known limits", "", *[f"- {limit}" for limit in c["known_limits"]]]
    return "\n".join(lines) + "\n"


def _bootstrap(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if record is None:
        return None
    lineage = record["lineage"]
    rows = lineage.get("cleaning", {})
    return {
        "version": record["version"],
        "file": lineage.get("file"),
        "size": lineage.get("size"),
        "sha256": lineage.get("sha256"),
        "rows": f"{rows.get('rows')} rows, {rows.get('accepted')} accepted",
        "time_range": [rows.get("first_ts"), rows.get("last_ts")],
        "forced": lineage.get("forced", False),
    }


def _limits(record: dict[str, Any], use_case: UseCase[Any, Any], declared: bool) -> list[str]:
    """What a reader should know before trusting this version, from what the records say."""
    limits = []
    if not declared:
        limits.append("trained under another declaration than this deployment's: workers here refuse it")
    if use_case.labels.policy == "implicit":
        limits.append(
            f"events without a label after {use_case.labels.maturity_seconds:g} s are learned as "
            f"{use_case.labels.implicit_target:g}: late labels are not learned"
        )
    exempt = sorted(use_case.features.drift_exempt)
    if exempt:
        limits.append(f"not watched for data drift (they move by construction): {', '.join(exempt)}")
    if (record.get("learner_labels") or 0) < 2000:
        limits.append(f"learned from {record.get('learner_labels')} labels only")
    if record.get("reason") == "held":
        limits.append("held by the gate: never served")
    if record.get("open_alerts"):
        limits.append("published while drift alerts were open (see Drift at publication)")
    limits.append("online model: its quality is measured on labels as they come, not on a fixed test set")
    return limits


def _time(t: float | None) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds")


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_number(v)}" for k, v in value.items())
    return _number(value)
