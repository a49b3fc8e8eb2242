"""End to end: every query of the Grafana dashboard returns data from a real Prometheus.

Debian's ``prometheus`` binary (``apt-get install prometheus``; ``.ci/run`` installs it; the
test is skipped where it is not on PATH) scrapes a real ``scoring worker`` every second
during a short simulated stream. Then every PromQL expression of
``deploy/grafana/dashboards/scoring.json`` is run through Prometheus's HTTP API
(``/api/v1/query``) as Grafana sends it on the dashboard's defaults: the ``model`` variable on
"All" (a panel repeated by model once per model), ``$__rate_interval`` as Grafana computes it
for this scrape interval. Each must return at least one series. The dashboard is read by
``tests/dashboard.py``, as the unit test that checks its metric names reads it. A real
``scoring api`` beside the worker, asked to score a few events, is scraped with its bearer
token, as a deployment's Prometheus would scrape it, for the API's panels.

The stream holds what every panel shows, nothing exempted: malformed payloads (dead
letters), transactions an hour older than their account's latest (out-of-order events), and
a concept drift (the fraud labels of the last third of the transactions flipped, as in
``test_lifecycle.py``) that opens an alert and makes the versions served since the watch's
reference worse than it (a rollback). Demand's versions go through a canary (30 % of the
products, concluded after 100 of its labels), so both arms are served. The worker starts
while its Redis refuses connections (a relay opened once the worker has said it waits), so
that its retries count.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from stream.settings import Settings
from stream.tools import localstack, simulator
from stream.tools.demo import stop
from stream.usecases import FRAUD
from tests.apiclient import api_process, transaction
from tests.apiclient import wait_for as answering
from tests.dashboard import metric_names, rate_interval, sent_exprs, variable_exprs
from tests.e2e.support import START, event_id, send_on_schedule, wait_until, watched_worker

PROMETHEUS_BINARY = shutil.which("prometheus")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        PROMETHEUS_BINARY is None,
        reason="the `prometheus` binary is not on PATH: apt-get install prometheus (.ci/run does)",
    ),
]

SCRAPE_SECONDS = 1.0
"""How often the test's Prometheus scrapes the worker (docker-compose's scrapes every 5 s)."""
GRAFANA_INTERVAL_SECONDS = 300 / 1000
"""Grafana's ``$__interval`` for the last 5 minutes on a 1,000-point panel (raised to the scrape
interval by Grafana): with it, ``$__rate_interval`` is 4 scrapes."""

CONFIG = simulator.SimulationConfig(
    transactions=2000, sales=1000, rate=350, malformed_rate=0.01, label_delay=(0.5, 1.5), seed=4
)
FLIPPED_FROM = 1300
"""Fraud labels are flipped from this transaction on: after the concept-drift detector's
1,000-label warm-up and the first learned versions, early enough for the drift alert and the
watch's rollback within the stream."""
OUT_OF_ORDER_EVERY = 100
"""A transaction that brings the stream to a multiple of this many messages is followed by a
copy of it an hour older (16 in all): out-of-order events."""


