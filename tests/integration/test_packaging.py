"""The package as the Dockerfile installs it (``pip install .``, where ``make install`` makes an
editable install that reads the checkout itself): every file of the packages is in it, and the
service's modules that read files besides their code at import (the use cases' declarations,
the Lua scripts) import from it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("stream", "consumers", "models")
PROJECT_FILES = ("pyproject.toml", "README.md")


@pytest.mark.timeout(300)
def test_the_installed_package_holds_every_file_of_the_packages(tmp_path: Path) -> None:
    source, installed = tmp_path / "source", tmp_path / "installed"
    tracked = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", *PACKAGES], capture_output=True, text=True, check=True
    ).stdout.split()
    for file in [*PROJECT_FILES, *tracked]:  # what the Dockerfile copies, as the checkout tracks it
        (source / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / file, source / file)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(installed)]
    subprocess.run([*pip, str(source)], check=True, capture_output=True)
    missing = [file for file in tracked if not (installed / file).is_file()]
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
