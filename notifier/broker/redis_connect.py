"""Clients for each Redis topology ``NOTIFIER_REDIS_URL`` can name
(``redis_topology.py``): one Redis, a master found through Sentinel, or a
Cluster. redis-py's own ``Sentinel`` and ``RedisCluster`` do the discovery.

Command clients never retry on their own: a publish whose reply was lost may
have run, so retrying is the caller's decision (the API answers 503 and the
publisher retries).
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from ..redis_topology import CLUSTER, SENTINEL, RedisTopology, parse_redis_url
from ..runtime.redis import send_and_read


def make_client(url: str, socket_timeout: float = 5.0, max_connections: int = 64) -> redis.Redis:
    """A client for commands (not pub/sub) to one Redis or to the master
    Sentinel names.

    One Redis: a blocking pool (under gevent many greenlets share a few
    connections and wait for one rather than fail). Sentinel: redis-py's
    ``SentinelConnectionPool``, whose connections ask the sentinels for the
    master on every connect and drop themselves on a ``READONLY`` reply (a
    demoted master), so the next command goes to the new one.
    """
    topology = parse_redis_url(url)
    if topology.kind == CLUSTER:
        raise ValueError("a redis+cluster:// URL needs make_cluster_client")
    common: dict[str, Any] = dict(socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
                                  retry=Retry(NoBackoff(), 0), protocol=2)
    if topology.kind == SENTINEL:
        return sentinel_for(topology, socket_timeout).master_for(
            topology.service, db=topology.db, max_connections=max_connections, **common, **_auth(topology))
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=socket_timeout,
                                                 **common)
    return redis.Redis(connection_pool=pool)


def sentinel_for(topology: RedisTopology, socket_timeout: float) -> Sentinel:
    sentinel_kwargs: dict[str, Any] = dict(socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout)
    if topology.sentinel_password:
        sentinel_kwargs["password"] = topology.sentinel_password
    if topology.sentinel_username:
        sentinel_kwargs["username"] = topology.sentinel_username
    if topology.sentinel_tls:
        sentinel_kwargs.update(ssl=True, ssl_ca_certs=topology.ssl_ca_certs)
    return Sentinel(list(topology.hosts), sentinel_kwargs=sentinel_kwargs, socket_timeout=socket_timeout)


def make_cluster_client(url: str, socket_timeout: float = 5.0, max_connections: int = 64) -> RedisCluster:
    """A ``RedisCluster`` from the seed nodes; it learns the slot map itself."""
    topology = parse_redis_url(url)
    if topology.kind != CLUSTER:
        raise ValueError("make_cluster_client needs a redis+cluster:// URL")
    nodes = [redis.cluster.ClusterNode(host, port) for host, port in topology.hosts]
    return RedisCluster(startup_nodes=nodes, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
                        max_connections=max_connections, retry=Retry(NoBackoff(), 0), protocol=2,
                        **_auth(topology))


def _auth(topology: RedisTopology) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if topology.password:
        kwargs["password"] = topology.password
    if topology.username:
        kwargs["username"] = topology.username
    if topology.tls:
        kwargs["ssl"] = True
        if topology.ssl_ca_certs:
            kwargs["ssl_ca_certs"] = topology.ssl_ca_certs
    return kwargs


class RoleCheck:
    """Asks the server a pub/sub connection is connected to for its ROLE, on
    a connection of its own (a subscribed connection may only PING).

    With Sentinel the subscriber must notice that its server was demoted: a
    demoted master still accepts the connection, and may still relay what its
    new master publishes, or nothing at all when it cannot reach it.
    """

    def __init__(self, kwargs: dict[str, Any]):
        self._kwargs = {k: v for k, v in kwargs.items() if k not in ("connection_pool", "host", "port")}
        self._connection: redis.Connection | None = None

    def role(self, connection: Any) -> str:
        address = (connection.host, connection.port)
        if self._connection is None or (self._connection.host, self._connection.port) != address:
            self.close()
            kind = redis.SSLConnection if isinstance(connection, redis.SSLConnection) else redis.Connection
            self._connection = kind(host=address[0], port=address[1], **self._kwargs)
        try:
            reply = send_and_read(self._connection, "ROLE")
        except BaseException:
            self.close()
            raise
        role = reply[0]
        return role.decode() if isinstance(role, bytes) else str(role)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.disconnect()
            self._connection = None


def close_client(client: Any) -> None:
    """Release a client's connections (``close()`` leaves a pool it was given open)."""
    client.close()
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        pool.disconnect()
