"""``scoring backtest <use case> <file>``: how would this declaration have done on this history?

A labelled history is replayed offline (no broker, no Redis) through the production code
(:class:`stream.tools.replay.Replay`: the declared features and entity-state updates, the
learner with its champion, challenger and drift monitor, versions published in stream time
and served from the workers' next poll), with labels arriving ``label_delay`` seconds after
their events. The report (:mod:`stream.tools.report`) shows the served, champion,
challenger and running-mean baseline metrics over time, the publications and the alerts,
and, for a classification, the learner's quality estimate of the served scores (made from
the scores alone, before their labels) against the realized quality and the reliability
curve; ``compare`` replays a second declaration file on the same history, side by side.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from models.drift.estimate import METRICS
from stream.settings import Settings
from stream.tools.history import History
from stream.tools.replay import Replay
from stream.tools.report import Run, summary_lines, write_report
from stream.usecases import use_case as named


def replay_run(settings: Settings, use_case_name: str, path: Path, *, label_delay: float, name: str) -> Run:
    """One replay of the history at ``path`` under ``settings``' declaration of the use case."""
    use_case = named(use_case_name, settings.use_cases)
    estimates = EstimateRecorder()
    replay = Replay.as_deployed(
        settings,
        use_case,
        label_delay=label_delay,
        on_scored=lambda event, pending, target: estimates.record(replay, pending["scored_at"]),
    )
    with History(use_case, path) as history:
        for batch in history.batches():
            replay.add_all(batch)
    replay.finish(flush=False)
    labels = pd.DataFrame(
        {
            "t": replay.labels.t,
            "y": replay.labels.y,
            "served": replay.labels.served,
            "champion": replay.labels.champion,
            "challenger": replay.labels.challenger(),
            "baseline": replay.labels.baseline,
        }
    )
    details: dict[str, Any] = {
        "file": path.name,
        "declaration": use_case.fingerprint,
        "label_delay_seconds": label_delay,
        "publish_seconds": settings.model_publish_seconds,
        "poll_seconds": settings.model_poll_seconds,
        "replay": dict(replay.counts),
        "cleaning": history.report.model_dump(mode="json"),
    }
    return Run(
        name,
        use_case.name,
        use_case.task,
        labels,
        replay.publications,
        [(a.t, a.kind, a.state, a.feature) for a in replay.alerts],
        details,
        estimates.frame() if use_case.task == "classification" else None,
    )


class EstimateRecorder:
    """The learner's quality estimate (:mod:`models.drift.estimate`) each time it changes."""

    COLUMNS = (
        *(f"estimated_{m}" for m in METRICS),
        *(f"realized_{m}" for m in METRICS),
        "calibration_error",
        "valid",
    )

    def __init__(self) -> None:
        self.rows: list[tuple[float, ...]] = []
        self._last: tuple[float, ...] | None = None

    def record(self, replay: Replay, t: float) -> None:
        """After an event at stream time ``t``: the estimate, if it changed."""
        estimate = replay.learner.lifecycle.monitor.estimate
        if estimate is None:
            return
        nan = math.nan
        row = (
            *(estimate.estimated.get(m, nan) for m in METRICS),
            *(estimate.realized.get(m, nan) for m in METRICS),
            estimate.calibration_error,
            float(estimate.valid),
        )
        if self._last is None or not _same(row, self._last):
            self.rows.append((t, *row))
            self._last = row

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows, columns=["t", *self.COLUMNS])
        frame["valid"] = frame["valid"].astype(bool)
        return frame


def _same(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


def backtest(
    settings: Settings,
    use_case_name: str,
    path: Path,
    *,
    label_delay: float = 0.0,
    compare: Path | None = None,
    out: Path,
    window: int = 500,
) -> tuple[Path, list[str]]:
    """Replay the history (and, with ``compare``, again under that declaration file); write the report.

    Returns the report's ``index.html`` and a few summary lines.
    """
    name = Path(settings.use_cases_file).name if settings.use_cases_file else "built-in"
    runs = [replay_run(settings, use_case_name, path, label_delay=label_delay, name=name)]
    if compare is not None:
        other = settings.replace(use_cases_file=str(compare))
        runs.append(replay_run(other, use_case_name, path, label_delay=label_delay, name=compare.name))
    return write_report(out, runs, window=window), summary_lines(runs)
