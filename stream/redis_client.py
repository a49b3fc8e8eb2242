"""How every Redis client the project ships connects: the URL, the CA of a TLS server, a cluster.

AUTH and TLS come from ``SCORING_REDIS_URL`` itself (``redis://:PASSWORD@host:port/db``,
``rediss://...`` for TLS), as redis-py reads it; ``SCORING_REDIS_CA_FILE`` names the CA
certificates a ``rediss://`` server's certificate is checked against (else the system's).
redis-py checks the certificate and the host name. With ``SCORING_REDIS_CLUSTER`` the URL
names any node of a Redis Cluster, and the client learns the others from it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import ConnectionError, RedisClusterException

from stream.settings import Settings

RedisClient: TypeAlias = aioredis.Redis | RedisCluster


def redis_options(settings: Settings) -> dict[str, Any]:
    """What a redis-py client takes beside the URL to connect as ``settings`` say (sync or async)."""
    return {"ssl_ca_certs": settings.redis_ca_file} if settings.redis_ca_file else {}


def redis_client(settings: Settings, **options: Any) -> RedisClient:
    """The deployment's Redis, as an asyncio client: a cluster's (``redis_cluster``), else one
    server's; ``options`` go to redis-py (timeouts, say)."""
    if settings.redis_cluster:
        return _Cluster.from_url(settings.redis_url, **redis_options(settings), **options)
    return aioredis.Redis.from_url(settings.redis_url, **redis_options(settings), **options)


class _Cluster(RedisCluster):
    """redis-py's cluster client, whose failures to reach a node all raise :class:`ConnectionError`.

    Two other kinds of failure mean the same while a cluster starts or fails over, and the
    error policy retries an outage. Learning the cluster's layout fails with a bare
    :class:`RedisClusterException` when no node answers or the slots are not all served
    yet (the same class also says "you called this wrongly", which this call cannot be).
    And when redis-py meets a node that stopped answering, it closes every connection of
    the client to learn the layout again, under the commands that other tasks of the worker
    have in flight: those fail with what a connection closed under a write raises, uvloop's
    :class:`RuntimeError` ("unable to perform operation on <TCPTransport closed=True>") or
    an :class:`AttributeError` (a connection whose writer is gone), which redis-py lets
    through (it turns only an :class:`OSError` into a connection error).
    """

    async def initialize(self, *args: Any, **kwargs: Any) -> RedisCluster:
        try:
            return await super().initialize(*args, **kwargs)
        except RedisClusterException as exc:
            said = exc.__cause__
            if not isinstance(said, ConnectionError):
                raise ConnectionError(str(exc)) from exc
        # What the node said (a refused password, say) as it said it: raised out of the except
        # clause, it keeps its own context (a TLS error, say).
        raise said

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        with _closed_transport_as_outage():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        """A pipeline (``shard_hint`` is not for clusters: redis-py refuses it, this never passes one)."""
        return _ClusterPipeline(self, transaction)  # type: ignore[abstract]  # as redis-py's own pipeline()


class _ClusterPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        with _closed_transport_as_outage():
            return await super().execute(raise_on_error, allow_redirections)


@contextlib.contextmanager
def _closed_transport_as_outage() -> Iterator[None]:
    try:
        yield
    except (RuntimeError, AttributeError) as exc:  # raised inside redis-py's I/O, never by a caller
        raise ConnectionError(f"a connection closed under a command ({type(exc).__name__}: {exc})") from exc
