"""The scoring API against a real Redis and broker: readiness, the contract's rejections, one
prediction per event id across requests and the stream, the registry's views, the token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from stream.records import Prediction
from stream.runtime.outbox import Message
from stream.runtime.registry import ModelRegistry
from stream.runtime.scoring import Scorer
from stream.runtime.served import ServedModels
from stream.runtime.state import StateStore
from stream.settings import Settings
from stream.usecases import FRAUD
from tests.apiclient import START, bootstrap_both, in_process, published, transaction, until_ready

pytestmark = pytest.mark.integration


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    return settings.replace(max_event_age_seconds=0)  # the events happen at START, in the past


@pytest.fixture
async def client(api_settings: Settings, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A ready API: both use cases bootstrapped from a day of history."""
    await asyncio.to_thread(bootstrap_both, api_settings, tmp_path)
    async with in_process(api_settings) as client:
        await until_ready(client)
        yield client


async def worker_scorer(settings: Settings) -> tuple[Scorer, aioredis.Redis]:
    """A worker's scorer on the same Redis, following the live versions."""
    redis = aioredis.Redis.from_url(settings.redis_url)
    models = ServedModels(settings, ModelRegistry(redis, settings), settings.use_cases)
    await models.refresh()
    return Scorer(settings, StateStore(redis, settings), models), redis


async def test_not_ready_until_a_version_of_each_model_is_loaded(
    api_settings: Settings, tmp_path: Path
) -> None:
    async with in_process(api_settings) as client:
        assert (await client.get("/healthz")).status_code == 200
        before = await client.get("/readyz")
        assert before.status_code == 503
        assert before.json()["models"] == {"fraud": None, "demand": None}
        refused = await client.post("/v1/score/fraud", content=transaction("e-1"))
        assert (refused.status_code, refused.json()["reason"]) == (503, "not_ready")

        await asyncio.to_thread(bootstrap_both, api_settings, tmp_path)
        await until_ready(client)
        ready = (await client.get("/readyz")).json()
        assert ready == {
            "ready": True,
            "redis": "ok",
            "broker": "ok",
            "models": {"fraud": "fraud.1", "demand": "demand.1"},
        }
        scored = await client.post("/v1/score/fraud", content=transaction("e-1"))
        assert scored.status_code == 200
        assert Prediction.model_validate_json(scored.content).model_version == "fraud.1"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"event_id": "e-1"', "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (orjson.dumps({**orjson.loads(transaction("e-1")), "amount": None}), "missing_field"),
        (
            orjson.dumps({k: v for k, v in orjson.loads(transaction("e-1")).items() if k != "country"}),
            "missing_field",
        ),
        (orjson.dumps({**orjson.loads(transaction("e-1")), "amount": "12.50"}), "bad_type"),
        (orjson.dumps({**orjson.loads(transaction("e-1")), "currency": "EURO"}), "bad_format"),
        (orjson.dumps({**orjson.loads(transaction("e-1")), "ts": "2026-03-04T12:00:00"}), "bad_format"),
        (transaction("e-1", amount=-5.0), "out_of_range"),
        (orjson.dumps({**orjson.loads(transaction("e-1")), "ts": "2999-01-01T00:00:00Z"}), "out_of_range"),
    ],
)
async def test_a_malformed_body_gets_422_with_the_reason_a_worker_gives(
    api_settings: Settings, body: bytes, reason: str
) -> None:
    async with in_process(api_settings) as client:
        answer = await client.post("/v1/score/fraud", content=body)
    assert answer.status_code == 422
    assert answer.json()["reason"] == reason and answer.json()["detail"]


async def test_a_late_event_gets_422_late_event(settings: Settings) -> None:
    async with in_process(settings.replace(max_event_age_seconds=3600)) as client:
        answer = await client.post("/v1/score/fraud", content=transaction("e-1"))
    assert (answer.status_code, answer.json()["reason"]) == (422, "late_event")


async def test_the_same_event_twice_is_one_prediction_published_once(
    client: httpx.AsyncClient, api_settings: Settings
) -> None:
    first = await client.post("/v1/score/fraud", content=transaction("e-1"))
    again = await client.post("/v1/score/fraud", content=transaction("e-1"))
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    prediction = Prediction.model_validate_json(first.content)
    assert (prediction.event_id, prediction.entity) == ("e-1", "acc-1")
    assert prediction.score is not None and 0 <= prediction.score <= 1
    assert [p.event_id for p in published(api_settings)] == ["e-1"]


