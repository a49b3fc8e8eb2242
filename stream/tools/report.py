"""The report of ``scoring backtest``: metrics, plots and a page for one or two replayed runs.

A :class:`Run` is what one replay of a labelled history produced: one row per label learned, with
the predictions each role made *before* it was learned, the model versions published and the
alert changes raised, all in stream time. :func:`write_report` writes into a folder:

``metrics.json``
    per run, the prequential metric of each role (``served``, ``champion``, ``challenger``,
    ``baseline``) over the whole history and per window of consecutive labels, the first and last
    windows, the log loss and a calibration table (classification) or the RMSE (regression), the
    counts of labels, versions and alerts, and the run's ``details``;
``metric_over_time.png``
    the windowed metric of each role over stream time, with version publications as ticks on
    the time axis and alerts as vertical lines (one panel per run);
``calibration.png`` (classification)
    the reliability curve: the served predictions' mean against the observed rate, per bin of
    equal count, with the expected calibration error (ECE) of each run;
``estimated_vs_realized.png`` (classification, when the run has its estimates)
    the ROC AUC, precision and recall of the served scores as the learner estimated them from
    the scores alone (:mod:`models.drift.estimate`) and as their labels realized them, each
    drawn when it was known, the estimate's invalid stretches shaded and its
    ``estimated_quality_drop`` alerts marked (one panel per run);
``forecast_vs_actual.png`` (regression)
    each served forecast against the actual value (one panel per run);
``index.html``
    a self-contained page: the headline figures (one column per run), the plots and, with two
    runs, which one is better on the served metric.

The metric is the service's own (:func:`models.online.new_metric`), fed the same pairs in the same
order, so the overall values equal the stream's prequential metrics. A role's metric is ``None``
where it is undefined: no predictions (no challenger), or, for the ROC AUC, labels of one class
only (where River's metric says 0).

Examples
--------
>>> import pandas as pd
>>> labels = pd.DataFrame(
...     {"t": [0.0, 60.0, 120.0], "y": [3.0, 5.0, 4.0], "served": [2.0, 5.0, 5.0],
...      "champion": [2.0, 5.0, 5.0], "challenger": [float("nan")] * 3, "baseline": [0.0, 3.0, 4.0]}
... )
>>> run = Run("built-in", "demand", "regression", labels, [(0.0, "v1")], [], {})
>>> print(*summary_lines([run]), sep="\\n")
demand, built-in: 3 labels, 1 version published, 0 alerts opened
  mae: served 0.6667, champion 0.6667, challenger -, baseline 1.6667

"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import matplotlib
import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.typing import RcKeyType

from models.challenger import loss
from models.online import new_metric
from models.pipelines import Task

__all__ = [
    "METRICS",
    "ROLES",
    "SECONDARY",
    "Role",
    "Run",
    "calibration",
    "calibration_error",
    "comparison",
    "prequential",
    "secondary",
    "summarize",
    "summary_lines",
    "window_bounds",
    "write_report",
]

Role = Literal["served", "champion", "challenger", "baseline"]
ROLES: Final[tuple[Role, ...]] = ("served", "champion", "challenger", "baseline")
"""The predictions of each label: the live version's, the champion's, the challenger's, the baseline's."""

METRICS: Final[dict[Task, str]] = {"classification": "roc_auc", "regression": "mae"}
"""The name of each task's prequential metric (:func:`models.online.new_metric`)."""

SECONDARY: Final[dict[Task, str]] = {"classification": "log_loss", "regression": "rmse"}
"""The name of each task's other metric (:func:`secondary`)."""

CALIBRATION_BINS = 10
"""Bins of the calibration table: of equal count, since fraud probabilities crowd near zero."""

