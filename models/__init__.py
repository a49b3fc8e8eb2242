"""Online River models: candidate pipelines, the served model, prequential evaluation.

This package knows nothing of Kafka, Redis, Faust or :mod:`stream`: it maps feature dicts to
predictions and learns from labels.
"""

from models.evaluation import EvaluationResult, compare, format_table, prequential
from models.online import Features, OnlineModel
from models.pipelines import CANDIDATES, Task

__all__ = [
    "CANDIDATES",
    "EvaluationResult",
    "Features",
    "OnlineModel",
    "Task",
    "compare",
    "format_table",
    "prequential",
]
