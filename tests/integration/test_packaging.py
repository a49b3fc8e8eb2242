"""The package as the Dockerfile installs it (``pip install .`` of what its ``COPY`` lines copy,
where ``make install`` makes an editable install that reads the checkout itself): every file
of the packages is in it, and the service's modules that read files besides their code at
import (the use cases' declarations, the Lua scripts) import from it."""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def dockerfile_sources() -> list[str]:
    """What the Dockerfile's ``COPY`` instructions take from the checkout."""
    sources: list[str] = []
    for line in (REPO / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"]:
            sources += words[1:-1]
    return sources


def in_packages(files: list[str]) -> list[str]:
    """Those of ``files`` (relative to the checkout) that lie in a package pyproject.toml installs."""
    with (REPO / "pyproject.toml").open("rb") as pyproject:
        patterns = tomllib.load(pyproject)["tool"]["setuptools"]["packages"]["find"]["include"]
    return [
        file
        for file in files
        if "/" in file and any(fnmatch.fnmatch(file.split("/")[0], pattern) for pattern in patterns)
    ]


@pytest.mark.timeout(300)
def test_the_installed_package_holds_every_file_of_the_packages(tmp_path: Path) -> None:
    source, installed = tmp_path / "source", tmp_path / "installed"
    copied = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", *dockerfile_sources()],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for file in copied:
        (source / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / file, source / file)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(installed)]
    subprocess.run([*pip, str(source)], check=True, capture_output=True)
    expected = in_packages(copied)
    assert "stream/runtime/state.py" in expected
    missing = [file for file in expected if not (installed / file).is_file()]
    assert not missing, f"not installed: {missing}"
    imported = subprocess.run(
        [
            sys.executable,
            "-c",
            "import stream, stream.usecases, stream.runtime.state, stream.runtime.registry, stream.tools.cli;"
            "print(stream.__file__)",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
    )
    assert imported.returncode == 0, imported.stderr
    assert Path(imported.stdout.strip()).is_relative_to(installed)  # not the checkout's
