"""The backtest report: its figures equal independent computations, its plots and page are sound."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from river import metrics

from models.online import ROCAUC
from models.pipelines import Task
from stream.tools.report import ROLES, Run, summary_lines, window_bounds, write_report

START = 1_767_571_200.0  # 2026-01-05T00:00:00Z: a fixed stream time, whatever the clock says
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def labels(task: Task, n: int, seed: int, *, challenger: bool) -> pd.DataFrame:
    """``n`` labels, one every 30 s, whose predictions are noisy views of the truth."""
    rng = np.random.default_rng(seed)
    t = START + 30.0 * np.arange(n)
    if task == "classification":
        score = rng.normal(size=n)
        y = (rng.random(n) < 1 / (1 + np.exp(-3 * score + 3))).astype(float)

        def predict(noise: float) -> Any:
            return 1 / (1 + np.exp(-3 * (score + rng.normal(scale=noise, size=n)) + 3))

    else:
        level = rng.gamma(2.0, 20.0, size=n)
        y = np.round(level + rng.normal(scale=5.0, size=n)).clip(0)

        def predict(noise: float) -> Any:
            return (level + rng.normal(scale=noise * 10, size=n)).clip(0)

    # the running mean of the targets learned before each label
    baseline = np.cumsum(np.concatenate([[0.0], y]))[:n] / np.maximum(np.arange(n), 1)
    return pd.DataFrame(
        {
            "t": t,
            "y": y,
            "served": predict(0.6),
            "champion": predict(0.5),
            "challenger": predict(0.4) if challenger else np.full(n, np.nan),
            "baseline": baseline,
        }
    )


def run(task: Task, name: str = "built-in", *, n: int = 2300, seed: int = 7, challenger: bool = False) -> Run:
    use_case = "fraud" if task == "classification" else "demand"
    frame = labels(task, n, seed, challenger=challenger)
    publications = [(START + 30.0 * i, f"v{i // 500 + 1}") for i in range(0, n, 500)]
    middle = START + 30.0 * n / 2
    alerts = [
        (middle, "concept_drift", "open", ""),
        (middle + 600.0, "concept_drift", "update", ""),
        (middle + 3600.0, "concept_drift", "resolve", ""),
        (middle + 900.0, "data_drift", "open", "log_amount"),
    ]
    return Run(name, use_case, task, frame, publications, alerts, {"seed": seed, "source": "synthetic"})


def river_metric(task: Task, ys: Any, predictions: Any) -> float:
    metric = metrics.ROCAUC() if task == "classification" else metrics.MAE()
    for y, p in zip(ys, predictions, strict=True):
        metric.update(bool(y) if task == "classification" else y, p)
    return float(metric.get())


def fast_auc(ys: Any, predictions: Any) -> float:
    metric = ROCAUC()
    for y, p in zip(ys, predictions, strict=True):
        metric.update(y, p)
    return metric.get()


def read_metrics(folder: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((folder / "metrics.json").read_text())
    return result


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_window_bounds_partition_the_labels() -> None:
    for n in (0, 1, 499, 500, 501, 749, 750, 1249, 2300):
        bounds = window_bounds(n, 500)
        assert [i for a, b in bounds for i in range(a, b)] == list(range(n))
        assert all(b - a >= 250 for a, b in bounds[1:])
        assert all(b - a < 750 for a, b in bounds)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_metrics_equal_an_independent_computation(tmp_path: Path, task: Task) -> None:
    built_in = run(task, n=2200, challenger=True)
    index = write_report(tmp_path / "report", [built_in], window=500)
    assert index == tmp_path / "report" / "index.html"
    (summary,) = read_metrics(tmp_path / "report")["runs"]
    metric = "roc_auc" if task == "classification" else "mae"
    frame = built_in.labels
    assert summary["metric"] == metric and summary["labels"] == len(frame)
    for role in ROLES:
        value = summary["overall"][metric][role]
        assert value == pytest.approx(
            river_metric(task, frame.y, frame[role]), abs=0.01 if metric == "roc_auc" else 1e-9
        )
        if metric == "roc_auc":
            assert value == fast_auc(frame.y, frame[role])
    windows = summary["windows"]
    assert [w["labels"] for w in windows] == [500, 500, 500, 700]  # the 200-label tail joins the last
    assert windows[0]["start"] == frame.t.iloc[0] and windows[-1]["end"] == frame.t.iloc[-1]
    first = 0
    for w in windows:
        rows = frame.iloc[first : first + w["labels"]]
        assert (w["start"], w["end"]) == (rows.t.iloc[0], rows.t.iloc[-1])
        expected = river_metric(task, rows.y, rows.served)
        assert w[metric]["served"] == pytest.approx(expected, abs=0.01 if metric == "roc_auc" else 1e-9)
        first += w["labels"]
    assert first == len(frame)
    assert summary["first_window"] == windows[0] and summary["last_window"] == windows[-1]
    assert summary["versions_published"] == 5
    assert summary["alerts"] == {
        "concept_drift": {"open": 1, "resolve": 1, "update": 1},
        "data_drift": {"open": 1},
    }
    assert summary["details"] == {"seed": 7, "source": "synthetic"}


def test_classification_has_log_loss_and_a_calibration_table(tmp_path: Path) -> None:
    built_in = run("classification")
    write_report(tmp_path, [built_in])
    (summary,) = read_metrics(tmp_path)["runs"]
    frame = built_in.labels
    log_loss = metrics.LogLoss()
    for y, p in zip(frame.y, frame.served, strict=True):
        log_loss.update(bool(y), p)
    assert summary["overall"]["log_loss"]["served"] == pytest.approx(log_loss.get(), rel=1e-6)
    assert summary["overall"]["roc_auc"]["challenger"] is None  # no challenger: undefined, not 0
    assert summary["predictions"]["challenger"] == 0
    bins = summary["calibration"]["bins"]
    assert len(bins) == 10 and sum(b["labels"] for b in bins) == len(frame)
    assert [b["mean_predicted"] for b in bins] == sorted(b["mean_predicted"] for b in bins)
    highest = frame.nlargest(bins[-1]["labels"], "served")
    assert bins[-1]["observed_rate"] == pytest.approx(highest.y.mean())
    for name in ("index.html", "metrics.json", "metric_over_time.png", "calibration.png"):
        assert (tmp_path / name).exists()
    assert not (tmp_path / "forecast_vs_actual.png").exists()
    assert_png(tmp_path / "metric_over_time.png")
    assert_png(tmp_path / "calibration.png")


def test_regression_has_rmse_and_forecasts_against_actuals(tmp_path: Path) -> None:
    built_in = run("regression")
    write_report(tmp_path, [built_in])
    (summary,) = read_metrics(tmp_path)["runs"]
    frame = built_in.labels
    rmse = math.sqrt(((frame.y - frame.champion) ** 2).mean())
    assert summary["overall"]["rmse"]["champion"] == pytest.approx(rmse)
    assert "calibration" not in summary
    assert_png(tmp_path / "metric_over_time.png")
    assert_png(tmp_path / "forecast_vs_actual.png")
    assert not (tmp_path / "calibration.png").exists()


def test_the_page_links_each_image_and_escapes_the_names(tmp_path: Path) -> None:
    index = write_report(tmp_path, [run("classification", "<b>&")])
    page = index.read_text()
    for image in ("metric_over_time.png", "calibration.png"):
        assert f'src="{image}"' in page
    assert "<b>&" not in page and "&lt;b&gt;&amp;" in page
    assert 'href="metrics.json"' in page and "http" not in page  # self-contained


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_compare_puts_both_runs_side_by_side_and_names_the_better(tmp_path: Path, task: Task) -> None:
    built_in = run(task, "built-in")
    declared = run(task, "declared.yaml", challenger=True)
    # the declared run's served predictions are its challenger's, which are less noisy
    better = Run(
        declared.name,
        declared.use_case,
        task,
        declared.labels.assign(served=declared.labels.challenger),
        declared.publications,
        declared.alerts,
        declared.details,
    )
    page = write_report(tmp_path, [built_in, better]).read_text()
    document = read_metrics(tmp_path)
    assert [r["name"] for r in document["runs"]] == ["built-in", "declared.yaml"]
    assert document["comparison"]["better"] == "declared.yaml"
    assert document["comparison"]["difference"] > 0
    assert "<th>built-in</th><th>declared.yaml</th>" in page
    assert "declared.yaml is better on the served" in page
    lines = summary_lines([built_in, better])
    assert len(lines) == 5 and lines[-1].startswith("declared.yaml is better on the served")
    assert_png(tmp_path / "metric_over_time.png")


def test_summary_lines_give_the_metric_of_each_role() -> None:
    lines = summary_lines([run("regression")])
    assert lines[0] == "demand, built-in: 2,300 labels, 5 versions published, 2 alerts opened"
    assert lines[1].startswith("  mae: served ") and "challenger -," in lines[1]


def test_the_images_are_the_same_on_every_call(tmp_path: Path) -> None:
    runs = [run("classification")]
    write_report(tmp_path / "a", runs)
    write_report(tmp_path / "b", runs)
    for name in ("metric_over_time.png", "calibration.png", "index.html", "metrics.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_runs_of_different_tasks_or_missing_columns_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="same task"):
        write_report(tmp_path, [run("classification"), run("regression")])
    broken = run("regression")
    incomplete = Run("x", "demand", "regression", broken.labels.drop(columns="baseline"), [], [], {})
    with pytest.raises(ValueError, match="baseline"):
        write_report(tmp_path, [incomplete])


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_a_run_without_labels_still_gives_a_report(tmp_path: Path, task: Task) -> None:
    empty = run(task, n=0)
    page = write_report(tmp_path, [empty]).read_text()
    (summary,) = read_metrics(tmp_path)["runs"]
    assert summary["labels"] == 0 and summary["windows"] == [] and summary["first_window"] is None
    assert all(value is None for value in summary["overall"][summary["metric"]].values())
    assert "built-in" in page
    assert_png(tmp_path / "metric_over_time.png")


def estimates(n: int = 40) -> pd.DataFrame:
    """The learner's estimate as a backtest records it: it falls at the middle, the realized one later."""
    t = START + 600.0 * np.arange(n)
    estimated = np.where(np.arange(n) < n // 2, 0.93, 0.84)
    realized = np.where(np.arange(n) < n // 2 + 6, 0.92, 0.83)
    realized[:3] = np.nan  # no label yet
    return pd.DataFrame(
        {
            "t": t,
            "estimated_roc_auc": estimated,
            "estimated_precision": np.full(n, 0.7),
            "estimated_recall": np.full(n, 0.5),
            "realized_roc_auc": realized,
            "realized_precision": np.full(n, 0.68),
            "realized_recall": np.full(n, 0.48),
            "calibration_error": np.full(n, 0.01),
            "valid": np.arange(n) >= 5,
        }
    )


def test_a_run_with_its_estimates_plots_them_against_the_realized_quality(tmp_path: Path) -> None:
    base = run("classification")
    alerts = [*base.alerts, (START + 600.0 * 22, "estimated_quality_drop", "open", "")]
    with_estimates = Run(
        base.name, base.use_case, base.task, base.labels, base.publications, alerts, {}, estimates()
    )
    page = write_report(tmp_path, [with_estimates]).read_text()
    (summary,) = read_metrics(tmp_path)["runs"]
    estimate = summary["estimate"]
    assert estimate["points"] == 40 and estimate["valid_share"] == pytest.approx(35 / 40)
    assert estimate["last"]["estimated_roc_auc"] == 0.84 and estimate["last"]["realized_roc_auc"] == 0.83
    assert estimate["estimated_roc_auc_range"] == [0.84, 0.93]
    assert_png(tmp_path / "estimated_vs_realized.png")
    assert "estimated_vs_realized.png" in page and "0.8400 / 0.8300" in page
    # The reliability curve's expected calibration error, from its own table.
    bins = summary["calibration"]["bins"]
    ece = sum(b["labels"] * abs(b["mean_predicted"] - b["observed_rate"]) for b in bins) / len(base.labels)
    assert summary["calibration"]["ece"] == pytest.approx(ece)
    # Without estimates (a run recorded without them), no such plot.
    write_report(tmp_path / "without", [base])
    assert not (tmp_path / "without" / "estimated_vs_realized.png").exists()
    assert read_metrics(tmp_path / "without")["runs"][0]["estimate"] is None
