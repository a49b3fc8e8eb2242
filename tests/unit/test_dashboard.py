"""The Grafana dashboard and the monitoring stack of docker-compose.yml tell the truth.

Every PromQL expression of ``deploy/grafana/dashboards/scoring.json`` may name only metrics
that ``stream/runtime/metrics.py`` or ``stream/api/metrics.py`` (the API's own) registers
(with the suffixes Prometheus exposes: ``_total`` for
counters, ``_bucket``/``_sum``/``_count`` for histograms), every metric registered there
is on a panel, and the provisioning files and the compose file wire Prometheus, Grafana
and the dashboard together. The YAML files are checked as text, so the checks need no
YAML parser; they are also parsed with PyYAML and checked as structures. The dashboard is
read by ``tests/dashboard.py``, which ``tests/e2e/test_prometheus.py`` shares to run every
expression on a real Prometheus.
"""

from __future__ import annotations

import doctest
import re

import prometheus_client
import pytest
from prometheus_client.metrics import MetricWrapperBase

import stream.api.metrics
import stream.runtime.metrics
import tests.dashboard
from stream.settings import Settings
from tests.dashboard import (
    DASHBOARD,
    DASHBOARDS,
    ROOT,
    dashboard,
    expand,
    exprs,
    metric_names,
    panels,
    rate_interval,
    sent_exprs,
    variable_exprs,
)

COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "deploy/prometheus/prometheus.yml"
DATASOURCES = ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml"
PROVIDERS = ROOT / "deploy/grafana/provisioning/dashboards/dashboards.yml"

# The series a metric family exposes, by family type (``_created`` series left out).
_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def exposed(family: str, kind: str) -> set[str]:
    """The series names a family of this type shows on /metrics."""
    return {family + suffix for suffix in _SUFFIXES[kind]}


def families() -> dict[str, str]:
    """Family name -> type of every metric stream/runtime/metrics.py and stream/api/metrics.py
    define, as the registry holds them."""
    defined = {
        family.name
        for module in (stream.runtime.metrics, stream.api.metrics)
        for value in vars(module).values()
        if isinstance(value, MetricWrapperBase)
        for family in value.describe()
    }
    registered = {family.name: family.type for family in prometheus_client.REGISTRY.collect()}
    assert defined, "stream.runtime.metrics defines no metric?"
    assert defined <= registered.keys(), f"not in the registry: {sorted(defined - registered.keys())}"
    return {name: registered[name] for name in defined}


def known_series() -> dict[str, str]:
    """Series name -> its family, for every metric of the service (:func:`families`)."""
    return {series: name for name, kind in families().items() for series in exposed(name, kind)}


def unknown_names(expr: str) -> set[str]:
    return metric_names(expr) - known_series().keys()


# PromQL reading ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'histogram_quantile(0.99, sum by (le, model) (rate(a_bucket{m=~"$m"}[$__rate_interval])))',
            {"a_bucket"},
        ),
        ("sum by (topic) (rate(b_sum[5m])) / sum by (topic) (rate(b_count[5m]))", {"b_sum", "b_count"}),
        ('c{x="sum(d)"} > bool 0.5 and on (model) group_left e offset 5m', {"c", "e"}),
        ("max without (instance) (f) * 1e3 unless g[1h:5m]", {"f", "g"}),
        ("time() - h", {"h"}),
    ],
)
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_a_made_up_metric_is_caught() -> None:
    assert unknown_names("sum(rate(scoring_events_total[1m]))") == set()
    assert unknown_names("sum(rate(scoring_made_up_total[1m])) / scoring_events_total") == {
        "scoring_made_up_total"
    }
    assert unknown_names("scoring_events") == {"scoring_events"}  # a counter shows _total only
    assert unknown_names("scoring_batch_seconds") == {"scoring_batch_seconds"}  # a histogram: _bucket...


# Grafana's substitutions, as the end-to-end test runs the expressions ----------------------


def test_the_shared_reading_of_the_dashboard_runs_its_examples() -> None:
    assert doctest.testmod(tests.dashboard).failed == 0


@pytest.mark.parametrize(
    ("scrape", "interval", "expected"),
    [
        (5.0, 0.3, "20s"),  # docker-compose's Prometheus, a short range: 4 scrapes
        (5.0, 30.0, "35s"),  # a long range: one point's interval and one scrape
        (1.0, 0.0, "4s"),
        (0.25, 0.1, "1s"),
        (0.3, 0.1, "1200ms"),
    ],
)
def test_rate_interval_is_grafanas(scrape: float, interval: float, expected: str) -> None:
    assert rate_interval(scrape, interval) == expected


