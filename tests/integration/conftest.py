"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from stream.redis_client import redis_client
from stream.settings import Settings
from tests.integration.test_scoring import Steps, new_steps


@pytest.fixture
async def steps(settings: Settings) -> AsyncIterator[Steps]:
    """A worker's scoring and joining steps on the test's Redis (one node or a cluster)."""
    client = redis_client(settings)
    yield new_steps(settings, client)
    await client.aclose()
