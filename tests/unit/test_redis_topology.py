"""NOTIFIER_REDIS_URL names the topology; every malformed URL is one clear
line of the startup ConfigError, and no password is ever echoed."""

from __future__ import annotations

import pytest

from notifier.config import Config, ConfigError, mask_url
from notifier.redis_topology import parse_redis_url

from ..support.tokens import SECRET

BASE = {"NOTIFIER_JWT_SECRET": SECRET}


def config(**env: str) -> Config:
    return Config.from_env({**BASE, **{f"NOTIFIER_{k}": v for k, v in env.items()}})


def test_each_topology_parses() -> None:
    assert parse_redis_url("redis://r:6379/0").kind == "single"
    assert parse_redis_url("unix:///run/redis.sock?db=0").kind == "single"
    sentinel = parse_redis_url("rediss+sentinel://user:pw@s1:26379,s2,[::1]:26380/mymaster/2"
                               "?sentinel_password=sp&sentinel_tls=false")
    assert (sentinel.kind, sentinel.service, sentinel.db) == ("sentinel", "mymaster", 2)
    assert sentinel.hosts == (("s1", 26379), ("s2", 26379), ("::1", 26380))
    assert (sentinel.username, sentinel.password, sentinel.sentinel_password) == ("user", "pw", "sp")
    assert sentinel.tls and not sentinel.sentinel_tls
    cluster = parse_redis_url("rediss+cluster://:pw@n1:7000,n2?ssl_ca_certs=/ca.pem")
    assert cluster.sharded and cluster.hosts == (("n1", 7000), ("n2", 6379)) and cluster.tls
    assert cluster.ssl_ca_certs == "/ca.pem" and "pw" not in repr(cluster)


@pytest.mark.parametrize("url, says", [
    ("http://r:6379", "must start with redis://"),
    ("redis+sentinel://s1:26379", "needs /<service name>"),
    ("redis+sentinel://s1:26379/m/zero", "database 'zero' is not a number"),
    ("redis+sentinel:///m/0", "at least one host:port"),
    ("redis+sentinel://s1:port/m/0", "is not a number"),
    ("redis+sentinel://s1:26379/m/0?sentinel_tls=maybe", "sentinel_tls must be true or false"),
    ("redis+sentinel://s1:26379/m/0?password=x", "unknown option(s) password"),
    ("redis+cluster://n1:6379/3", "only database 0"),
    ("redis+cluster://n1:99999", "out of range"),
])
def test_a_bad_url_is_one_clear_problem_without_the_password(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as error:
        config(REDIS_URL=url.replace("://", "://:hunter2@", 1) if "@" not in url and ":///" not in url else url)
    assert len(error.value.problems) == 1 and says in error.value.problems[0], error.value.problems
    assert "hunter2" not in str(error.value)


def test_min_replicas_needs_a_replicated_redis_and_cluster_prefixes_no_braces() -> None:
    with pytest.raises(ConfigError) as error:
        config(REDIS_URL="redis://r:6379/0", REDIS_MIN_REPLICAS="1")
    assert "needs a replicated Redis" in str(error.value)
    with pytest.raises(ConfigError) as error:
        config(REDIS_URL="redis+cluster://n1:6379", REDIS_PREFIX="app{1}:")
    assert "must not contain { or }" in str(error.value)
    assert config(REDIS_URL="redis+sentinel://s1/m/0", REDIS_MIN_REPLICAS="1").redis_min_replicas == 1
    assert config(REDIS_URL="redis+cluster://n1", CLUSTER_REORDER_MS="500").cluster_reorder_ms == 500


def test_sentinel_password_is_masked_in_the_effective_settings() -> None:
    shown = mask_url("redis+sentinel://:pw@s1:26379/m/0?sentinel_password=sp&sentinel_tls=true")
    assert "pw" not in shown.replace("sentinel_password", "") and "sp&" not in shown and "sentinel_tls=true" in shown
    assert "sp" not in repr(config(REDIS_URL="redis+sentinel://:pw@s1/m/0?sentinel_password=sp")).replace(
        "sentinel_password", "")
