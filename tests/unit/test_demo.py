"""The demo's view of the worker: its metrics read as progress, shown as a log can hold it."""

from __future__ import annotations

import io

from stream.tools.demo import Progress, progress_view


def test_progress_reads_the_workers_metrics() -> None:
    samples = {
        "scoring_predictions_total{model=fraud}": 3.0,
        "scoring_predictions_total{model=demand}": 4.0,
        "scoring_dead_letters_total{reason=bad_type}": 1.0,
        "scoring_labels_total{model=fraud}{outcome=joined}": 2.0,
        "scoring_labels_total{model=fraud}{outcome=parked}": 5.0,
        "scoring_labels_total{model=demand}{outcome=duplicate_label}": 1.0,
        "scoring_assigned_partitions": 16.0,
        "scoring_published_model_version{model=fraud}": 0.0,
        "scoring_served_model_version{model=fraud}": 3.0,
    }
    progress = Progress.of(samples)
    assert (progress.predictions, progress.dead_letters) == (7.0, 1.0)
    assert (progress.joined, progress.labels_done) == (2.0, 3.0)  # parked labels are not done yet
    assert progress.served == ("fraud.3", "demand.0")  # no served version yet: the untrained .0
    assert not progress.ready, "the demand learner has not published yet"
    assert Progress.of({**samples, "scoring_published_model_version{model=demand}": 0.0}).ready
    assert not Progress.of({**samples, "scoring_assigned_partitions": 0.0}).ready


def test_without_a_terminal_progress_is_a_line_every_ten_seconds_and_the_last_state() -> None:
    out = io.StringIO()
    with progress_view(out, events=350, labels=300) as show:
        for second in range(36):
            counts = {"scoring_predictions_total{model=fraud}": 10.0 * second}
            show(Progress.of(counts), 1000.0 + second)
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert [line.split(" s ")[0].strip() for line in lines] == ["0", "10", "20", "30", "35"]
    assert lines[-1].startswith("  35 s  events 350/350 scored or rejected, labels 0/300 joined")