def test_every_variable_of_every_expr_has_a_value_on_all() -> None:
    for _, expr in exprs():
        expanded = expand(expr, rate_window="4s")
        assert "$" not in expanded and metric_names(expanded) == metric_names(expr), expr
    assert expand('a{model=~"$model"}[${__rate_interval}]', rate_window="4s") == 'a{model=~".*"}[4s]'
    sent = sent_exprs({"model": ["fraud", "demand"]}, "4s")
    assert len(sent) > len(exprs()) and all("$" not in f"{title} {expr}" for title, expr in sent)
    assert ("Prequential metric: demand", 'scoring_prequential_metric{model=~"demand"}') in sent


# The dashboard against stream/runtime/metrics.py ----------------------------------------------------


def test_every_expr_names_only_metrics_of_stream_metrics() -> None:
    wrong = [
        (where, name) for where, expr in exprs() + variable_exprs() for name in sorted(unknown_names(expr))
    ]
    assert not wrong, f"metrics not defined in stream/runtime/metrics.py or stream/api/metrics.py: {wrong}"
    for where, expr in exprs():
        assert metric_names(expr), f"{where}: {expr!r} selects no metric"


def test_every_metric_of_stream_metrics_is_on_a_panel() -> None:
    series = known_series()
    shown = {series[name] for _, expr in exprs() for name in metric_names(expr) if name in series}
    assert sorted(families().keys() - shown) == []


def test_rates_and_quantiles_are_taken_of_the_right_kind_of_metric() -> None:
    kinds = families()
    series = known_series()
    for where, expr in exprs():
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), where
        for function, name in re.findall(r"\b(rate|irate|increase)\(\s*([A-Za-z_:][\w:]*)", expr):
            assert kinds[series[name]] in ("counter", "histogram"), f"{where}: {function} of a gauge {name}"
            assert re.search(rf"{function}\(\s*{name}(\{{[^}}]*\}})?\[", expr), f"{where}: no range"
        if "histogram_quantile" in expr:
            names = metric_names(expr)
            assert names and all(name.endswith("_bucket") for name in names), where
            assert re.search(r"by \((le|[^)]*, le)\b", expr), f"{where}: quantile not by le"


