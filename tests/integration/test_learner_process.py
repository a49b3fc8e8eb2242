"""The worker's learner processes, one per use case, on a real broker and Redis: they learn beside
the worker, report through the worker's metrics, checkpoint when stopped, are started again
alone when killed, and die with their worker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from stream.redis_client import redis_client
from stream.runtime.learning import Learning, worker_registry
from stream.runtime.registry import ModelRegistry
from stream.settings import Settings
from stream.usecases import USE_CASES

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def leading(learning: Learning) -> set[str]:
    """The use cases whose learner leads, as the worker's ``/metrics`` says."""
    return {
        sample.labels["model"]
        for family in learning.metrics()
        for sample in family.samples
        if sample.name == "scoring_learner_leader" and sample.value == 1
    }


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_learns_beside_the_worker_reports_through_it_and_checkpoints_when_stopped(
    settings: Settings,
) -> None:
    learning = Learning(settings)
    running = asyncio.create_task(learning.run())
    await eventually(lambda: leading(learning) == {uc.name for uc in USE_CASES}, "both learners to lead")
    pids = learning.pids
    assert sorted(pids) == sorted(uc.name for uc in USE_CASES)
    assert None not in pids.values() and len(set(pids.values())) == len(USE_CASES), "a process each"
    nicer = min(19, os.getpriority(os.PRIO_PROCESS, 0) + settings.learner_niceness)
    assert settings.learner_niceness > 0
    assert all(os.getpriority(os.PRIO_PROCESS, pid) == nicer for pid in pids.values() if pid is not None)
    served = generate_latest(worker_registry(learning)).decode()
    assert served.count("# TYPE scoring_learner_leader gauge") == 1  # one family, merged
    assert 'scoring_learner_leader{model="fraud"} 1.0' in served
    assert 'scoring_learner_leader{model="demand"} 1.0' in served
    assert "scoring_messages_consumed_total" in served  # the worker's own metrics beside them

    await learning.stop()
    await running
    client = redis_client(settings)
    registry = ModelRegistry(client, settings)
    try:
        for use_case in USE_CASES:
            assert await registry.last_checkpoint(use_case.name) is not None
            assert await registry.lease(use_case.name, "another learner"), "the lease was handed over"
    finally:
        await client.aclose()


async def test_a_learner_process_killed_is_started_again_alone_and_restores_its_checkpoint(
    settings: Settings,
) -> None:
    learning = Learning(settings.replace(learner_lease_seconds=1.0))
    running = asyncio.create_task(learning.run())
    try:
        await eventually(lambda: len(leading(learning)) == len(USE_CASES), "the learners to lead")
        first = learning.pids
        killed = first["fraud"]
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        await eventually(
            lambda: learning.pids["fraud"] != killed and len(leading(learning)) == len(USE_CASES),
            "a new learner process to lead",
        )
        assert learning.pids["demand"] == first["demand"], "the other use case's process ran on"
    finally:
        await learning.stop()
        await running


def test_the_learner_processes_end_with_their_worker(settings: Settings, tmp_path: Path) -> None:
    # A stand-in worker: only its learner processes' supervisor.
    code = (
        "import asyncio; from stream.settings import Settings; "
        "from stream.runtime.learning import Learning; "
        "asyncio.run(Learning(Settings.from_env()).run())"
    )
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, **settings.environment(), "SCORING_LOG_LEVEL": "INFO"},
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children")
    try:
        deadline = time.monotonic() + 30
        while len(children.read_text().split()) < len(USE_CASES):
            assert time.monotonic() < deadline, "the learner processes never started"
            time.sleep(0.1)
        learners = [int(pid) for pid in children.read_text().split()]
        worker.kill()  # kill -9: nothing of the worker runs its shutdown
        worker.wait()
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in learners):
            assert time.monotonic() < deadline, "a learner process outlived its worker"
            time.sleep(0.1)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        log.close()
    assert (tmp_path / "worker.log").read_text().count("ends now, without a checkpoint") == len(USE_CASES)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"
