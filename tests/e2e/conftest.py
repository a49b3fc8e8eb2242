"""Fixtures of the end-to-end tests: a real `scoring worker` process on the test's namespace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen

import pytest

from stream.settings import Settings
from stream.tools import localstack
from tests.e2e.support import watched_worker


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The session's settings, with a worker that scores the simulated streams' old events,
    and a first learned version after 500 labels (1,000 by default: most of these
    streams' labels)."""
    # The streams end at support.START, in the past.
    return settings.replace(max_event_age_seconds=0, first_version_min_labels=500)


@pytest.fixture
def worker_settings(settings: Settings) -> Settings:
    return settings.replace(metrics_port=localstack.free_port())


@pytest.fixture
def worker(worker_settings: Settings, tmp_path: Path) -> Iterator[Popen[bytes]]:
    with watched_worker(worker_settings, tmp_path / "worker.log") as process:
        yield process
    assert process.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]
