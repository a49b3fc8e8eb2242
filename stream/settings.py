"""The service's one settings object, read from ``SCORING_*`` environment variables.

Every field is tied to exactly one environment variable; ``README.md`` lists them all
(a test keeps the two in step).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PREFIX = "SCORING_"


def _setting(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Settings:
    """Typed, frozen configuration of a deployment.

    Examples
    --------
    >>> s = Settings.from_env({"SCORING_NAMESPACE": "t1", "SCORING_BATCH_SIZE": "50"})
    >>> s.topic("predictions.fraud"), s.batch_size
    ('t1.predictions.fraud', 50)
    >>> s.key("entity", "acc-1")
    't1:entity:acc-1'
    """

    kafka_bootstrap: str = _setting("127.0.0.1:9092", "Kafka bootstrap servers.")
    redis_url: str = _setting("redis://127.0.0.1:6379/0", "Redis holding entity state and pending labels.")
    namespace: str = _setting(
        "", "Prefix of every topic (`X.<topic>`), the consumer group and every Redis key (`X:`)."
    )
    label_ttl_seconds: int = _setting(7 * 24 * 3600, "How long a scored event waits for its label.")
    label_wait_seconds: int = _setting(
        300, "How long a label whose event is not scored yet waits before it is `unknown_event`."
    )
    entity_ttl_seconds: int = _setting(
        30 * 24 * 3600, "Idle time after which an entity's feature state is forgotten."
    )
    max_event_age_seconds: int = _setting(
        7 * 24 * 3600, "Events older than this (by `ts`) are dead-lettered as `late_event`; 0 disables."
    )
    max_clock_skew_seconds: int = _setting(
        300, "Events further than this in the future are dead-lettered as `out_of_range`."
    )
    group_id: str = _setting("scoring", "Consumer group of the workers (namespaced).")
    topic_partitions: int = _setting(4, "Partitions of the topics the worker creates.")
    session_timeout_seconds: float = _setting(
        10.0, "Consumer group session timeout (use 2 on the local Tansu broker)."
    )
    heartbeat_interval_seconds: float = _setting(
        3.0, "Consumer group heartbeat interval (use 0.5 on the local Tansu broker)."
    )
    batch_size: int = _setting(2000, "Most messages the worker consumes and processes together.")
    batch_window_seconds: float = _setting(0.005, "Longest the worker waits to fill a batch.")
    fetch_max_wait_ms: int = _setting(5, "Longest a consumer fetch waits for data on the broker.")
    champions: str = _setting(
        "fraud=logistic_regression_adam,demand=log_linear_regression",
        "Pipeline each use case starts serving (`use case=candidate`, see `models/pipelines.py`).",
    )
    challengers: str = _setting(
        "fraud=hoeffding_tree_mc,demand=target_scaled_linear_regression",
        "Pipeline learning in shadow beside each champion; empty for none.",
    )
    promotion_min_labels: int = _setting(
        5000, "Labels a challenger must be tested on (after a 1,000-label warm-up) before it can win."
    )
    promotion_alpha: float = _setting(
        0.01, "Nominal false-promotion rate of the champion/challenger test (see README: Models)."
    )
    model_signing_key: str = _setting(
        "insecure-development-key",
        "HMAC key signing model snapshots and checkpoints; set a secret in production.",
    )
    model_publish_seconds: float = _setting(
        1.0, "The learner publishes a new model version and checkpoints at most this often."
    )
    model_poll_seconds: float = _setting(0.5, "How often a worker checks for a new live model version.")
    model_versions_kept: int = _setting(1000, "Model versions (snapshot and record) kept for rollback.")
    learner_lease_seconds: float = _setting(
        5.0, "A learner that stops renewing its lease for this long is replaced by another worker's."
    )
    journal_retention_seconds: int = _setting(
        60, "How long the learner keeps journal entries it has checkpointed (for audits and replays)."
    )
    journal_max_entries: int = _setting(
        2_000_000, "Cap of each journal: if the learner falls this far behind, the oldest entries go."
    )
    metrics_port: int = _setting(9108, "Port of the worker's Prometheus `/metrics`; 0 disables.")
    log_level: str = _setting("INFO", "Worker log level.")
    state_dir: str = _setting(".scoring", "Folder of the local stack (`scoring up`): data, logs, pids.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``SCORING_<FIELD>`` variables, defaults for the rest."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(env_name(f.name))
            if raw is None:
                continue
            kind: type = type(f.default)
            try:
                values[f.name] = kind(raw)
            except ValueError as exc:
                raise ValueError(f"{env_name(f.name)}={raw!r} is not a valid {kind.__name__}") from exc
        return cls(**values)

    def topic(self, name: str) -> str:
        """The namespaced name of a logical topic."""
        return f"{self.namespace}.{name}" if self.namespace else name

    def key(self, *parts: str) -> str:
        """A namespaced Redis key."""
        joined = ":".join(parts)
        return f"{self.namespace}:{joined}" if self.namespace else joined

    @property
    def consumer_group(self) -> str:
        return self.topic(self.group_id)

    @property
    def signing_key(self) -> bytes:
        return self.model_signing_key.encode()

    def pipelines(self, role: str) -> dict[str, str]:
        """Use case -> pipeline name of ``role`` (``"champions"`` or ``"challengers"``).

        >>> Settings(challengers="fraud=hoeffding_tree").pipelines("challengers")
        {'fraud': 'hoeffding_tree'}
        """
        value: str = getattr(self, role)
        pairs = [item.split("=", 1) for item in value.replace(" ", "").split(",") if item]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError(f"{env_name(role)}={value!r}: expected `use case=pipeline,...`")
        return dict((name, pipeline) for name, pipeline in pairs)


def env_name(field_name: str) -> str:
    return PREFIX + field_name.upper()


def documented_settings() -> list[tuple[str, Any, str]]:
    """(environment variable, default, description) of every setting."""
    return [(env_name(f.name), f.default, f.metadata["doc"]) for f in dataclasses.fields(Settings)]
