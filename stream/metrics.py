"""Prometheus metrics of the worker (``/metrics`` on ``SCORING_METRICS_PORT``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "scoring_events_total",
    "Events scored, or redelivered (their prediction published again), by topic.",
    ["topic", "outcome"],
)
DEAD_LETTERS = Counter(
    "scoring_dead_letters_total",
    "Dead-letter records published, by source topic and reason.",
    ["topic", "reason"],
)
PREDICTIONS = Counter("scoring_predictions_total", "Predictions published, by model.", ["model"])
OUT_OF_ORDER = Counter(
    "scoring_out_of_order_events_total",
    "Valid events older than their entity's latest event (scored with a zero time gap).",
    ["model"],
)
LABELS = Counter(
    "scoring_labels_total",
    "Labels consumed, by model and outcome (learned, redelivered, or a dead-letter reason).",
    ["model", "outcome"],
)
LABELS_LEARNED = Gauge("scoring_model_labels_learned", "Labels the live model has learned.", ["model"])
PREQUENTIAL = Gauge(
    "scoring_prequential_metric",
    "Prequential quality of the live model (ROC AUC for fraud, MAE for demand).",
    ["model", "metric"],
)
SCORING_LATENCY = Histogram(
    "scoring_event_latency_seconds",
    "From the event's broker timestamp to its prediction being scored.",
    ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
BATCH_SECONDS = Histogram(
    "scoring_batch_seconds", "Time to process one batch, publishing included.", ["topic"]
)
RETRIES = Counter(
    "scoring_retries_total", "Batches retried after a Redis or Kafka error.", ["topic", "error"]
)
