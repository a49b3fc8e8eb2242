"""The layout shows the architecture: imports flow one way.

- ``models/`` knows nothing of Kafka, Redis, Faust or :mod:`stream`;
- ``stream/runtime/`` (what ``scoring worker`` runs) never imports a tool (``stream/tools``) nor
  the API (``stream/api``, which runs the runtime's scoring steps);
- ``stream/api/`` (what ``scoring api`` runs) never imports a tool;
- ``consumers/`` uses the records, the settings and the use-case declarations, never the
  runtime, the API or the tools;
- the shared modules at the top of ``stream/`` import neither the runtime, the API nor the tools.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def imported(path: Path) -> set[str]:
    """Every module name ``path`` imports, at any depth of its code."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def files(folder: str) -> list[Path]:
    """The modules of ``folder``; those of its subpackages too, but for ``stream`` (checked apart)."""
    return sorted((ROOT / folder).glob("*.py" if folder == "stream" else "**/*.py"))


FORBIDDEN = {
    "models": ("stream", "consumers", "confluent_kafka", "redis", "faust", "mode"),
    "stream/runtime": ("stream.tools", "stream.api", "consumers", "bench"),
    "stream/api": ("stream.tools", "consumers", "bench"),
    "stream": ("stream.runtime", "stream.tools", "stream.api", "consumers", "bench"),
    "consumers": ("stream.runtime", "stream.tools", "stream.api", "bench"),
}


@pytest.mark.parametrize(
    ("folder", "path"), [(folder, path) for folder in FORBIDDEN for path in files(folder)], ids=str
)
def test_imports_flow_one_way(folder: str, path: Path) -> None:
    wrong = {
        name
        for name in imported(path)
        for prefix in FORBIDDEN[folder]
        if name.split(".")[: len(prefix.split("."))] == prefix.split(".")
    }
    assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def test_every_folder_is_checked() -> None:
    assert all(files(folder) for folder in FORBIDDEN)
