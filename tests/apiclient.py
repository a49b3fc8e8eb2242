"""The scoring API as the tests call it: in this process on its ASGI interface, or a `scoring api` process."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson

from consumers.reader import read
from stream.api.app import create_app
from stream.records import Prediction
from stream.settings import Settings
from stream.tools import simulator
from stream.tools.demo import bootstrap_from_history, stop

START = dt.datetime(2026, 3, 4, 12, tzinfo=dt.UTC)
"""When these tests' events happen (an API with ``max_event_age_seconds=0`` scores them)."""


def transaction(event_id: str, account: str = "acc-1", amount: float = 20.0) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "ts": START.isoformat(),
            "account_id": account,
            "merchant_id": "m-1",
            "amount": amount,
            "currency": "EUR",
            "channel": "pos",
            "country": "FR",
        }
    )


def bootstrap_both(settings: Settings, folder: Path) -> None:
    """Publish a version of each use case, learned from a day of simulated history before :data:`START`."""
    config = simulator.SimulationConfig(transactions=0, sales=0)
    bootstrap_from_history(settings, config, START, 1, folder, io.StringIO())


@contextlib.asynccontextmanager
async def in_process(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the API app of ``settings``, run in this event loop with its lifespan."""
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://api") as client,
    ):
        yield client


async def until_ready(client: httpx.AsyncClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (await client.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, (await client.get("/readyz")).text
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def api_process(settings: Settings, log_path: Path) -> Iterator[str]:
    """Run ``scoring api`` with ``settings`` in a child process; yields its base URL; stops it on exit."""
    env = {**os.environ, **settings.environment()}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "stream.tools.cli", "api"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield f"http://{settings.api_host}:{settings.api_port}"
        finally:
            stop(process, signal.SIGTERM)
    # uvicorn stops cleanly on SIGTERM, then ends by the signal, as a process manager expects.
    log_text = log_path.read_text()
    assert process.returncode == -signal.SIGTERM, log_text[-3000:]
    assert "Application shutdown complete." in log_text, log_text[-3000:]


def wait_for(url: str, timeout: float = 60.0) -> httpx.Response:
    """GET ``url`` until it answers 200 (the process started and is ready)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            response = httpx.get(url, timeout=2.0)
            if response.status_code == 200:
                return response
        assert time.monotonic() < deadline, f"{url} did not answer 200 within {timeout} s"
        time.sleep(0.1)


def published(settings: Settings, model: str = "fraud") -> list[Prediction]:
    """Every prediction on ``model``'s prediction topic, read until it is idle for 2 s."""
    records = [m.parse() for m in read(settings, [f"predictions.{model}"], idle_timeout=2.0)]
    return [r for r in records if isinstance(r, Prediction)]
