"""The deployment's Redis client: one server, or a Redis Cluster reached through any of its nodes.

Every process (worker, tools, tests) builds its client here, so that a connection option
is set once for both kinds.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError, RedisClusterException

from stream.settings import Settings

RedisClient: TypeAlias = aioredis.Redis | RedisCluster


def redis_client(settings: Settings, **options: Any) -> RedisClient:
    """A client of ``settings.redis_url``: a cluster's (``redis_cluster``), else a single server's.

    ``options`` are the clients' connection options (timeouts, say).
    """
    if settings.redis_cluster:
        return _Cluster.from_url(settings.redis_url, **options)
    return aioredis.Redis.from_url(settings.redis_url, **options)


class _Cluster(RedisCluster):
    """redis-py's cluster client, whose failure to reach the cluster is a :class:`ConnectionError`.

    Learning the cluster's layout fails with a bare :class:`RedisClusterException` when no
    node answers or the slots are not all served yet, as while a cluster starts; the same
    class also says "you called this wrongly". Raised here, it means only the first: an
    outage, which the error policy retries.
    """

    async def initialize(self, *args: Any, **kwargs: Any) -> RedisCluster:
        try:
            return await super().initialize(*args, **kwargs)
        except RedisClusterException as exc:
            raise ConnectionError(str(exc)) from exc
