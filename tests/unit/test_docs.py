"""The documentation tells the truth: docstring examples run, README lists every setting."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

import pytest

import bench
import consumers
import models
import stream
from stream.settings import documented_settings

README = Path(__file__).parents[2] / "README.md"


def modules() -> list[ModuleType]:
    return [
        importlib.import_module(info.name)
        for package in (stream, models, consumers, bench)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}.")
    ]


@pytest.mark.parametrize("module", modules(), ids=lambda m: m.__name__)
def test_docstring_examples_run(module: ModuleType) -> None:
    assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize(("variable", "default", "doc"), documented_settings())
def test_readme_lists_every_setting_with_its_default(variable: str, default: object, doc: str) -> None:
    expected = f"`{default}`" if default != "" else "(empty)"
    assert f"| `{variable}` | {expected} | {doc} |" in README.read_text()
