"""The learner processes export, through their worker, every metric the learners set, merged."""

from __future__ import annotations

import ast
from pathlib import Path

from prometheus_client.metrics_core import Metric

from stream.runtime import learner, metrics
from stream.runtime.learning import LEARNER_METRICS, merged


def test_every_metric_the_learner_sets_is_exported_by_its_process() -> None:
    tree = ast.parse(Path(learner.__file__).read_text())
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "metrics"
    }
    exported = {name for name, value in vars(metrics).items() if any(value is m for m in LEARNER_METRICS)}
    assert used <= exported, f"not exported by the learner process: {sorted(used - exported)}"


def _family(name: str, kind: str, samples: list[tuple[str, dict[str, str], float]]) -> Metric:
    family = Metric(name, "help", kind)
    for sample_name, labels, value in samples:
        family.add_sample(sample_name, labels, value)
    return family


def test_merged_keeps_one_family_per_name_and_sums_a_series_several_processes_count() -> None:
    fraud = [
        _family("scoring_learner_leader", "gauge", [("scoring_learner_leader", {"model": "fraud"}, 1.0)]),
        _family("scoring_retries", "counter", [("scoring_retries_total", {"topic": "t", "error": "e"}, 2.0)]),
    ]
    demand = [
        _family("scoring_learner_leader", "gauge", [("scoring_learner_leader", {"model": "demand"}, 0.0)]),
        _family(
            "scoring_retries",
            "counter",
            [
                ("scoring_retries_total", {"error": "e", "topic": "t"}, 3.0),  # the same series
                ("scoring_retries_total", {"topic": "u", "error": "e"}, 1.0),
            ],
        ),
    ]
    families = {family.name: family for family in merged([*fraud, *demand])}
    assert sorted(families) == ["scoring_learner_leader", "scoring_retries"]
    leader = {s.labels["model"]: s.value for s in families["scoring_learner_leader"].samples}
    assert leader == {"fraud": 1.0, "demand": 0.0}
    retries = {s.labels["topic"]: s.value for s in families["scoring_retries"].samples}
    assert retries == {"t": 5.0, "u": 1.0}