def test_the_dashboard_is_a_grafana_10_11_dashboard_on_the_provisioned_datasource() -> None:
    board = dashboard()
    assert board["uid"] == "scoring" and board["title"]
    assert 36 <= board["schemaVersion"] <= 41
    uid = _yaml_value(DATASOURCES.read_text(), "uid")
    all_panels = list(panels(board))
    ids = [panel["id"] for panel in all_panels]
    assert len(ids) == len(set(ids))
    for panel in all_panels:
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(target["datasource"]["uid"] == uid for target in panel["targets"])
    for variable in board["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid


def test_the_panels_the_operators_asked_for_are_there() -> None:
    titles = " | ".join(panel.get("title", "") for panel in panels(dashboard())).lower()
    for words in (
        "consumed",
        "dead letters",
        "end-to-end latency",
        "scoring latency",
        "labels by outcome",
        "label delay",
        "served vs published",
        "prequential",
        "promotion",
        "drift statistic vs threshold",
        "open alerts",
        "alert changes",
        "checkpoint age",
        "learner lag",
        "learner leader",
        "retries",
        "batch seconds",
    ):
        assert words in titles, words
    quantiles = [expr for _, expr in exprs() if "histogram_quantile" in expr]
    for metric in ("end_to_end_latency", "score_latency", "label_delay"):
        assert {q.split(",")[0] for q in quantiles if metric in q} == {
            "histogram_quantile(0.5",
            "histogram_quantile(0.99",
        }


# Provisioning and docker-compose.yml, read as text ----------------------------------------


def _yaml_value(text: str, key: str) -> str:
    """The one scalar ``key: value`` of a YAML text (quotes stripped); fails unless exactly one."""
    values = re.findall(rf"^\s*(?:-\s+)?{re.escape(key)}:\s*(\S[^#\n]*?)\s*(?:#.*)?$", text, re.MULTILINE)
    assert len(values) == 1, f"{key}: {values}"
    return str(values[0]).strip("\"'")


def _service(name: str) -> str:
    """The block of one service of docker-compose.yml, as text."""
    text = COMPOSE.read_text()
    match = re.search(rf"^  {name}:\n((?:(?:    .*|\s*)\n)+)", text, re.MULTILINE)
    assert match, f"no service {name} in docker-compose.yml"
    return match.group(1)


def _mounts(service: str) -> dict[str, str]:
    """Host path (relative to the repository) -> container path of a service's bind mounts."""
    block = _service(service)
    found = re.findall(r'^\s+-\s+"?\./([^:"\s]+):([^:"\s]+)(?::ro)?"?\s*$', block, re.MULTILINE)
    return dict(found)


def test_prometheus_scrapes_every_worker_on_the_metrics_port_every_5s() -> None:
    text = PROMETHEUS.read_text()
    assert _yaml_value(text, "scrape_interval") == "5s"
    # Grafana's $__rate_interval is 4 scrape intervals as the data source states it (else 15 s).
    assert _yaml_value(DATASOURCES.read_text(), "timeInterval") == "5s"
    assert re.search(r"^\s*- names: \[worker\]$", text, re.MULTILINE)
    assert _yaml_value(text, "type") == "A"
    assert _yaml_value(text, "port") == str(Settings.defaults().metrics_port)
    assert _yaml_value(text, "metrics_path") == "/metrics"
    worker = _service("worker")
    assert re.search(rf'^\s+expose:\n\s+- "{Settings.defaults().metrics_port}"', worker, re.MULTILINE)
    for value in re.findall(r"^\s+SCORING_METRICS_PORT:\s*\"?(\w+)", COMPOSE.read_text(), re.MULTILINE):
        assert value == str(Settings.defaults().metrics_port)  # the port scraped is the one served


def test_compose_mounts_the_configuration_and_the_provisioning_points_at_the_dashboard() -> None:
    prometheus = _mounts("prometheus")
    assert prometheus == {"deploy/prometheus/prometheus.yml": "/etc/prometheus/prometheus.yml"}
    assert re.search(r"^\s+image: prom/prometheus:v\d+\.\d+\.\d+$", _service("prometheus"), re.MULTILINE)

    grafana = _mounts("grafana")
    assert grafana["deploy/grafana/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"
    assert grafana["deploy/grafana/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"
    for host in grafana:
        assert (ROOT / host).exists(), host
    assert DATASOURCES.parent == ROOT / "deploy/grafana/provisioning/datasources"
    assert PROVIDERS.parent == ROOT / "deploy/grafana/provisioning/dashboards"
    dashboards_in_container = grafana[str(DASHBOARDS.relative_to(ROOT))]
    assert _yaml_value(PROVIDERS.read_text(), "path") == dashboards_in_container
    assert _yaml_value(PROVIDERS.read_text(), "type") == "file"

    block = _service("grafana")
    assert re.search(r"^\s+image: grafana/grafana:1[01]\.\d+\.\d+$", block, re.MULTILINE)
    home = _yaml_value(block, "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    assert home == f"{dashboards_in_container}/{DASHBOARD.name}"
    assert _yaml_value(block, "GF_AUTH_ANONYMOUS_ENABLED") == "true"
    assert re.search(r'^\s+- "127\.0\.0\.1:\$\{GRAFANA_HOST_PORT:-3000\}:3000"$', block, re.MULTILINE)

    datasource = DATASOURCES.read_text()
    assert _yaml_value(datasource, "type") == "prometheus"
    assert _yaml_value(datasource, "url") == "http://prometheus:9090"


def test_the_yaml_files_parse_to_the_same_wiring() -> None:
    import yaml

    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert str(Settings.defaults().metrics_port) in [str(port) for port in services["worker"]["expose"]]
    assert (
        "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
        in (services["prometheus"]["volumes"])
    )
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in services["grafana"]["volumes"])
    provider = yaml.safe_load(PROVIDERS.read_text())["providers"][0]
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert {source["uid"]} == {p["datasource"]["uid"] for p in panels(dashboard()) if "datasource" in p}
    (scoring,) = [
        job
        for job in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]
        if job["job_name"] == "scoring"
    ]
    assert scoring["dns_sd_configs"] == [
        {"names": ["worker"], "type": "A", "port": Settings.defaults().metrics_port, "refresh_interval": "5s"}
    ]


def test_compose_runs_the_api_with_its_profile_beyond_loopback_behind_a_token() -> None:
    import yaml

    services = yaml.safe_load(COMPOSE.read_text())["services"]
    api, worker = services["api"], services["worker"]
    assert api["profiles"] == ["api"] and api["command"] == ["api"] and "profiles" not in worker
    environment = api["environment"]
    assert {k: v for k, v in environment.items() if k in worker["environment"]} == worker["environment"]
    assert environment["SCORING_API_HOST"] == "0.0.0.0"  # reachable through the published port
    assert environment["SCORING_API_TOKEN"] == "${SCORING_API_TOKEN:-}"  # unset: the API refuses to start
    assert api["ports"] == [f"127.0.0.1:${{API_HOST_PORT:-8000}}:{Settings.defaults().api_port}"]