async def test_racing_requests_for_one_new_event_get_one_prediction_published_once(
    client: httpx.AsyncClient, api_settings: Settings
) -> None:
    answers = await asyncio.gather(
        *(client.post("/v1/score/fraud", content=transaction("e-1")) for _ in range(4))
    )
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1
    assert [p.event_id for p in published(api_settings)] == ["e-1"]


async def test_the_same_event_id_for_another_entity_is_a_conflict(client: httpx.AsyncClient) -> None:
    assert (
        await client.post("/v1/score/fraud", content=transaction("e-1", account="acc-1"))
    ).status_code == 200
    other = await client.post("/v1/score/fraud", content=transaction("e-1", account="acc-2"))
    assert (other.status_code, other.json()["reason"]) == (409, "duplicate_event")


async def test_an_event_the_api_scored_is_not_scored_again_from_its_topic(
    client: httpx.AsyncClient, api_settings: Settings
) -> None:
    answer = await client.post("/v1/score/fraud", content=transaction("e-1"))
    scorer, redis = await worker_scorer(api_settings)
    try:
        outbox = await scorer.score(
            FRAUD, [Message("transactions", 0, 7, transaction("e-1"), START.timestamp())]
        )
    finally:
        await redis.aclose()
    assert answer.status_code == 200
    assert outbox.records == []  # no second prediction, no dead letter


async def test_an_event_scored_from_its_topic_first_is_answered_with_that_prediction(
    client: httpx.AsyncClient, api_settings: Settings
) -> None:
    scorer, redis = await worker_scorer(api_settings)
    try:
        outbox = await scorer.score(
            FRAUD, [Message("transactions", 0, 7, transaction("e-1"), START.timestamp())]
        )
    finally:
        await redis.aclose()
    ((_, _, from_topic),) = outbox.records
    answer = await client.post("/v1/score/fraud", content=transaction("e-1"))
    assert (answer.status_code, answer.content) == (200, from_topic)
    assert published(api_settings) == []  # the worker publishes it, not the API


async def test_models_and_a_version_with_its_card(client: httpx.AsyncClient) -> None:
    models = await client.get("/v1/models")
    assert models.json() == {
        "fraud": {"live": "fraud.1", "served": "fraud.1"},
        "demand": {"live": "demand.1", "served": "demand.1"},
    }
    for name in ("fraud.1", "1"):
        version = await client.get(f"/v1/models/fraud/versions/{name}")
        assert version.status_code == 200
        body = version.json()
        assert body["record"]["version"] == body["card"]["version"] == "fraud.1"
        assert body["card"]["status"] == "live" and body["card"]["lineage"]["bootstrap"]["sha256"]
    missing = await client.get("/v1/models/fraud/versions/99")
    assert (missing.status_code, missing.json()["reason"]) == (404, "unknown_version")
    unknown = await client.get("/v1/models/nope/versions/1")
    assert (unknown.status_code, unknown.json()["reason"]) == (404, "unknown_model")


async def test_metrics_count_the_requests(client: httpx.AsyncClient) -> None:
    await client.post("/v1/score/fraud", content=transaction("e-1"))
    await client.post("/v1/score/fraud", content=transaction("e-1"))
    text = (await client.get("/metrics")).text
    assert 'scoring_api_requests_total{model="fraud",outcome="repeated"}' in text
    assert 'scoring_served_model_version{model="fraud"} 1.0' in text


async def test_with_a_token_every_endpoint_but_the_probes_asks_for_it(api_settings: Settings) -> None:
    async with in_process(api_settings.replace(api_token="s3cret")) as client:
        for path in ("/v1/models", "/metrics", "/openapi.json", "/v1/models/fraud/versions/1"):
            for headers in ({}, {"Authorization": "Bearer guess"}, {"Authorization": "Basic s3cret"}):
                refused = await client.get(path, headers=headers)
                assert (refused.status_code, refused.json()["reason"]) == (401, "unauthorized"), path
                assert refused.headers["WWW-Authenticate"] == "Bearer"
        scoring = await client.post("/v1/score/fraud", content=transaction("e-1"))
        assert scoring.status_code == 401
        allowed = {"Authorization": "Bearer s3cret"}
        assert (await client.get("/v1/models", headers=allowed)).status_code == 200
        assert (await client.get("/openapi.json", headers=allowed)).json()["info"]["title"] == "scoring"
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503  # answered without the token
