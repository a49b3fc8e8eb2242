"""The service's one settings object, read from ``SCORING_*`` environment variables.

Every field is tied to exactly one environment variable; ``README.md`` lists them all
(a test keeps the two in step). pydantic-settings reads and validates them: a value of the
wrong type, out of its range, or a pipeline that does not exist stops a command at start
with one line per bad setting (:func:`problems`), instead of surfacing later as a retry loop.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.pipelines import CANDIDATES
from models.release import ReleaseConfig
from stream.usecases import UseCase, declared

PREFIX = "SCORING_"
NO_CHALLENGER = "none"
"""The pipeline name that turns a use case's challenger off (``SCORING_CHALLENGERS=fraud=none``)."""
DEVELOPMENT_SIGNING_KEY = "insecure-development-key"
"""The published signing key: accepted only while every service is on loopback (see :class:`Settings`)."""


_OWN_KAFKA_PROPERTIES = ("bootstrap.servers", "security.protocol")
"""librdkafka properties that settings of their own give (as do ``sasl.*`` and ``ssl.*``)."""


def _setting(default: Any, doc: str, **bounds: Any) -> Any:
    return Field(default=default, description=doc, **bounds)


class Settings(BaseSettings):
    """Typed, frozen configuration of a deployment.

    Examples
    --------
    >>> s = Settings.from_env({"SCORING_NAMESPACE": "t1", "SCORING_BATCH_SIZE": "50"})
    >>> s.topic("predictions.fraud"), s.batch_size
    ('t1.predictions.fraud', 50)
    >>> s.key("entity", "acc-1")
    't1:entity:acc-1'
    >>> Settings.defaults() == Settings.from_env({})
    True
    >>> try:
    ...     Settings.from_env({"SCORING_CHALLENGERS": "fraud=nope"})
    ... except ValidationError as refused:
    ...     problems(refused)[0][:52]
    'SCORING_CHALLENGERS: fraud: unknown pipeline "nope" '
    """

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="ignore")

    kafka_bootstrap: str = _setting("127.0.0.1:9092", "Kafka bootstrap servers.", min_length=1)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = _setting(
        "PLAINTEXT",
        "How every Kafka client connects: `PLAINTEXT`, `SSL` (TLS), `SASL_PLAINTEXT` or `SASL_SSL` "
        "(SASL over TLS).",
    )
    kafka_sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = _setting(
        "", "SASL mechanism, required with `SASL_*`: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`."
    )
    kafka_sasl_username: str = _setting("", "SASL user name, required with `SASL_*`.")
    kafka_sasl_password: SecretStr = _setting(SecretStr(""), "SASL password, required with `SASL_*`.")
    kafka_ssl_ca_file: str = _setting(
        "",
        "PEM file of the CA certificates the brokers' certificates are checked against (with `SSL` "
        "or `SASL_SSL`); empty: the system's CAs.",
    )
    kafka_ssl_cert_file: str = _setting(
        "",
        "PEM certificate of the client, for brokers that authenticate clients by TLS "
        "(with `SCORING_KAFKA_SSL_KEY_FILE`).",
    )
    kafka_ssl_key_file: str = _setting("", "PEM private key of `SCORING_KAFKA_SSL_CERT_FILE` (unencrypted).")
    kafka_options: str = _setting(
        "",
        "librdkafka properties every Kafka client of the service applies last, over its own: a JSON "
        'object, e.g. `{"client.rack": "eu-1a"}` (README: Settings); empty: none.',
    )
    redis_url: str = _setting(
        "redis://127.0.0.1:6379/0",
        "Redis holding entity state and pending labels; `redis://:PASSWORD@host:port/db` for AUTH "
        "(`USER:PASSWORD@` for an ACL user), `rediss://` for TLS.",
        min_length=1,
    )
    redis_ca_file: str = _setting(
        "",
        "PEM file of the CA certificates a `rediss://` server's certificate is checked against; "
        "empty: the system's CAs.",
    )
    redis_cluster: bool = _setting(
        False,
        "`SCORING_REDIS_URL` names a node (any) of a Redis Cluster: keys carry hash tags, and every "
        "script call touches one slot (README: Redis Cluster).",
    )
    redis_cluster_buckets: int = _setting(
        16,
        "Hash-tag buckets of each use case on a Redis Cluster (an entity's state and its events live "
        "in its bucket's slot); fixed for a deployment's data: another number moves every entity.",
        ge=1,
        le=256,
    )
    namespace: str = _setting(
        "",
        "Prefix of every topic (`X.<topic>`), the consumer group and every Redis key (`X:`).",
        pattern=r"^[A-Za-z0-9_-]*$",
    )
    use_cases_file: str = _setting(
        "",
        "TOML file declaring use cases' features, label policy and pipelines; each use case "
        "it declares replaces the built-in declaration (README: Declaring a use case).",
    )
    label_ttl_seconds: int = _setting(7 * 24 * 3600, "How long a scored event waits for its label.", gt=0)
    label_wait_seconds: int = _setting(
        300, "How long a label whose event is not scored yet waits before it is `unknown_event`.", ge=0
    )
    entity_ttl_seconds: int = _setting(
        30 * 24 * 3600, "Idle time after which an entity's feature state is forgotten.", gt=0
    )
    max_event_age_seconds: int = _setting(
        7 * 24 * 3600, "Events older than this (by `ts`) are dead-lettered as `late_event`; 0 disables.", ge=0
    )
    max_clock_skew_seconds: int = _setting(
        300, "Events further than this in the future are dead-lettered as `out_of_range`.", ge=0
    )
    group_id: str = _setting("scoring", "Consumer group of the workers (namespaced).", min_length=1)
    topic_partitions: int = _setting(4, "Partitions of the topics the worker creates.", gt=0)
    session_timeout_seconds: float = _setting(
        10.0, "Consumer group session timeout (use 2 on the local Tansu broker).", gt=0
    )
    heartbeat_interval_seconds: float = _setting(
        3.0, "Consumer group heartbeat interval (use 0.5 on the local Tansu broker).", gt=0
    )
    batch_size: int = _setting(2000, "Most messages the worker consumes and processes together.", gt=0)
    batch_window_seconds: float = _setting(0.005, "Longest the worker waits to fill a batch.", ge=0)
    fetch_max_wait_ms: int = _setting(5, "Longest a consumer fetch waits for data on the broker.", ge=0)
    champions: str = _setting(
        "",
        "Overrides of the pipeline each use case starts serving (`use case=pipeline,...`; "
        "default: the use case's declaration, see README: Declaring a use case).",
    )
    challengers: str = _setting(
        "",
        "Overrides of the pipeline learning in shadow beside each champion "
        f"(`use case=pipeline,...`; `use case={NO_CHALLENGER}` for none).",
    )
    promotion_min_labels: int = _setting(
        5000, "Labels a challenger must be tested on (after a 1,000-label warm-up) before it can win.", gt=0
    )
    promotion_alpha: float = _setting(
        0.01, "Nominal false-promotion rate of the champion/challenger test (see README: Models).", gt=0, lt=1
    )
    estimate_threshold: float = _setting(
        0.5,
        "Score from which a fraud event counts as flagged (estimated and realized precision and recall).",
        gt=0,
        lt=1,
    )
    estimate_window: int = _setting(
        5000,
        "Scored events (and labels) over which the served scores' quality is estimated (and realized).",
        ge=100,
    )
    estimate_drop: float = _setting(
        0.05,
        "Fall of the estimated ROC AUC below its usual level that opens an `estimated_quality_drop` alert.",
        gt=0,
        lt=1,
    )
    gate_tolerance: float = _setting(
        0.05,
        "A candidate version goes live only if its mean loss on the labels since the live version "
        "went live is at most this much (relative) above the live version's (README: Release).",
        ge=0,
    )
    gate_min_labels: int = _setting(200, "Labels of evidence the gate needs to judge a candidate.", ge=1)
    first_version_min_labels: int = _setting(
        1000,
        "Labels learned before the first learned version may serve, until a version passed the "
        "gate or was bootstrapped.",
        ge=0,
    )
    rollback_alpha: float = _setting(
        0.01, "Error rate of the watch's test that rolls live versions back (README: Release).", gt=0, lt=1
    )
    rollback_min_labels: int = _setting(
        100, "Labels of events served by newer versions before the watch may roll them back.", ge=1
    )
    rollback_confirm_labels: int = _setting(
        2000, "Labels after which, undecided, the watch takes the live version as its new reference.", ge=1
    )
    canary: str = _setting(
        "",
        "Fraction of entities a version that passed the gate serves first, per use case "
        "(`use case=fraction,...`, e.g. `fraud=0.1`; default none: it serves every entity at once).",
    )
    canary_labels: int = _setting(
        500, "Labels of events a canary served after which, not found worse, it serves every entity.", ge=1
    )
    model_signing_key: str = _setting(
        DEVELOPMENT_SIGNING_KEY,
        "HMAC key signing model snapshots and checkpoints; the default, published, development key is "
        "refused unless the broker and Redis are on loopback and the API listens there "
        "(README: Secure connections).",
        min_length=1,
    )
    pii_key: SecretStr = _setting(
        SecretStr(""),
        "HMAC-SHA256 key of personal data: when set, entity ids (and the values an entity's `new_value` "
        "features remember) are stored in Redis only as keyed hashes (README: Personal data), and a "
        "declared `categorical` on such a field is refused at start; empty: stored as they are. "
        "Keep it for as long as Redis keeps state: another key makes every entity new.",
    )
    model_publish_seconds: float = _setting(
        1.0, "The learner publishes a new model version and checkpoints at most this often.", ge=0
    )
    model_poll_seconds: float = _setting(0.5, "How often a worker checks for a new live model version.", gt=0)
    model_versions_kept: int = _setting(1000, "Model versions (snapshot and record) kept for rollback.", gt=0)
    learner_lease_seconds: float = _setting(
        5.0, "A learner that stops renewing its lease for this long is replaced by another worker's.", gt=0
    )
    learner_niceness: int = _setting(
        10,
        "Niceness the learner processes add to the worker's (0: none, up to 19): when the cores are "
        "busy, scoring runs first and learning takes what is left.",
        ge=0,
        le=19,
    )
    journal_retention_seconds: int = _setting(
        60, "How long the learner keeps journal entries it has checkpointed (for audits and replays).", ge=0
    )
    journal_max_entries: int = _setting(
        2_000_000, "Cap of each journal: if the learner falls this far behind, the oldest entries go.", gt=0
    )
    metrics_port: int = _setting(
        9108, "Port of the worker's Prometheus `/metrics`; 0 disables.", ge=0, le=65535
    )
    api_host: str = _setting(
        "127.0.0.1",
        "Address `scoring api` listens on; without SCORING_API_TOKEN only a loopback address is accepted.",
        min_length=1,
    )
    api_port: int = _setting(8000, "Port `scoring api` listens on.", ge=1, le=65535)
    api_token: str = _setting(
        "",
        "Bearer token every endpoint of `scoring api` but /healthz and /readyz requires (empty: no "
        "token, loopback only).",
    )
    log_level: str = _setting(
        "INFO",
        "Log level of the worker, its learner processes and the API "
        "(plain lines on stderr: time, level, logger, message).",
        pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$",
    )
    state_dir: str = _setting(
        ".scoring", "Folder of the local stack (`scoring up`): data, logs, pids.", min_length=1
    )

    def release(self, use_case: str) -> ReleaseConfig:
        """The gate's, the watch's and the canary's parameters for the learner of ``use_case``."""
        return ReleaseConfig(
            tolerance=self.gate_tolerance,
            min_labels=self.gate_min_labels,
            first_labels=self.first_version_min_labels,
            alpha=self.rollback_alpha,
            watch_min_labels=self.rollback_min_labels,
            confirm_labels=self.rollback_confirm_labels,
            canary_fraction=self.canary_fractions().get(use_case, 0.0),
            canary_labels=self.canary_labels,
        )

    def canary_fractions(self) -> dict[str, float]:
        """Use case -> fraction of entities its canaries serve (use cases without one left out).

        >>> Settings(canary="fraud=0.1").canary_fractions()
        {'fraud': 0.1}
        """
        return _fractions(self.canary, self.use_cases)

    @property
    def kafka_client_options(self) -> dict[str, str]:
        """``SCORING_KAFKA_OPTIONS`` as librdkafka takes them: every value a string.

        >>> Settings(kafka_options='{"enable.idempotence": false, "linger.ms": 20}').kafka_client_options
        {'enable.idempotence': 'false', 'linger.ms': '20'}
        """
        options = json.loads(self.kafka_options) if self.kafka_options else {}
        return {
            name: json.dumps(value) if isinstance(value, bool) else str(value)
            for name, value in options.items()
        }

    @field_validator("kafka_options")
    @classmethod
    def _librdkafka_properties(cls, value: str) -> str:
        if not value:
            return value
        try:
            options = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc})") from exc
        if not isinstance(options, dict):
            raise ValueError('a JSON object of librdkafka properties, e.g. {"client.rack": "eu-1a"}')
        for name, option in options.items():
            if not isinstance(option, str | int | float | bool):
                raise ValueError(f"{name}: a string, number or boolean")
            if name in _OWN_KAFKA_PROPERTIES or name.startswith(("sasl.", "ssl.")):
                raise ValueError(f"{name}: given by a SCORING_KAFKA_* setting of its own")
        return value

    @field_validator("kafka_ssl_ca_file", "kafka_ssl_cert_file", "kafka_ssl_key_file", "redis_ca_file")
    @classmethod
    def _file_exists(cls, value: str) -> str:
        if value and not Path(value).is_file():
            raise ValueError("no such file")
        return value

    @model_validator(mode="after")
    def _kafka_security_complete(self) -> Settings:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        given = {
            "kafka_sasl_mechanism": self.kafka_sasl_mechanism,
            "kafka_sasl_username": self.kafka_sasl_username,
            "kafka_sasl_password": self.kafka_sasl_password.get_secret_value(),
        }
        for name, value in given.items():
            if sasl and not value:
                raise SettingRefused(
                    name, f"required with SCORING_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}"
                )
            if value and not sasl:
                raise SettingRefused(
                    name, _IGNORED.format(self.kafka_security_protocol, "SASL_PLAINTEXT or SASL_SSL")
                )
        tls = self.kafka_security_protocol.endswith("SSL")
        for name in ("kafka_ssl_ca_file", "kafka_ssl_cert_file", "kafka_ssl_key_file"):
            if getattr(self, name) and not tls:
                raise SettingRefused(name, _IGNORED.format(self.kafka_security_protocol, "SSL or SASL_SSL"))
        if bool(self.kafka_ssl_cert_file) != bool(self.kafka_ssl_key_file):
            missing = "kafka_ssl_key_file" if self.kafka_ssl_cert_file else "kafka_ssl_cert_file"
            raise SettingRefused(missing, "a client certificate and its key go together: set both or neither")
        return self

    @model_validator(mode="after")
    def _redis_ca_for_tls(self) -> Settings:
        if self.redis_ca_file and urlsplit(self.redis_url).scheme != "rediss":
            raise SettingRefused("redis_ca_file", "applies to a rediss:// SCORING_REDIS_URL only (TLS)")
        return self

    @model_validator(mode="after")
    def _development_key_on_loopback_only(self) -> Settings:
        if self.model_signing_key != DEVELOPMENT_SIGNING_KEY:
            return self
        remote = [
            f"{env_name(name)} names {host}"
            for name, hosts in self.service_hosts().items()
            for host in hosts
            if not is_loopback(host)
        ]
        if not is_loopback(self.api_host):  # never "": the setting has a minimum length
            remote.append(f"{env_name('api_host')} listens on {self.api_host}")
        if remote:
            raise SettingRefused(
                "model_signing_key",
                f"the published development key is allowed only while every service is on loopback "
                f"({'; '.join(remote)}): anyone who can write to Redis could make every worker unpickle "
                "their bytes. Set a secret of your own, e.g. `openssl rand -hex 32`",
            )
        return self

    @field_validator("use_cases_file")
    @classmethod
    def _declarations_valid(cls, value: str) -> str:
        declared(value)  # a DeclarationError (a ValueError) says every problem
        return value

    @field_validator("champions", "challengers")
    @classmethod
    def _pipelines_exist(cls, value: str, info: ValidationInfo) -> str:
        if "use_cases_file" in info.data:  # else the file was refused: that is the problem to show
            _choose(str(info.field_name), value, declared(info.data["use_cases_file"]))
        return value

    @field_validator("canary")
    @classmethod
    def _fractions_valid(cls, value: str, info: ValidationInfo) -> str:
        if "use_cases_file" in info.data:
            _fractions(value, declared(info.data["use_cases_file"]))
        return value

    @model_validator(mode="after")
    def _labels_wait_for_maturity(self) -> Settings:
        for use_case in self.use_cases:
            maturity = use_case.labels.maturity_seconds
            if maturity is not None and maturity > self.label_ttl_seconds:
                raise ValueError(
                    f"{use_case.name} matures events after {maturity:g} s, past SCORING_LABEL_TTL_SECONDS "
                    f"({self.label_ttl_seconds} s): its scored events would be forgotten first"
                )
        return self

    @model_validator(mode="after")
    def _personal_fields_hashed(self) -> Settings:
        if self.pii_secret is None:
            return self
        for use_case in self.use_cases:
            if clear := use_case.personal_in_clear:
                named = ", ".join(f"{feature} (categorical on {field})" for feature, field in clear)
                raise SettingRefused(
                    "pii_key",
                    f"{use_case.name} declares {named}: with the key set, its personal fields reach "
                    "Redis only as keyed hashes, and a category would keep their values in clear in "
                    "the waiting records, the journal and the model; remove those features, or "
                    "leave the key empty",
                )
        return self

    @model_validator(mode="after")
    def _release_consistent(self) -> Settings:
        for use_case in self.use_cases:  # ReleaseConfig says what does not fit, e.g. a confirmation
            self.release(use_case.name)  # before a decision, or a canary of every entity
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``SCORING_<FIELD>`` variables (``os.environ`` by default), defaults for the rest.

        With ``environ`` given, ``os.environ`` is not read at all.
        """
        if environ is None:
            return cls()
        given = {name: environ[env_name(name)] for name in cls.model_fields if env_name(name) in environ}
        return cls(**{**_DEFAULTS, **given})  # every field given: nothing comes from os.environ

    @classmethod
    def defaults(cls) -> Settings:
        """Every setting at its default, whatever the environment says."""
        return cls.from_env({})

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied, validated like the environment's values."""
        return type(self).model_validate({**self.model_dump(), **changes})

    def environment(self) -> dict[str, str]:
        """The environment that gives a child process exactly these settings (secrets included)."""
        return {env_name(name): str(_revealed(value)) for name, value in self.model_dump().items()}

    def child_environment(self) -> dict[str, str]:
        """A child process's whole environment: this process's, these settings, and a
        ``PYTHONPATH`` that finds this very code (:func:`code_path`)."""
        return {**os.environ, **self.environment(), "PYTHONPATH": code_path()}

    def topic(self, name: str) -> str:
        """The namespaced name of a logical topic."""
        return f"{self.namespace}.{name}" if self.namespace else name

    def key(self, *parts: str) -> str:
        """A namespaced Redis key. The parts are key syntax: ids go through :mod:`stream.runtime.keys`."""
        joined = ":".join(parts)
        return f"{self.namespace}:{joined}" if self.namespace else joined

    @property
    def use_cases(self) -> tuple[UseCase[Any, Any], ...]:
        """The use cases as this deployment declares them (``use_cases_file``, else the built-in)."""
        return declared(self.use_cases_file)

    @property
    def consumer_group(self) -> str:
        return self.topic(self.group_id)

    @property
    def signing_key(self) -> bytes:
        return self.model_signing_key.encode()

    @property
    def pii_secret(self) -> bytes | None:
        """The key entity ids are hashed with in Redis (:mod:`stream.runtime.keys`); ``None``: none."""
        key = self.pii_key.get_secret_value()
        return key.encode() if key else None

    def service_hosts(self) -> dict[str, list[str]]:
        """Setting -> the hosts it sends this deployment's clients to (``""``: a local socket).

        >>> Settings(kafka_bootstrap="k1:9092,[::1]:9093", redis_url="redis://:pw@cache/0",
        ...          model_signing_key="a secret").service_hosts()
        {'kafka_bootstrap': ['k1', '::1'], 'redis_url': ['cache']}
        """
        return {
            "kafka_bootstrap": [_broker_host(server) for server in self.kafka_bootstrap.split(",")],
            "redis_url": [urlsplit(self.redis_url).hostname or ""],
        }

    def pipelines(self, role: str) -> dict[str, str | None]:
        """Use case -> pipeline of ``role`` (``"champions"`` or ``"challengers"``): the declaration's,
        overridden by the setting; ``None`` for no challenger.

        >>> Settings(challengers="fraud=hoeffding_tree").pipelines("challengers")["fraud"]
        'hoeffding_tree'
        >>> Settings(challengers="demand=none").pipelines("challengers")["demand"] is None
        True
        """
        return _choose(role, getattr(self, role), self.use_cases)


