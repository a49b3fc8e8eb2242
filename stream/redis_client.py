"""How every Redis client the project ships connects: the URL, and the CA of a TLS server.

AUTH and TLS come from ``SCORING_REDIS_URL`` itself (``redis://:PASSWORD@host:port/db``,
``rediss://...`` for TLS), as redis-py reads it; ``SCORING_REDIS_CA_FILE`` names the CA
certificates a ``rediss://`` server's certificate is checked against (else the system's).
redis-py checks the certificate and the host name.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from stream.settings import Settings


def redis_options(settings: Settings) -> dict[str, Any]:
    """What a redis-py client takes beside the URL to connect as ``settings`` say (sync or async)."""
    return {"ssl_ca_certs": settings.redis_ca_file} if settings.redis_ca_file else {}


def redis_client(settings: Settings, **options: Any) -> aioredis.Redis:
    """The deployment's Redis, as an asyncio client; ``options`` go to redis-py (timeouts, say)."""
    return aioredis.Redis.from_url(settings.redis_url, **redis_options(settings), **options)
