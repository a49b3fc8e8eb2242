"""The end-to-end tests' wait: a worker that exits fails it at once, with its log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.support import wait_until, watching


def test_a_watched_process_that_exits_fails_the_wait_at_once_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", "print('cannot start: boom'); raise SystemExit(3)"], stdout=out
        )
    with watching(process, log), pytest.raises(AssertionError) as failed:
        wait_until(lambda: False, timeout=60.0, what="the first version")
    process.wait()
    assert "waiting for the first version, the worker exited with code 3" in str(failed.value)
    assert "cannot start: boom" in str(failed.value)


def test_a_process_no_longer_watched_is_not_checked(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    with watching(process, tmp_path / "none.log"):
        pass
    process.wait()
    asked: list[None] = []

    def ready() -> bool:
        asked.append(None)
        return len(asked) == 2

    wait_until(ready, timeout=60.0)
    assert len(asked) == 2, "it waited for the condition: a process no longer watched is not checked"
