"""The app's settings: ``Config``, read from ``NOTIFIER_*`` once at startup,
validated with every problem listed in one ``ConfigError``, frozen after."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..redis_topology import RedisTopology, TopologyError, parse_redis_url
from .keys import PLACEHOLDER, Keys, read_keys
from .network import check_loopback_bind, cors_origins
from .reader import ConfigError, Reader
from .server import LOG_LEVELS, default_streams_per_worker

# Nesting of a publish's ``data``: far below what the JSON parser (and every
# reader of the history) can take, and more than any real payload needs.
MAX_DATA_DEPTH_LIMIT = 256


def _secret_field(**kwargs: Any) -> Any:
    return field(repr=False, **kwargs)


@dataclass(frozen=True)
class Config:
    """All settings. Build with ``Config.from_env()`` or ``Config.for_testing()``."""

    env: str = "production"
    redis_url: str | None = None
    redis_prefix: str = "notifier:"
    redis_socket_timeout: float = 5.0
    # Sentinel/Cluster: replicas that must hold an event before its publish is
    # acknowledged (WAIT after the publish script); 0 = asynchronous replication.
    redis_min_replicas: int = 0
    # Cluster: how far (ms) one channel's event may trail another channel's in
    # a stream; a resume replays each channel from Last-Event-ID minus this.
    cluster_reorder_ms: int = 2000

    jwt_algorithm: str = "HS256"
    jwt_secret: str | None = _secret_field(default=None)
    jwt_public_key: str | None = _secret_field(default=None)
    jwt_private_key: str | None = _secret_field(default=None)
    jwt_cookie_name: str = "notifier_access"
    jwt_cookie_secure: bool = True
    jwt_leeway_seconds: int = 5
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    # A JWKS document (the text of NOTIFIER_JWT_JWKS_FILE): verification keys
    # selected by each token's ``kid``; its first key signs (``notifier token``).
    jwt_jwks: str | None = _secret_field(default=None)

    cors_origins: tuple[str, ...] = ()
    publish_rate: float = 1000.0
    publish_burst: int = 2000

    heartbeat_seconds: float = 15.0
    retry_ms: int = 3000
    max_stream_seconds: float = 3600.0
    queue_size: int = 512
    queue_bytes: int = 2 * 1024 * 1024
    write_timeout_seconds: float = 30.0
    max_topics: int = 20
    max_streams_per_user: int = 20
    max_streams_per_worker: int = 9000
    stream_lease_seconds: float = 60.0

    max_payload_bytes: int = 64 * 1024
    max_batch: int = 100
    max_recipients: int = 1000
    max_data_depth: int = 32
    page_max_bytes: int = 1024 * 1024

    history_max_events: int = 1000
    history_max_age_seconds: int = 24 * 3600
    replay_max_events: int = 1000
    replay_max_bytes: int = 8 * 1024 * 1024

    probe_interval_seconds: float = 5.0
    probe_timeout_seconds: float = 3.0
    drain_seconds: float = 10.0

    log_level: str = "INFO"
    # The dev login page mints a cookie for any user: it exists only in
    # development mode *with the generated local secret*, so a deployment that
    # sets NOTIFIER_ENV=development by mistake next to its real secret does not
    # hand out tokens signed with that secret.
    dev_page: bool = False

    @property
    def dev_mode(self) -> bool:
        return self.env == "development"

    @property
    def uses_redis(self) -> bool:
        return self.redis_url is not None

    @property
    def redis_topology(self) -> RedisTopology | None:
        """What ``redis_url`` names (validated by from_env)."""
        return parse_redis_url(self.redis_url) if self.redis_url is not None else None

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if not f.repr:
                value = "***" if value else None
            elif f.name == "redis_url" and value:
                value = mask_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"Config({', '.join(shown)})"

    __str__ = __repr__

    # ------------------------------------------------------------------

    @classmethod
    def for_testing(cls, **overrides: Any) -> Config:
        base = cls(env="development", jwt_secret="t" * 48, jwt_cookie_secure=False)
        return replace(base, **overrides)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, host_redis_url: tuple[str, str] | None = None,
                 needs_keys: bool = True) -> Config:
        """Read and validate ``NOTIFIER_*`` variables. Raises ConfigError listing every problem.

        ``host_redis_url``: ``(setting name, URL)`` from the host app's own
        settings (``compat.flask_sse``: ``SSE_REDIS_URL`` / ``REDIS_URL``),
        used when ``NOTIFIER_REDIS_URL`` is not set (the deployment's setting
        wins over the code's) and validated the same way.
        ``needs_keys=False``: for a caller whose streams verify no token
        (anonymous): no JWT key is required, and no development secret is
        created, unless one is configured.
        """
        reader = Reader(os.environ if environ is None else environ)
        redis_name, redis_url = "NOTIFIER_REDIS_URL", reader.text("REDIS_URL")
        if redis_url is None and host_redis_url is not None:
            redis_name, redis_url = host_redis_url
        secret = reader.text("JWT_SECRET")
        env = _environment(reader, deployed=bool(redis_url or secret or reader.text("JWT_PUBLIC_KEY_FILE")))
        dev = env == "development"
        algorithm = (reader.text("JWT_ALGORITHM") or ("RS256" if reader.text("JWT_PUBLIC_KEY_FILE") else "HS256")).upper()
        wants_keys = needs_keys or bool(secret or reader.text("JWT_PUBLIC_KEY_FILE") or reader.text("JWT_JWKS_FILE"))
        keys = read_keys(reader, algorithm, secret, dev) if wants_keys else Keys()
        if dev:
            check_loopback_bind(reader)
        config = cls(
            env=env,
            **_redis_settings(reader, redis_url, redis_name),
            **_jwt_settings(reader, algorithm, keys, dev),
            **_stream_settings(reader),
            **_publish_settings(reader),
            **_history_settings(reader),
            log_level=(reader.text("LOG_LEVEL") or "INFO").upper(),
            dev_page=keys.dev_secret and dev,
        )
        if config.log_level not in LOG_LEVELS:
            reader.problem("NOTIFIER_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        if reader.problems:
            raise ConfigError(reader.problems)
        return config


def _environment(reader: Reader, *, deployed: bool) -> str:
    """``development`` or ``production``. Zero configuration means a newcomer
    on a laptop: development. Anything that looks like a deployment (a
    secret, a key or a Redis) defaults to production; the image sets it."""
    env = (reader.text("ENV") or ("production" if deployed else "development")).lower()
    env = {"dev": "development", "develop": "development", "prod": "production"}.get(env, env)
    if env not in ("development", "production"):
        reader.problem("NOTIFIER_ENV must be 'development' or 'production'")
    return env


def _redis_settings(reader: Reader, redis_url: str | None, redis_name: str) -> dict[str, Any]:
    topology = None
    if redis_url is not None:
        try:
            topology = parse_redis_url(redis_url)
        except TopologyError as exc:
            reader.problem(str(exc).replace("NOTIFIER_REDIS_URL", redis_name))
        if PLACEHOLDER in redis_url:
            reader.problem(f"{redis_name} holds the example's placeholder ({PLACEHOLDER}); set the real password")
    prefix = reader.text("REDIS_PREFIX") or "notifier:"
    if topology is not None and topology.sharded and ("{" in prefix or "}" in prefix):
        reader.problem("NOTIFIER_REDIS_PREFIX must not contain { or } with a Redis Cluster "
                       "(the channel names carry the hash tag)")
    min_replicas = reader.number("REDIS_MIN_REPLICAS", 0, int, 0, 16)
    if min_replicas and (topology is None or topology.kind == "single"):
        reader.problem("NOTIFIER_REDIS_MIN_REPLICAS needs a replicated Redis: a redis+sentinel:// "
                       "or redis+cluster:// NOTIFIER_REDIS_URL")
    return dict(
        redis_url=redis_url,
        redis_prefix=prefix,
        redis_socket_timeout=reader.number("REDIS_SOCKET_TIMEOUT", 5.0, float, 0.1, 300),
        redis_min_replicas=min_replicas,
        cluster_reorder_ms=reader.number("CLUSTER_REORDER_MS", 2000, int, 0, 600_000),
        probe_interval_seconds=reader.number("PROBE_INTERVAL_SECONDS", 5.0, float, 0.05, 3600),
        probe_timeout_seconds=reader.number("PROBE_TIMEOUT_SECONDS", 3.0, float, 0.05, 3600),
    )


def _jwt_settings(reader: Reader, algorithm: str, keys: Keys, dev: bool) -> dict[str, Any]:
    return dict(
        jwt_algorithm=algorithm,
        jwt_secret=keys.secret,
        jwt_public_key=keys.public_key,
        jwt_private_key=keys.private_key,
        jwt_cookie_name=reader.text("JWT_COOKIE_NAME") or "notifier_access",
        jwt_cookie_secure=reader.flag("JWT_COOKIE_SECURE", not dev),
        jwt_leeway_seconds=reader.number("JWT_LEEWAY_SECONDS", 5, int, 0, 300),
        jwt_issuer=reader.text("JWT_ISSUER"),
        jwt_audience=reader.text("JWT_AUDIENCE"),
        jwt_jwks=keys.jwks,
        cors_origins=cors_origins(reader),
    )


def _stream_settings(reader: Reader) -> dict[str, Any]:
    # gunicorn's own setting, read here only to leave room for requests that are not streams.
    worker_connections = reader.number("WORKER_CONNECTIONS", 10000, int, 1, 1_000_000)
    return dict(
        heartbeat_seconds=reader.number("HEARTBEAT_SECONDS", 15.0, float, 0.05, 300),
        retry_ms=reader.number("RETRY_MS", 3000, int, 100, 600_000),
        max_stream_seconds=reader.number("MAX_STREAM_SECONDS", 3600.0, float, 1, 7 * 24 * 3600),
        queue_size=reader.number("QUEUE_SIZE", 512, int, 1, 1_000_000),
        queue_bytes=reader.number("QUEUE_BYTES", 2 * 1024 * 1024, int, 64 * 1024, 1024 * 1024 * 1024),
        write_timeout_seconds=reader.number("WRITE_TIMEOUT_SECONDS", 30.0, float, 1, 3600),
        max_topics=reader.number("MAX_TOPICS", 20, int, 0, 1000),
        max_streams_per_user=reader.number("MAX_STREAMS_PER_USER", 20, int, 1, 100_000),
        max_streams_per_worker=reader.number(
            "MAX_STREAMS_PER_WORKER", default_streams_per_worker(worker_connections), int, 1, 1_000_000),
        stream_lease_seconds=reader.number("STREAM_LEASE_SECONDS", 60.0, float, 3, 3600),
        drain_seconds=reader.number("DRAIN_SECONDS", 10.0, float, 0, 3600),
    )


def _publish_settings(reader: Reader) -> dict[str, Any]:
    return dict(
        publish_rate=reader.number("PUBLISH_RATE", 1000.0, float, 0, 1_000_000),
        publish_burst=reader.number("PUBLISH_BURST", 2000, int, 1, 10_000_000),
        max_payload_bytes=reader.number("MAX_PAYLOAD_BYTES", 64 * 1024, int, 64, 16 * 1024 * 1024),
        max_batch=reader.number("MAX_BATCH", 100, int, 1, 10_000),
        max_recipients=reader.number("MAX_RECIPIENTS", 1000, int, 1, 100_000),
        max_data_depth=reader.number("MAX_DATA_DEPTH", 32, int, 1, MAX_DATA_DEPTH_LIMIT),
    )


def _history_settings(reader: Reader) -> dict[str, Any]:
    return dict(
        page_max_bytes=reader.number("PAGE_MAX_BYTES", 1024 * 1024, int, 64 * 1024, 256 * 1024 * 1024),
        history_max_events=reader.number("HISTORY_MAX_EVENTS", 1000, int, 1, 10_000_000),
        history_max_age_seconds=reader.number("HISTORY_MAX_AGE_SECONDS", 24 * 3600, int, 1, 365 * 24 * 3600),
        replay_max_events=reader.number("REPLAY_MAX_EVENTS", 1000, int, 1, 1_000_000),
        replay_max_bytes=reader.number("REPLAY_MAX_BYTES", 8 * 1024 * 1024, int, 64 * 1024, 1024 * 1024 * 1024),
    )

# The variables Config.from_env reads, for docs and for the manifest tests.
ENV_VARS = (
    "ENV", "REDIS_URL", "REDIS_PREFIX", "REDIS_SOCKET_TIMEOUT", "REDIS_MIN_REPLICAS", "CLUSTER_REORDER_MS",
    "JWT_SECRET", "JWT_ALGORITHM",
    "JWT_PUBLIC_KEY_FILE", "JWT_PRIVATE_KEY_FILE", "JWT_COOKIE_NAME", "JWT_COOKIE_SECURE",
    "JWT_LEEWAY_SECONDS", "DEV_SECRET_FILE", "HEARTBEAT_SECONDS", "RETRY_MS", "MAX_STREAM_SECONDS", "QUEUE_SIZE",
    "QUEUE_BYTES", "WRITE_TIMEOUT_SECONDS", "MAX_TOPICS", "MAX_STREAMS_PER_USER", "MAX_STREAMS_PER_WORKER",
    "STREAM_LEASE_SECONDS", "MAX_PAYLOAD_BYTES", "MAX_BATCH", "MAX_RECIPIENTS", "MAX_DATA_DEPTH", "PAGE_MAX_BYTES",
    "HISTORY_MAX_EVENTS", "HISTORY_MAX_AGE_SECONDS", "REPLAY_MAX_EVENTS", "REPLAY_MAX_BYTES",
    "PROBE_INTERVAL_SECONDS", "PROBE_TIMEOUT_SECONDS", "DRAIN_SECONDS", "LOG_LEVEL", "JWT_ISSUER", "JWT_AUDIENCE",
    "JWT_JWKS_FILE", "CORS_ORIGINS", "PUBLISH_RATE", "PUBLISH_BURST",
)


def mask_url(url: str) -> str:
    """``redis://:pw@host:6379/0`` -> ``redis://:***@host:6379/0``; a
    ``sentinel_password=`` option is masked too."""
    url = re.sub(r"(sentinel_password=)[^&]*", r"\1***", url)
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0] if ":" in credentials else ""
    return f"{scheme}://{user}:***@{host}"
