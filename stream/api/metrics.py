"""Prometheus metrics of ``scoring api`` (its ``/metrics``, beside the scoring steps' own).

The steps it shares with the worker count there as they do in a worker
(``scoring_predictions_total``, ``scoring_score_latency_seconds``,
``scoring_served_model_version``...); these count the requests.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "scoring_api_requests_total",
    "Scoring requests answered, by model and outcome: scored, repeated (the prediction recorded "
    "before), a rejection's reason (422), not_ready, unavailable, in_flight, duplicate_event.",
    ["model", "outcome"],
)
REQUEST_SECONDS = Histogram(
    "scoring_api_request_seconds",
    "From a scoring request's body being read to its answer, by model.",
    ["model"],
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5),
)