class Prometheus:
    """A ``prometheus`` process of the test's own: its HTTP API."""

    def __init__(self, url: str) -> None:
        self.url = url

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
            document = json.loads(response.read())
        assert document["status"] == "success", document
        return document["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` at ``at`` (else now): one ``{metric, value}`` per series."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = self.api("query", **params)
        assert data["resultType"] == "vector", (expr, data)
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The value of a one-series ``expr`` now (``None`` without data)."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, expected: float) -> None:
        """Until the one-series ``expr`` is ``expected`` now."""
        wait_until(lambda: self.value(expr) == expected, what=f"prometheus to scrape {expr} = {expected:g}")

    def scraped_instant(self) -> float:
        """Now, once the latest scrape of the worker succeeded (after a failed one, its series are stale)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            at = time.time()
            if self.query('up{job="scoring"} == 1', at=at):
                return at
            time.sleep(0.2)
        raise AssertionError("prometheus could not scrape the worker for 30 s")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False


@pytest.fixture
def api_settings(worker_settings: Settings) -> Settings:
    """A ``scoring api`` beside the worker, on a free port, behind a token."""
    return worker_settings.replace(api_port=localstack.free_port(), api_token="e2e-scrape-token")


@pytest.fixture
def prometheus(worker_settings: Settings, api_settings: Settings, tmp_path: Path) -> Iterator[Prometheus]:
    """Prometheus on a free loopback port, scraping every second the worker of ``worker_settings``,
    and the API of ``api_settings`` with its token.

    Its configuration and data live in a temporary folder of its own, removed afterwards (its
    log stays in the test's ``tmp_path``); nothing of a system Prometheus is used.
    """
    assert PROMETHEUS_BINARY is not None  # else skipped
    port = localstack.free_port()
    log = tmp_path / "prometheus.log"
    with tempfile.TemporaryDirectory(prefix="prometheus-") as folder:
        config = Path(folder) / "prometheus.yml"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {SCRAPE_SECONDS:g}s\n"
            f"  scrape_timeout: {SCRAPE_SECONDS:g}s\n"
            f"  evaluation_interval: {SCRAPE_SECONDS:g}s\n"
            "scrape_configs:\n"
            "  - job_name: scoring\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{worker_settings.metrics_port}']\n"
            "  - job_name: api\n"
            "    authorization:\n"
            f"      credentials: {api_settings.api_token}\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{api_settings.api_port}']\n"
        )
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [
                    PROMETHEUS_BINARY,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={Path(folder) / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = Prometheus(f"http://127.0.0.1:{port}")
        try:
            wait_until(
                lambda: process.poll() is not None or server.ready(), timeout=30, what="prometheus to start"
            )
            assert process.poll() is None, log.read_text()[-3000:]
            yield server
        finally:
            stop(process, signal.SIGTERM)


def test_every_dashboard_query_returns_data(
    worker_settings: Settings, api_settings: Settings, prometheus: Prometheus, tmp_path: Path
) -> None:
    messages = stream()
    events = sum(m.kind in ("event", "out_of_order") for m in messages)
    labels = sum(m.kind == "label" for m in messages)
    log = tmp_path / "worker.log"
    with RedisRelay(worker_settings.redis_url) as relay:
        # A first learned version after 500 labels (2,000 by default: all of the transactions).
        settings = worker_settings.replace(
            redis_url=relay.url, first_version_min_labels=500, canary="demand=0.3", canary_labels=100
        )
        with watched_worker(settings, log) as worker, api_process(api_settings, tmp_path / "api.log") as api:
            wait_until(lambda: f"{relay.address} does not answer" in log.read_text(), what="a retry")
            relay.open()
            send_on_schedule(settings, messages)
            prometheus.wait_for("sum(scoring_predictions_total)", events)
            asked = ask_the_api(api, api_settings)
            prometheus.wait_for("sum(scoring_api_requests_total)", asked)
            prometheus.wait_for("sum(scoring_learner_labels_learned)", labels)  # the flipped ones too
            window = rate_interval(SCRAPE_SECONDS, GRAFANA_INTERVAL_SECONDS)
            wait_until(  # two scrapes of the API's series in the window: a rate
                lambda: bool(prometheus.query(f"rate(scoring_api_requests_total[{window}])")),
                what="prometheus to scrape the API twice",
            )
            at = prometheus.scraped_instant()
            canary_served = prometheus.query('scoring_predictions_total{model="demand", arm="canary"}', at=at)

            values = {}
            for name, selector in variable_exprs():
                values[name] = prometheus.api(f"label/{name}/values", **{"match[]": selector})
                assert sorted(values[name]) == ["demand", "fraud"], name
            empty = [
                f"{title}: {expr}{_absent(prometheus, expr)}"
                for title, expr in sent_exprs(values, window)
                if not prometheus.query(expr, at=at)
            ]
    assert worker.returncode == 0, log.read_text()[-3000:]
    assert not empty, "expressions without data:\n" + "\n".join(empty)
    assert canary_served, "no demand prediction was served by a canary"


def ask_the_api(url: str, settings: Settings) -> int:
    """Ask the API to score a few transactions, one of them malformed; how many requests."""
    answering(f"{url}/readyz")
    payloads = [transaction(f"api-{i}", account=f"api-acc-{i}") for i in range(5)] + [b"{"]
    headers = {"Authorization": f"Bearer {settings.api_token}"}
    for payload in payloads:
        answer = httpx.post(f"{url}/v1/score/fraud", content=payload, headers=headers, timeout=10)
        assert answer.status_code == (422 if payload == b"{" else 200), answer.text
    return len(payloads)


def _absent(prometheus: Prometheus, expr: str) -> str:
    """Which metrics of ``expr`` have no series at all now, if any."""
    absent = sorted(name for name in metric_names(expr) if not prometheus.query(f"count({name})"))
    return f" (no series of {', '.join(absent)})" if absent else ""


def stream() -> list[simulator.Message]:
    """The simulated stream of :data:`CONFIG`, with what a short stream lacks for every panel."""
    messages = list(simulator.generate(CONFIG, start=START))
    transactions = [event_id(m) for m in messages if m.kind == "event" and m.topic == FRAUD.event_topic]
    flipped = set(transactions[FLIPPED_FROM:])
    out: list[simulator.Message] = []
    for message in messages:
        if message.kind == "label" and event_id(message) in flipped:
            message = dataclasses.replace(message, value=_flip(message.value))
        out.append(message)
        if (
            message.kind == "event"
            and message.topic == FRAUD.event_topic
            and len(out) % OUT_OF_ORDER_EVERY == 0
        ):
            out.append(_an_hour_older(message))
    kinds = Counter(m.kind for m in out)
    assert kinds["malformed"] > 0 and kinds["out_of_order"] > 0 and len(flipped) >= 500, kinds
    return out


def _flip(label: bytes) -> bytes:
    doc = orjson.loads(label)
    return orjson.dumps({**doc, "is_fraud": not doc["is_fraud"]})


def _an_hour_older(event: simulator.Message) -> simulator.Message:
    """Another transaction of the same account, an hour older than ``event`` (unlabelled)."""
    payload = orjson.loads(event.value)
    ts = payload["ts"]  # epoch milliseconds or ISO-8601
    earlier = (
        ts - 3_600_000
        if isinstance(ts, int)
        else (dt.datetime.fromisoformat(ts) - dt.timedelta(hours=1)).isoformat()
    )
    copy = {**payload, "event_id": f"{payload['event_id']}-older", "ts": earlier}
    return dataclasses.replace(event, value=orjson.dumps(copy), kind="out_of_order")


class RedisRelay:
    """A TCP relay to Redis that refuses connections until it is opened: an outage to start in."""

    def __init__(self, redis_url: str) -> None:
        parts = urllib.parse.urlsplit(redis_url)
        assert parts.hostname and parts.port, redis_url
        self._target = (parts.hostname, parts.port)
        self.address = f"127.0.0.1:{localstack.free_port()}"
        credentials = parts.netloc.rpartition("@")[0]
        self.url = urllib.parse.urlunsplit(
            parts._replace(netloc=f"{credentials}@{self.address}" if credentials else self.address)
        )
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def open(self) -> None:
        host, port = self.address.split(":")
        server = socket.create_server((host, int(port)))
        server.settimeout(0.2)
        self._sockets.append(server)
        self._start(self._accept, server)

    def _start(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self, server: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.create_connection(self._target)
            self._sockets += [client, upstream]
            self._start(self._pipe, client, upstream)
            self._start(self._pipe, upstream, client)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def __enter__(self) -> RedisRelay:
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)
