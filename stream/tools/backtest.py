"""``scoring backtest <use case> <file>``: how would this declaration have done on this history?

A labelled history is replayed offline (no broker, no Redis) through the production code
(:class:`stream.tools.replay.Replay`: the declared features and entity-state updates, the
learner with its champion, challenger and drift monitor, versions published in stream time
and served from the workers' next poll), with labels arriving ``label_delay`` seconds after
their events. The report (:mod:`stream.tools.report`) shows the served, champion,
challenger and running-mean baseline metrics over time, the publications and the alerts;
``compare`` replays a second declaration file on the same history, side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from stream.settings import Settings
from stream.tools.history import History
from stream.tools.replay import Replay
from stream.tools.report import Run, summary_lines, write_report
from stream.usecases import use_case as named


def replay_run(settings: Settings, use_case_name: str, path: Path, *, label_delay: float, name: str) -> Run:
    """One replay of the history at ``path`` under ``settings``' declaration of the use case."""
    use_case = named(use_case_name, settings.use_cases)
    replay = Replay(
        settings,
        use_case,
        label_delay=label_delay,
        publish_seconds=settings.model_publish_seconds,
        poll_seconds=settings.model_poll_seconds,
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
    )


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