def _choose(role: str, value: str, use_cases: tuple[UseCase[Any, Any], ...]) -> dict[str, str | None]:
    overrides = _assignments(value, use_cases, "pipeline")
    chosen: dict[str, str | None] = {}
    for use_case in use_cases:
        default = use_case.champion if role == "champions" else use_case.challenger
        name = overrides.get(use_case.name, default)
        if name == NO_CHALLENGER and role == "challengers":
            name = None
        if name is not None and name not in CANDIDATES[use_case.task]:
            known = ", ".join(CANDIDATES[use_case.task])
            raise ValueError(f'{use_case.name}: unknown pipeline "{name}" (one of: {known})')
        chosen[use_case.name] = name
    return chosen


def _assignments(value: str, use_cases: tuple[UseCase[Any, Any], ...], what: str) -> dict[str, str]:
    """``use case=value,...`` as a dict, every use case known."""
    pairs = [item.split("=", 1) for item in value.replace(" ", "").split(",") if item]
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"expected `use case={what},...`")
    unknown = [name for name, _ in pairs if name not in {uc.name for uc in use_cases}]
    if unknown:
        known = ", ".join(uc.name for uc in use_cases)
        raise ValueError(f"unknown use case {', '.join(unknown)} (one of: {known})")
    return dict(pairs)