_COLUMNS = ("t", "y", *ROLES)
_LABELS = {"roc_auc": "ROC AUC", "mae": "MAE", "log_loss": "log loss", "rmse": "RMSE"}
_COLORS: dict[Role, str] = {
    "served": "tab:blue",
    "champion": "tab:green",
    "challenger": "tab:orange",
    "baseline": "tab:gray",
}
_RUN_COLORS = ("tab:blue", "tab:purple")
_ALERT_COLORS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
_DPI = 100
_PNG_METADATA: dict[str, str | None] = {"Software": None}  # no matplotlib version in the files
_RC: dict[RcKeyType, Any] = {
    # stream times as UTC dates, with concise labels, whatever the user's matplotlibrc says
    "timezone": "UTC",
    "date.converter": "concise",
    "font.size": 10.0,
}

Float = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)  # eq=False: comparing or hashing a DataFrame raises
class Run:
    """What one replay of a labelled history produced.

    Attributes
    ----------
    name
        What was run, e.g. ``"built-in"`` or the declaration file's name.
    use_case
        ``"fraud"`` or ``"demand"``.
    task
        ``"classification"`` or ``"regression"``.
    labels
        One row per label learned, in learning order. Columns: ``t`` (stream time, epoch
        seconds), ``y`` (the target: 0/1 for a classification), and the predictions made before
        the label was learned: ``served`` (by the version live when the event was scored),
        ``champion``, ``challenger`` (NaN when there is none), ``baseline`` (a running mean of
        the targets learned so far).
    publications
        ``(stream time, version)`` of each model version published.
    alerts
        ``(stream time, kind, state, feature or "")`` of each alert change; ``state`` is
        ``open``, ``update`` or ``resolve``.
    details
        JSON-serialisable extras, written to ``metrics.json`` as they are.
    estimates
        The learner's quality estimate (classification) each time it changed, in stream time:
        columns ``t``, ``estimated_<m>`` and ``realized_<m>`` for ``m`` in
        :data:`models.drift.estimate.METRICS` (NaN while undefined), ``calibration_error``
        and ``valid``; ``None`` when not recorded.

    """

    name: str
    use_case: str
    task: Task
    labels: pd.DataFrame
    publications: Sequence[tuple[float, str]]
    alerts: Sequence[tuple[float, str, str, str]]
    details: Mapping[str, Any]
    estimates: pd.DataFrame | None = None


# Metrics ----------------------------------------------------------------------------------


def prequential(task: Task, ys: Float, predictions: Float) -> float | None:
    """The service's prequential metric fed the pairs in order, skipping missing predictions.

    Returns
    -------
    float or None
        ``None`` when undefined: no predictions, or a classification's labels of one class only.

    Examples
    --------
    >>> nan = float("nan")
    >>> prequential("regression", np.array([1.0, 2.0, 3.0]), np.array([1.5, nan, 2.0]))
    0.75
    >>> print(prequential("classification", np.array([0.0, 0.0]), np.array([0.2, 0.7])))
    None

    """
    present = ~np.isnan(predictions)
    ys, predictions = ys[present], predictions[present]
    if not len(ys) or (task == "classification" and len(np.unique(ys)) < 2):
        return None
    metric = new_metric(task)
    for y, p in zip(ys.tolist(), predictions.tolist(), strict=True):
        metric.update(y, p)
    return float(metric.get())


def secondary(task: Task, ys: Float, predictions: Float) -> float | None:
    """The other metric of a task (:data:`SECONDARY`) on the present predictions, ``None`` without.

    A classification's is the log loss of the champion-challenger test
    (:func:`models.challenger.loss`: probabilities clipped to ``[1e-6, 1 - 1e-6]``), a
    regression's the RMSE.
    """
    present = ~np.isnan(predictions)
    ys, predictions = ys[present], predictions[present]
    if not len(ys):
        return None
    if task == "classification":
        return float(
            np.mean([loss(task, y, p) for y, p in zip(ys.tolist(), predictions.tolist(), strict=True)])
        )
    return float(np.sqrt(np.mean((ys - predictions) ** 2)))


