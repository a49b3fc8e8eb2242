"""Readings of processes (CPU, RSS) from /proc, percentiles, machine facts, child processes."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import signal
import subprocess
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")
STOP_TIMEOUT_SECONDS = 20.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads), in seconds; 0 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()  # fields 3.. of proc(5): utime is 14, stime 15
    return (int(fields[11]) + int(fields[12])) / _TICKS


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s child processes (a worker's learner processes), none once it is gone."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def status_mb(pid: int, field: str) -> float:
    """A ``/proc/<pid>/status`` memory field (``VmRSS``, ``VmHWM``: peak RSS) in MB; 0 if gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0.0
    for line in lines:
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0]) / 1024.0
    return 0.0


def children_mb(pid: int, field: str) -> float:
    """:func:`status_mb` of ``pid``'s child processes, summed (a worker's learner processes)."""
    return sum(status_mb(child, field) for child in children(pid))


def tree_mb(pid: int, field: str) -> float:
    """:func:`status_mb` of ``pid`` and of its child processes, summed: a worker's memory is
    its own and its learner processes'."""
    return status_mb(pid, field) + children_mb(pid, field)


def interpolate(samples: Sequence[tuple[float, float]], t: float) -> float:
    """The value at time ``t`` of time-ordered ``(time, value)`` samples, linearly interpolated."""
    times = [s[0] for s in samples]
    i = bisect_left(times, t)
    if i == 0:
        return samples[0][1]
    if i == len(samples):
        return samples[-1][1]
    (t0, v0), (t1, v1) = samples[i - 1], samples[i]
    return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, linearly interpolated between ranks."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def machine() -> dict[str, Any]:
    """Facts about this machine that the numbers depend on."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    memory_mb = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory_mb = int(Path("/proc/meminfo").read_text().split()[1]) / 1024.0
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_mb": round(memory_mb),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


@contextlib.contextmanager
def child(
    command: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` for the ``with`` block, output to ``log_path``; always stop it afterwards.

    It gets a session of its own, so a Ctrl-C in the terminal reaches only this process,
    which then stops it: SIGINT, and SIGKILL if it is still there after
    ``STOP_TIMEOUT_SECONDS``.
    """
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGINT ``process``, then SIGKILL it if it does not end in time; reap it either way."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, for a failure's reason."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
