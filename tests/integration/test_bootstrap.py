"""``scoring bootstrap`` against a real Redis: a history in, a live version with its lineage,
entity states and a checkpoint the learner continues from; never learned twice."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from stream.runtime.learner import Learner
from stream.runtime.registry import ModelRegistry
from stream.runtime.retry import ErrorPolicy
from stream.runtime.served import ServedModels
from stream.runtime.state import StateStore
from stream.settings import Settings
from stream.tools.bootstrap import BootstrapRefused, bootstrap, file_digest
from stream.tools.simulator import SimulationConfig, write_history
from stream.usecases import DEMAND, FRAUD

pytestmark = pytest.mark.integration

START = dt.datetime(2026, 3, 4, 12, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    written = write_history(
        tmp_path_factory.mktemp("history") / "h.csv",
        SimulationConfig(seed=4),
        start=START,
        days=4,
        rows_per_day=600,
    )
    return {f.use_case: f.path for f in written}


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(settings.redis_url)
    yield redis
    await redis.aclose()


async def no_publish(records: Sequence[tuple[str, bytes, bytes]]) -> None:
    return None


async def test_a_history_becomes_the_live_version_with_its_lineage(
    settings: Settings, client: aioredis.Redis, files: dict[str, Path]
) -> None:
    outcome = await bootstrap(settings, DEMAND, files["demand"])
    assert (outcome.status, outcome.version) == ("published", "demand.1")  # .0 is the untrained one
    registry = ModelRegistry(client, settings)
    record = await registry.record("demand.1")
    lineage = record["lineage"]
    size, sha256 = file_digest(files["demand"])
    assert (lineage["file"], lineage["size"], lineage["sha256"]) == (files["demand"].name, size, sha256)
    assert lineage["rows"] == lineage["accepted"] + sum(lineage["rejected"].values())
    assert {"duplicate_event", "inconsistent_dates"} <= set(lineage["rejected"])
    assert record["reason"] == "bootstrap" and record["declaration"] == DEMAND.fingerprint
    assert record["learner_labels"] == lineage["accepted"] > 2000
    tail = lineage["last_20_percent"]
    assert tail["champion_mae"] < tail["baseline_mae"]
    # Workers serve it; the entity states are there for the stream's features to continue.
    served = ServedModels(settings, registry, [DEMAND])
    await served.refresh()
    assert served["demand"].version == "demand.1" and served["demand"].model.labels_learned > 0
    keys = [k async for k in client.scan_iter(match=settings.key("demand", "entity", "*"))]
    assert len(keys) == lineage["entities"] > 100

    # The learner of a running worker continues from the bootstrapped checkpoint.
    store = StateStore(client, settings)
    learner = Learner(settings, DEMAND, store, registry, no_publish, ErrorPolicy(settings))
    await learner.step()
    assert learner.state is not None and learner.version == "demand.1"
    assert learner.state.lifecycle.labels_learned == record["learner_labels"]


async def test_the_same_file_twice_learns_once(settings: Settings, files: dict[str, Path]) -> None:
    assert (await bootstrap(settings, DEMAND, files["demand"])).status == "published"
    again = await bootstrap(settings, DEMAND, files["demand"])
    assert (again.status, again.version) == ("unchanged", "demand.1")
    assert "nothing to learn again" in again.lines[0]


async def test_a_lineage_that_learned_labels_is_started_over_only_when_forced(
    settings: Settings, client: aioredis.Redis, files: dict[str, Path], tmp_path: Path
) -> None:
    assert (await bootstrap(settings, FRAUD, files["fraud"])).version == "fraud.1"
    other = tmp_path / "other.csv"
    lines = files["fraud"].read_text().splitlines(keepends=True)
    other.write_text("".join(lines[: len(lines) // 2]))  # another file: the first half of the history
    with pytest.raises(BootstrapRefused, match=r"has learned \d+ labels.*--force"):
        await bootstrap(settings, FRAUD, other)
    forced = await bootstrap(settings, FRAUD, other, force=True)
    assert forced.version == "fraud.2"
    record = await ModelRegistry(client, settings).record("fraud.2")
    assert record["parent"] == "fraud.1"
    assert record["lineage"]["forced"] is True and record["lineage"]["replaces"] == "fraud.1"