def _fractions(value: str, use_cases: tuple[UseCase[Any, Any], ...]) -> dict[str, float]:
    fractions = {}
    for name, text in _assignments(value, use_cases, "fraction").items():
        try:
            fractions[name] = float(text)
        except ValueError:
            raise ValueError(f"{name}: {text!r} is not a fraction") from None
        if not 0.0 <= fractions[name] < 1.0:
            raise ValueError(f"{name}: a canary serves a fraction of entities within [0, 1), not {text}")
    return {name: f for name, f in fractions.items() if f}


_DEFAULTS: dict[str, Any] = {name: f.default for name, f in Settings.model_fields.items()}
_IGNORED = "would be ignored with SCORING_KAFKA_SECURITY_PROTOCOL={} (it applies to {})"


def code_path() -> str:
    """The ``PYTHONPATH`` of a child process that must run this very code, wherever this
    process found it: the folder holding the ``stream`` package first, then this process's own."""
    here = str(Path(__file__).resolve().parents[1])
    return os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)


class SettingRefused(ValueError):
    """A check across settings that names the one setting to change (see :func:`problems`)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field_name = field_name


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an IP address; ``""`` for a local socket) is this machine.

    Names are not resolved: only ``localhost`` counts, since DNS may change its answer.

    >>> [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "", "10.0.0.1", "kafka", "0.0.0.0")]
    [True, True, True, True, False, False, False]
    """
    if host in ("", "localhost") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _broker_host(server: str) -> str:
    """The host of a bootstrap server: ``host:port``, ``[v6]:port`` or ``host``, perhaps after ``proto://``."""
    address = server.strip().rpartition("://")[2]
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit():
        host = address
    return host.strip("[]")


def _revealed(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def env_name(field_name: str) -> str:
    return PREFIX + field_name.upper()


def documented_settings() -> list[tuple[str, Any, str]]:
    """(environment variable, default, description) of every setting."""
    return [
        (env_name(name), _revealed(f.default), f.description or "")
        for name, f in Settings.model_fields.items()
    ]


def problems(refused: ValidationError) -> list[str]:
    """One line per setting the settings refused, naming its variable and the value given."""
    lines = []
    for error in refused.errors(include_url=False):
        blamed = error.get("ctx", {}).get("error")
        if isinstance(blamed, SettingRefused):
            where = env_name(blamed.field_name)
        else:
            where = env_name(str(error["loc"][0])) if error["loc"] else "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["loc"] and "input" in error:
            message += f" (got {error['input']!r})"
        lines += [f"{where}: {line}" for line in message.splitlines()]  # a declaration file: one per problem
    return lines
