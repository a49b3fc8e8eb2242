"""The learner process exports, through its worker, every metric the learners set."""

from __future__ import annotations

import ast
from pathlib import Path

from stream.runtime import learner, metrics
from stream.runtime.learning import LEARNER_METRICS


def test_every_metric_the_learner_sets_is_exported_by_its_process() -> None:
    tree = ast.parse(Path(learner.__file__).read_text())
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "metrics"
    }
    exported = {name for name, value in vars(metrics).items() if any(value is m for m in LEARNER_METRICS)}
    assert used <= exported, f"not exported by the learner process: {sorted(used - exported)}"
