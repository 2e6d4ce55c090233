"""Which Redis deployment ``NOTIFIER_REDIS_URL`` names, read from the URL
alone (no connection): one Redis, a Sentinel-watched master, or a Cluster.

    redis://[[user]:password@]host:port/db      one Redis (rediss:// for TLS, unix:///path?db=0)
    redis+sentinel://[[user]:password@]h1:26379,h2:26379/<service>/<db>[?options]
    rediss+sentinel://...                        the same, TLS to the sentinels and the master
    redis+cluster://[[user]:password@]h1:6379,h2:6379[?options]
    rediss+cluster://...                         the same, TLS to every node

The credentials in the URL are the data nodes' (the master's, the cluster's).
Sentinel options: ``sentinel_password`` and ``sentinel_username`` (when the
sentinels have their own ``requirepass``), ``sentinel_tls=false`` to speak
plain TCP to the sentinels while the master uses TLS. Every form takes
``ssl_ca_certs=/path`` for a private CA. Pure: parsing only, so the config can
report every problem at startup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

SINGLE, SENTINEL, CLUSTER = "single", "sentinel", "cluster"
SCHEMES = {
    "redis": (SINGLE, False), "rediss": (SINGLE, True), "unix": (SINGLE, False),
    "redis+sentinel": (SENTINEL, False), "rediss+sentinel": (SENTINEL, True),
    "redis+cluster": (CLUSTER, False), "rediss+cluster": (CLUSTER, True),
}
SENTINEL_OPTIONS = ("sentinel_password", "sentinel_username", "sentinel_tls", "ssl_ca_certs")
CLUSTER_OPTIONS = ("ssl_ca_certs",)


class TopologyError(ValueError):
    """The URL does not name a deployment notifier can use (the message says why)."""


@dataclass(frozen=True)
class RedisTopology:
    kind: str
    url: str = field(repr=False)  # as given (single: handed to redis-py as is); holds the password
    hosts: tuple[tuple[str, int], ...] = ()  # sentinels, or cluster seed nodes
    service: str = ""  # the master's name at the sentinels
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    sentinel_tls: bool = False
    ssl_ca_certs: str | None = None

    @property
    def sharded(self) -> bool:
        return self.kind == CLUSTER


def parse_redis_url(url: str) -> RedisTopology:
    """Raises TopologyError naming the problem (never echoing a password)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise TopologyError("NOTIFIER_REDIS_URL must start with redis://, rediss://, unix://, "
                            "redis+sentinel://, rediss+sentinel://, redis+cluster:// or rediss+cluster://")
    kind, tls = SCHEMES[scheme]
    if kind == SINGLE:
        return RedisTopology(SINGLE, url, tls=tls)
    parts = urlsplit(url)
    netloc = parts.netloc
    credentials, _, hostlist = netloc.rpartition("@")
    username, password = _credentials(credentials)
    hosts = tuple(_host(item, 26379 if kind == SENTINEL else 6379) for item in hostlist.split(",") if item.strip())
    if not hosts:
        raise TopologyError(f"NOTIFIER_REDIS_URL ({scheme}://) needs at least one host:port")
    options = {key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
    known = SENTINEL_OPTIONS if kind == SENTINEL else CLUSTER_OPTIONS
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TopologyError(f"NOTIFIER_REDIS_URL: unknown option(s) {', '.join(unknown)}; "
                            f"{scheme}:// takes {', '.join(known)}")
    common = dict(url=url, hosts=hosts, username=username, password=password, tls=tls,
                  ssl_ca_certs=options.get("ssl_ca_certs") or None)
    if kind == CLUSTER:
        if parts.path not in ("", "/"):
            raise TopologyError("NOTIFIER_REDIS_URL: a cluster has only database 0: no /<db> path")
        return RedisTopology(CLUSTER, **common)  # type: ignore[arg-type]
    service, db = _service_and_db(parts.path)
    return RedisTopology(
        SENTINEL, service=service, db=db, sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
        sentinel_tls=_flag(options.get("sentinel_tls"), tls), **common)  # type: ignore[arg-type]


def _credentials(text: str) -> tuple[str | None, str | None]:
    if not text:
        return None, None
    user, has_password, password = text.partition(":")
    return (unquote(user) or None), (unquote(password) if has_password and password else None)


def _host(item: str, default_port: int) -> tuple[str, int]:
    item = item.strip()
    host, _, port_text = item.rpartition(":") if not item.endswith("]") and ":" in item else (item, "", "")
    host = host.strip("[]")
    if not host:
        raise TopologyError(f"NOTIFIER_REDIS_URL: {item!r} is not host:port")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise TopologyError(f"NOTIFIER_REDIS_URL: port of {item!r} is not a number") from None
    if not 0 < port < 65536:
        raise TopologyError(f"NOTIFIER_REDIS_URL: port of {item!r} is out of range")
    return host, port


def _service_and_db(path: str) -> tuple[str, int]:
    pieces = [unquote(piece) for piece in path.strip("/").split("/") if piece]
    if not pieces or len(pieces) > 2:
        raise TopologyError("NOTIFIER_REDIS_URL: redis+sentinel:// needs /<service name>[/<db>], "
                            "e.g. redis+sentinel://h1:26379,h2:26379/mymaster/0")
    db = 0
    if len(pieces) == 2:
        if not pieces[1].isdigit():
            raise TopologyError(f"NOTIFIER_REDIS_URL: database {pieces[1]!r} is not a number")
        db = int(pieces[1])
    return pieces[0], db


def _flag(raw: str | None, default: bool) -> bool:
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise TopologyError(f"NOTIFIER_REDIS_URL: sentinel_tls must be true or false, got {raw!r}")
