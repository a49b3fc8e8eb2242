"""The Grafana dashboard as the tests read it: its PromQL expressions, as written and as Grafana runs them.

One reading for two tests: ``tests/unit/test_dashboard.py`` checks each expression's metric
names against ``stream/runtime/metrics.py``; ``tests/e2e/test_prometheus.py`` runs each, with
Grafana's variables substituted (:func:`expand`), on a real Prometheus scraping a real worker.

Examples
--------
>>> sorted(metric_names('sum by (le) (rate(a_bucket{m=~"$model"}[$__rate_interval])) / b'))
['a_bucket', 'b']
>>> expand('rate(a{m=~"$model"}[$__rate_interval])', rate_window="4s")
'rate(a{m=~".*"}[4s])'
>>> rate_interval(scrape_seconds=1.0, interval_seconds=0.3)
'4s'
>>> [title for title, _ in sent_exprs({"model": ["fraud", "demand"]}, "4s") if "Prequential" in title]
['Prequential metric: fraud', 'Prequential metric: demand']
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[1]
DASHBOARDS = ROOT / "deploy/grafana/dashboards"
DASHBOARD = DASHBOARDS / "scoring.json"

# PromQL words that look like names but are not metrics.
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "atan2",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels, keywords left out).

    Label matchers, range and subquery brackets, string literals, Grafana variables and the
    label lists of ``by``/``without``/``on``/``ignoring``/``group_*`` are removed first; what
    is left that looks like a name and is not called like a function is a metric.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\$\{[^}]*\}|\$\w+", " ", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, called = match.groups()
        if not called and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside rows included."""
    for panel in node.get("panels", []):
        yield panel
        yield from panels(panel)


def exprs() -> list[tuple[str, str]]:
    """``(panel title, expr)`` of every query target of the dashboard's panels."""
    found = [
        (panel.get("title", "?"), target["expr"])
        for panel in panels(dashboard())
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert len(found) >= 20
    return found


def variable_exprs() -> list[tuple[str, str]]:
    """``(variable name, selector)`` of every ``label_values(selector, label)`` variable."""
    found = []
    for variable in dashboard()["templating"]["list"]:
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        for text_ in {text, variable.get("definition", "")} - {""}:
            match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", text_)
            assert match, f"variable {variable['name']}: unexpected query {text_!r}"
            found.append((variable["name"], match.group(1)))
    return found


# As Grafana runs them -------------------------------------------------------------------


def all_values() -> dict[str, str]:
    """Variable name -> what Grafana puts in its place when "All" is selected (the dashboard's default).

    Every variable of the dashboard offers "All" (``includeAll``) with a regex ``allValue``,
    and starts on it.
    """
    values = {}
    for variable in dashboard()["templating"]["list"]:
        assert variable["includeAll"] and variable["current"]["value"] == ["$__all"], variable["name"]
        values[variable["name"]] = variable["allValue"]
    return values


def rate_interval(scrape_seconds: float, interval_seconds: float) -> str:
    """Grafana's ``$__rate_interval``: ``max($__interval + scrape interval, 4 * scrape interval)``.

    ``scrape_seconds`` is the data source's scrape interval (``timeInterval``), which is also the
    smallest ``$__interval`` Grafana uses; ``interval_seconds`` is the time range over the
    panel's width in points. The result is in whole milliseconds, as PromQL reads durations.
    """
    interval = max(interval_seconds, scrape_seconds)
    seconds = max(interval + scrape_seconds, 4 * scrape_seconds)
    millis = math.ceil(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def expand(text: str, *, rate_window: str, chosen: Mapping[str, str] | None = None) -> str:
    """``text`` (an expression or a title) as Grafana shows or sends it: every variable on "All",
    but those ``chosen`` (a repeated panel's own value)."""
    values = {**all_values(), **(chosen or {}), "__rate_interval": rate_window}

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"{text!r}: no value for ${name}"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, text)


def sent_exprs(values: Mapping[str, Sequence[str]], rate_window: str) -> list[tuple[str, str]]:
    """``(panel title, expr)`` of every query Grafana sends to show the dashboard on its defaults.

    ``values`` are each variable's values (what its ``label_values`` query finds). Every
    variable is on "All", but a panel repeated by a variable (``repeat``) is shown once per
    value, with that one value in its title and queries (the use cases' names need no regex
    escaping).
    """
    found = []
    for panel in panels(dashboard()):
        repeat = panel.get("repeat")
        for one in values[repeat] if repeat else [None]:
            chosen = {repeat: one} if repeat and one is not None else {}
            title = expand(panel.get("title", "?"), rate_window=rate_window, chosen=chosen)
            found += [
                (title, expand(target["expr"], rate_window=rate_window, chosen=chosen))
                for target in panel.get("targets", [])
                if "expr" in target
            ]
    assert len(found) >= len(exprs())
    return found