def window_bounds(n: int, window: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of consecutive windows of ``window`` labels covering ``n`` labels.

    A tail shorter than half a window joins the window before it, so that the last window's
    metric is not read off a handful of labels.

    Examples
    --------
    >>> window_bounds(1100, 500), window_bounds(1300, 500), window_bounds(100, 500)
    ([(0, 500), (500, 1100)], [(0, 500), (500, 1000), (1000, 1300)], [(0, 100)])

    """
    if window < 1:
        raise ValueError(f"window must be >= 1, not {window}")
    bounds = [(start, min(start + window, n)) for start in range(0, n, window)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < window / 2:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def calibration_error(table: Sequence[Mapping[str, float]]) -> float | None:
    """The expected calibration error of a calibration table: the mean, over the labels, of the
    gap between their bin's mean prediction and its observed rate.

    Examples
    --------
    >>> calibration_error([{"labels": 3, "mean_predicted": 0.1, "observed_rate": 0.0},
    ...                    {"labels": 1, "mean_predicted": 0.8, "observed_rate": 1.0}])
    0.125

    """
    n = sum(b["labels"] for b in table)
    if not n:
        return None
    return float(sum(b["labels"] * abs(b["mean_predicted"] - b["observed_rate"]) for b in table) / n)


def calibration(ys: Float, predictions: Float, bins: int = CALIBRATION_BINS) -> list[dict[str, float]]:
    """The calibration table of the present predictions: bins of equal count, by prediction.

    Each bin has the lowest and highest prediction in it, its count, the mean prediction and the
    observed rate of positive labels.
    """
    present = ~np.isnan(predictions)
    if not present.any():
        return []
    order = np.argsort(predictions[present], kind="stable")
    ys, predictions = ys[present][order], predictions[present][order]
    parts = min(bins, len(ys))
    table: list[dict[str, float]] = []
    for y, p in zip(np.array_split(ys, parts), np.array_split(predictions, parts), strict=True):
        table.append(
            {
                "lower": float(p[0]),
                "upper": float(p[-1]),
                "labels": len(p),
                "mean_predicted": float(p.mean()),
                "observed_rate": float(y.mean()),
            }
        )
    return table


def summarize(run: Run, window: int = 500) -> dict[str, Any]:
    """The figures of one run that ``metrics.json`` holds (see the module's description)."""
    _check(run)
    name = METRICS[run.task]
    ys = _column(run, "y")
    t = _column(run, "t")
    roles = {role: _column(run, role) for role in ROLES}
    windows = [
        {
            "start": float(t[a]),
            "end": float(t[b - 1]),
            "labels": b - a,
            name: {role: prequential(run.task, ys[a:b], p[a:b]) for role, p in roles.items()},
        }
        for a, b in window_bounds(len(ys), window)
    ]
    summary: dict[str, Any] = {
        "name": run.name,
        "use_case": run.use_case,
        "task": run.task,
        "metric": name,
        "labels": len(ys),
        "start": float(t[0]) if len(t) else None,
        "end": float(t[-1]) if len(t) else None,
        "predictions": {role: int((~np.isnan(p)).sum()) for role, p in roles.items()},
        "overall": {
            name: {role: prequential(run.task, ys, p) for role, p in roles.items()},
            SECONDARY[run.task]: {role: secondary(run.task, ys, p) for role, p in roles.items()},
        },
        "window": window,
        "windows": windows,
        "first_window": windows[0] if windows else None,
        "last_window": windows[-1] if windows else None,
        "versions_published": len(run.publications),
        "alerts": _alert_counts(run),
    }
    if run.task == "classification":
        table = calibration(ys, roles["served"])
        summary["calibration"] = {"role": "served", "bins": table, "ece": calibration_error(table)}
        summary["estimate"] = _estimate_summary(run.estimates)
    summary["details"] = dict(run.details)
    return summary


def _estimate_summary(estimates: pd.DataFrame | None) -> dict[str, Any] | None:
    """The estimate's last values, its range and how often it was valid; ``None`` without."""
    if estimates is None or not len(estimates):
        return None
    last = estimates.iloc[-1]

    def value(column: str) -> float | None:
        v = float(last[column])
        return None if math.isnan(v) else v

    estimated = estimates["estimated_roc_auc"].dropna()
    return {
        "points": len(estimates),
        "last": {column: value(column) for column in estimates.columns if column not in ("t", "valid")},
        "estimated_roc_auc_range": [float(estimated.min()), float(estimated.max())]
        if len(estimated)
        else None,
        "valid_share": float(estimates["valid"].astype(float).mean()),
    }


def comparison(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Which of two runs is better on the served metric, and by how much; ``None`` for one run.

    ``better`` is the better run's name, ``None`` when the runs are even or a value is undefined;
    ``difference`` is how much better it is (positive), ``relative`` that over the other value.
    """
    if len(summaries) != 2:
        return None
    metric = summaries[0]["metric"]
    values: list[float | None] = [s["overall"][metric]["served"] for s in summaries]
    result: dict[str, Any] = {
        "metric": metric,
        "role": "served",
        "runs": [s["name"] for s in summaries],
        "values": values,
        "better": None,
        "difference": None,
        "relative": None,
    }
    best = _better(metric, values)
    if best is not None:
        better, other = values[best], values[1 - best]
        assert better is not None and other is not None  # _better compares only defined values
        result.update(
            better=summaries[best]["name"],
            difference=abs(better - other),
            relative=abs(better - other) / abs(other) if other else None,
        )
    return result


def _better(metric: str, values: Sequence[float | None]) -> int | None:
    """The index of the better of two values, ``None`` when they are even or one is undefined."""
    a, b = values
    if a is None or b is None or a == b:
        return None
    higher_is_better = metric == "roc_auc"  # the MAE is better lower
    return 0 if (a > b) == higher_is_better else 1


def _check(run: Run) -> None:
    missing = [c for c in _COLUMNS if c not in run.labels.columns]
    if missing:
        raise ValueError(f"{run.name}: the labels lack the columns {', '.join(missing)}")
    if run.task not in METRICS:
        raise ValueError(f"{run.name}: unknown task {run.task!r}")


def _column(run: Run, name: str) -> Float:
    return np.asarray(run.labels[name], dtype=np.float64)


def _state_order(state: str) -> tuple[int, str]:
    """An alert's states in the order they happen, any other after them."""
    order = ("open", "update", "resolve")
    return (order.index(state), "") if state in order else (len(order), state)


def _alert_counts(run: Run) -> dict[str, dict[str, int]]:
    """``{kind: {state: count}}``, kinds sorted, states in the order they happen."""
    counts = Counter((kind, state) for _, kind, state, _ in run.alerts)
    result: dict[str, dict[str, int]] = {}
    for (kind, state), count in sorted(
        counts.items(), key=lambda item: (item[0][0], _state_order(item[0][1]))
    ):
        result.setdefault(kind, {})[state] = count
    return result


# Text -------------------------------------------------------------------------------------


def summary_lines(runs: Sequence[Run]) -> list[str]:
    """A few plain lines for the command line: the metric of each role of each run.

    With two runs, a last line says which is better on the served metric.
    """
    lines: list[str] = []
    summaries: list[dict[str, Any]] = []
    for run in runs:
        _check(run)
        name = METRICS[run.task]
        ys = _column(run, "y")
        values = {role: prequential(run.task, ys, _column(run, role)) for role in ROLES}
        opened = sum(1 for _, _, state, _ in run.alerts if state == "open")
        versions = len(run.publications)
        lines.append(
            f"{run.use_case}, {run.name}: {len(ys):,} labels, {versions:,} version{_s(versions)} "
            f"published, {opened:,} alert{_s(opened)} opened"
        )
        lines.append(f"  {name}: " + ", ".join(f"{role} {_number(v)}" for role, v in values.items()))
        summaries.append({"name": run.name, "metric": name, "overall": {name: values}})
    verdict = _verdict(comparison(summaries))
    return [*lines, verdict] if verdict else lines


def _verdict(result: Mapping[str, Any] | None) -> str | None:
    """The sentence that says which run is better, from :func:`comparison`."""
    if result is None:
        return None
    label = _LABELS[result["metric"]]
    values = result["values"]
    if None in values:
        return f"No comparison: the served {label} of a run is undefined."
    best = _better(result["metric"], values)
    if best is None:
        return f"The runs are even on the served {label} ({_number(values[0])})."
    relative = result["relative"]
    by = _number(result["difference"]) + (f" ({relative:.1%})" if relative is not None else "")
    return (
        f"{result['runs'][best]} is better on the served {label} by {by}: "
        f"{_number(values[best])} against {_number(values[1 - best])} for {result['runs'][1 - best]}."
    )


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) < 100 else f"{value:,.1f}"


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _utc(t: float | None) -> str:
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


# Plots ------------------------------------------------------------------------------------


def _dates(t: Float) -> npt.NDArray[np.datetime64]:
    """Epoch seconds as UTC datetimes, which matplotlib draws on a date axis."""
    return np.round(t * 1000).astype(np.int64).astype("datetime64[ms]")


def _new_figure(width: float, height: float) -> Figure:
    """A figure drawn by Agg, without pyplot: no display, no global state."""
    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> None:
    figure.savefig(path, dpi=_DPI, metadata=_PNG_METADATA)


def _plot_metric_over_time(path: Path, runs: Sequence[Run], summaries: Sequence[Mapping[str, Any]]) -> None:
    """The windowed metric of each role over stream time, one panel per run (shared axes).

    Each window's value is drawn at the time of its last label, when it is known. Versions
    published are ticks at the foot of the panel; alerts that open are solid vertical lines, one
    colour per kind, and alerts that resolve dotted ones (updates are only counted, in the table:
    there can be many).
    """
    name = summaries[0]["metric"]
    figure = _new_figure(11.0, 1.0 + 3.5 * len(runs))
    axes = figure.subplots(len(runs), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
    kinds = sorted({kind for run in runs for _, kind, _, _ in run.alerts})
    colors = {kind: _ALERT_COLORS[i % len(_ALERT_COLORS)] for i, kind in enumerate(kinds)}
    drawn: set[Role] = set()
    resolved = False
    for ax, run, summary in zip(axes, runs, summaries, strict=True):
        windows = summary["windows"]
        ends = _dates(np.array([w["end"] for w in windows], dtype=np.float64))
        for role in ROLES:
            values = [w[name][role] for w in windows]
            if all(v is None for v in values):
                continue
            ys = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
            # markers show where each window ends, until they would be a blur
            ax.plot(ends, ys, marker="." if len(windows) <= 60 else "", color=_COLORS[role], label=role)
            drawn.add(role)
        for kind in kinds:
            for state, style in (("open", "-"), ("resolve", ":")):
                at = [t for t, k, s, _ in run.alerts if k == kind and s == state]
                if at:
                    resolved |= state == "resolve"
                    xs = _dates(np.array(at, dtype=np.float64))
                    ax.vlines(
                        xs,
                        0,
                        1,
                        transform=ax.get_xaxis_transform(),
                        colors=colors[kind],
                        linestyles=style,
                        linewidth=1,
                    )
        if run.publications:
            xs = _dates(np.array([t for t, _ in run.publications], dtype=np.float64))
            ax.vlines(xs, 0, 0.04, transform=ax.get_xaxis_transform(), colors="black", linewidth=0.8)
        if not windows:
            ax.text(0.5, 0.5, "no labels", transform=ax.transAxes, ha="center", va="center")
        ax.set_title(run.name, loc="left")
        ax.set_ylabel(f"{_LABELS[name]} per {summary['window']:,} labels")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("stream time (UTC)")
    handles = [Line2D([], [], color=_COLORS[r], marker=".", label=r) for r in ROLES if r in drawn]
    if any(run.publications for run in runs):
        handles.append(
            Line2D([], [], color="black", marker="|", linestyle="", markersize=8, label="version published")
        )
    handles += [Line2D([], [], color=colors[k], label=f"{k} opens") for k in kinds]
    if resolved:
        handles.append(Line2D([], [], color="black", linestyle=":", label="alert resolves"))
    figure.legend(handles=handles, loc="outside right upper")
    _save(figure, path)


def _plot_calibration(path: Path, summaries: Sequence[Mapping[str, Any]]) -> None:
    """The served predictions' mean against the observed rate per bin, one line per run.

    The axes stop a little above the largest value, not at 1, so that rare positives (fraud)
    still read.
    """
    figure = _new_figure(6.5, 6.0)
    ax = figure.subplots()
    top = 0.0
    for i, summary in enumerate(summaries):
        bins = summary["calibration"]["bins"]
        x = [b["mean_predicted"] for b in bins]
        y = [b["observed_rate"] for b in bins]
        ece = summary["calibration"]["ece"]
        label = summary["name"] + ("" if ece is None else f" (ECE {ece:.3g})")
        ax.plot(x, y, marker="o", color=_RUN_COLORS[i % len(_RUN_COLORS)], label=label)
        top = max([top, *x, *y])
    top = min(1.0, max(top * 1.05, 0.01))
    ax.plot([0, top], [0, top], linestyle="--", color="gray", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_aspect("equal")
    ax.set_xlabel(f"mean served probability (bins of equal count, {CALIBRATION_BINS} per run)")
    ax.set_ylabel("observed rate of positive labels")
    ax.set_title("Calibration of the served predictions (reliability curve)", loc="left")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    _save(figure, path)


def _plot_estimates(path: Path, runs: Sequence[Run]) -> None:
    """The estimated and realized quality of the served scores over stream time, one panel per run.

    Each value is drawn when it was known: an estimate as its scored events came, a realized
    value as its labels came (a label delay later). Stretches where the estimate was not valid
    are shaded; ``estimated_quality_drop`` alerts that open are vertical lines.
    """
    figure = _new_figure(11.0, 1.0 + 3.5 * len(runs))
    axes = figure.subplots(len(runs), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
    colors = {"roc_auc": "tab:blue", "precision": "tab:green", "recall": "tab:orange"}
    names = {"roc_auc": "ROC AUC", "precision": "precision", "recall": "recall"}
    for ax, run in zip(axes, runs, strict=True):
        frame = run.estimates if run.estimates is not None else pd.DataFrame()
        if len(frame):
            t = _dates(frame["t"].to_numpy(dtype=np.float64))
            for metric, color in colors.items():
                width = 1.6 if metric == "roc_auc" else 0.9
                for source, style in (("estimated", "-"), ("realized", "--")):
                    ys = frame[f"{source}_{metric}"].to_numpy(dtype=np.float64)
                    ax.plot(t, ys, linestyle=style, color=color, linewidth=width, drawstyle="steps-post")
            invalid = ~frame["valid"].to_numpy(dtype=bool)
            ax.fill_between(
                t,
                0,
                1,
                where=invalid,
                step="post",
                color="gray",
                alpha=0.15,
                transform=ax.get_xaxis_transform(),
            )
            opens = [
                at
                for at, kind, state, _ in run.alerts
                if kind == "estimated_quality_drop" and state == "open"
            ]
            if opens:
                xs = _dates(np.array(opens, dtype=np.float64))
                ax.vlines(xs, 0, 1, transform=ax.get_xaxis_transform(), colors="tab:red", linewidth=1)
        else:
            ax.text(0.5, 0.5, "no estimate recorded", transform=ax.transAxes, ha="center", va="center")
        ax.set_ylim(0, 1.02)
        ax.set_title(run.name, loc="left")
        ax.set_ylabel("served scores' quality")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("stream time (UTC): each value when it was known")
    handles: list[Artist] = [
        Line2D([], [], color=c, linewidth=1.6, label=names[m]) for m, c in colors.items()
    ]
    handles += [
        Line2D([], [], color="black", linestyle="-", label="estimated (scores alone)"),
        Line2D([], [], color="black", linestyle="--", label="realized (labels)"),
        Patch(color="gray", alpha=0.15, label="estimate not valid"),
        Line2D([], [], color="tab:red", label="estimated_quality_drop opens"),
    ]
    figure.legend(handles=handles, loc="outside right upper")
    _save(figure, path)


def _plot_forecasts(path: Path, runs: Sequence[Run]) -> None:
    """Each served forecast against the actual value, one panel per run (shared axes).

    Points are transparent in proportion to their number, so that thousands of them still show
    where they crowd.
    """
    figure = _new_figure(1.0 + 5.5 * len(runs), 6.0)
    axes = figure.subplots(1, len(runs), sharex=True, sharey=True, squeeze=False)[0]
    top = 0.0
    for ax, run in zip(axes, runs, strict=True):
        served, ys = _column(run, "served"), _column(run, "y")
        present = ~np.isnan(served)
        served, ys = served[present], ys[present]
        alpha = min(1.0, max(0.03, 300 / max(len(ys), 1)))
        ax.scatter(served, ys, s=6, alpha=alpha, color=_COLORS["served"], linewidths=0)
        top = max([top, *served.tolist(), *ys.tolist()])
        ax.set_title(run.name, loc="left")
        ax.set_xlabel("served forecast")
        ax.grid(alpha=0.3)
    top = max(top * 1.05, 1.0)
    for ax in axes:
        ax.plot([0, top], [0, top], linestyle="--", color="gray", linewidth=1, label="forecast = actual")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.legend(loc="upper left")
    axes[0].set_ylabel("actual")
    _save(figure, path)


# Report -----------------------------------------------------------------------------------


def write_report(folder: Path, runs: Sequence[Run], *, window: int = 500) -> Path:
    """Writes the report of one or two runs into ``folder`` (created).

    Parameters
    ----------
    folder
        Where ``metrics.json``, the plots and ``index.html`` go; files of the same names are
        replaced.
    runs
        One run, or two on the same history (``--compare``), of the same task.
    window
        Labels per window of the metric over time.

    Returns
    -------
    Path
        The path of ``index.html``.

    """
    if not 1 <= len(runs) <= 2:
        raise ValueError(f"a report is of one or two runs, not {len(runs)}")
    if len({run.task for run in runs}) > 1:
        raise ValueError("the runs do not have the same task: their metrics do not compare")
    summaries = [summarize(run, window) for run in runs]
    versus = comparison(summaries)
    # allow_nan=False: NaN is not JSON; a run's details with one fail here, before any file is written
    document = json.dumps(
        {"window": window, "runs": summaries, "comparison": versus}, indent=2, allow_nan=False
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(document + "\n", encoding="utf-8")
    images = ["metric_over_time.png"]
    with matplotlib.rc_context(_RC):
        _plot_metric_over_time(folder / images[0], runs, summaries)
        if runs[0].task == "classification":
            images.append("calibration.png")
            _plot_calibration(folder / images[1], summaries)
            if any(run.estimates is not None and len(run.estimates) for run in runs):
                images.append("estimated_vs_realized.png")
                _plot_estimates(folder / images[2], runs)
        else:
            images.append("forecast_vs_actual.png")
            _plot_forecasts(folder / images[1], runs)
    index = folder / "index.html"
    index.write_text(_page(summaries, images, _verdict(versus)), encoding="utf-8")
    return index


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 0.3em 0.8em; border-bottom: 1px solid #ddd; text-align: right; vertical-align: top; }
th:first-child { text-align: left; font-weight: normal; }
thead th { font-weight: bold; }
pre { text-align: left; margin: 0; }
img { max-width: 100%; display: block; margin: 1em 0; }
.verdict { font-weight: bold; }
"""


def _page(summaries: Sequence[Mapping[str, Any]], images: Sequence[str], verdict: str | None) -> str:
    """``index.html``: every text that comes from the runs is escaped."""
    names = [s["name"] for s in summaries]
    use_cases = ", ".join(dict.fromkeys(s["use_case"] for s in summaries))
    title = f"Backtest of {use_cases}: {' vs '.join(names)}"
    window = summaries[0]["window"]
    head = "<tr><th></th>" + "".join(f"<th>{_e(n)}</th>" for n in names) + "</tr>"
    rows = "\n".join(
        f"<tr><th>{_e(label)}</th>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>"
        for label, cells in _rows(summaries)
    )
    details = "".join(f"<td><pre>{_e(json.dumps(s['details'], indent=2))}</pre></td>" for s in summaries)
    plots = "\n".join(f'<img src="{_e(image)}" alt="{_e(image.removesuffix(".png"))}">' for image in images)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{_e(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{_e(title)}</h1>
{f'<p class="verdict">{_e(verdict)}</p>' if verdict else ""}
<p>Each prediction is scored before its label is learned. Windows hold {window:,} consecutive
labels (a shorter tail joins the last one); each window's value is drawn at its last label.
All the figures are in <a href="metrics.json">metrics.json</a>.</p>
<table>
<thead>{head}</thead>
<tbody>
{rows}
</tbody>
</table>
{plots}
<h2>Details</h2>
<table>
<thead>{head}</thead>
<tbody><tr><th></th>{details}</tr></tbody>
</table>
</body>
</html>
"""


def _rows(summaries: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    """The headline figures: (what, one cell per run); a role nobody has is left out."""
    metric = summaries[0]["metric"]
    other = SECONDARY[summaries[0]["task"]]
    rows = [
        ("labels learned", [f"{s['labels']:,}" for s in summaries]),
        ("stream time (UTC)", [f"{_utc(s['start'])} to {_utc(s['end'])}" for s in summaries]),
    ]
    for key in (metric, other):
        for role in ROLES:
            values = [s["overall"][key][role] for s in summaries]
            if any(v is not None for v in values):
                rows.append((f"{_LABELS[key]}, {role}", [_number(v) for v in values]))
    for role in ROLES:
        edges = [_edges(s, metric, role) for s in summaries]
        if any(e is not None for e in edges):
            rows.append((f"{_LABELS[metric]}, {role}: first → last window", [e or "-" for e in edges]))
    if summaries[0]["task"] == "classification":
        rows.append(
            ("calibration error (ECE), served", [_number(s["calibration"]["ece"]) for s in summaries])
        )
        estimates = [s.get("estimate") for s in summaries]
        if any(e is not None for e in estimates):
            rows.append(
                ("ROC AUC, last estimated / realized window", [_estimate_cells(e) for e in estimates])
            )
    rows.append(("versions published", [f"{s['versions_published']:,}" for s in summaries]))
    rows.append(("alerts (changes by state)", [_alerts(s["alerts"]) for s in summaries]))
    return rows


def _estimate_cells(estimate: Mapping[str, Any] | None) -> str:
    if estimate is None:
        return "-"
    last = estimate["last"]
    return (
        f"{_number(last['estimated_roc_auc'])} / {_number(last['realized_roc_auc'])} "
        f"(valid {estimate['valid_share']:.0%} of the time)"
    )


def _edges(summary: Mapping[str, Any], metric: str, role: str) -> str | None:
    first, last = summary["first_window"], summary["last_window"]
    if first is None or (first[metric][role] is None and last[metric][role] is None):
        return None
    return f"{_number(first[metric][role])} → {_number(last[metric][role])}"


def _alerts(counts: Mapping[str, Mapping[str, int]]) -> str:
    if not counts:
        return "none"
    return "; ".join(
        f"{kind}: " + ", ".join(f"{n} {state}" for state, n in states.items())
        for kind, states in counts.items()
    )


def _e(text: str) -> str:
    return html.escape(text, quote=True)
