"""Configuration: read once from ``NOTIFIER_*`` environment variables, validated
once at startup, frozen afterwards.

Every problem is collected and reported together in one ``ConfigError`` so an
operator fixes them in one go; secrets are never part of a message or a repr.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from .redis_topology import RedisTopology, TopologyError, parse_redis_url

PREFIX = "NOTIFIER_"
MIN_SECRET_BYTES = 32
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
KEY_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")

log = logging.getLogger("notifier.config")

T = TypeVar("T")


class ConfigError(Exception):
    """Every configuration problem found, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


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

    heartbeat_seconds: float = 15.0
    retry_ms: int = 3000
    max_stream_seconds: float = 3600.0
    queue_size: int = 512
    max_topics: int = 20

    max_payload_bytes: int = 64 * 1024
    max_batch: int = 100
    max_recipients: int = 1000

    history_max_events: int = 1000
    history_max_age_seconds: int = 24 * 3600
    replay_max_events: int = 1000

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
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Read and validate ``NOTIFIER_*`` variables. Raises ConfigError listing every problem."""
        env_vars = os.environ if environ is None else environ
        reader = _Reader(env_vars)

        redis_url = reader.text("REDIS_URL")
        secret = reader.text("JWT_SECRET")
        public_key_file = reader.text("JWT_PUBLIC_KEY_FILE")
        private_key_file = reader.text("JWT_PRIVATE_KEY_FILE")

        env = reader.text("ENV")
        if env is None:
            # Zero configuration means a newcomer on a laptop: development.
            # Anything that looks like a deployment (a secret, a key or a
            # Redis) defaults to production, and the image sets ENV explicitly.
            env = "development" if not (redis_url or secret or public_key_file) else "production"
        env = env.lower()
        if env in ("dev", "develop"):
            env = "development"
        if env in ("prod",):
            env = "production"
        if env not in ("development", "production"):
            reader.problem("NOTIFIER_ENV must be 'development' or 'production'")
        dev = env == "development"

        algorithm = (reader.text("JWT_ALGORITHM") or ("RS256" if public_key_file else "HS256")).upper()
        public_key = private_key = None
        dev_page = False
        if algorithm in HMAC_ALGORITHMS:
            if public_key_file:
                reader.problem(f"NOTIFIER_JWT_PUBLIC_KEY_FILE is set but NOTIFIER_JWT_ALGORITHM is {algorithm}; use RS256/ES256 with a key")
            if secret is None and dev:
                secret = load_dev_secret(reader.text("DEV_SECRET_FILE"))
                dev_page = True
            if secret is None:
                reader.problem("NOTIFIER_JWT_SECRET is required (or NOTIFIER_JWT_PUBLIC_KEY_FILE with NOTIFIER_JWT_ALGORITHM=RS256/ES256)")
            elif len(secret.encode("utf-8")) < _min_secret_bytes(algorithm):
                needed = _min_secret_bytes(algorithm)
                if dev:
                    log.warning("NOTIFIER_JWT_SECRET is shorter than %d bytes: refused outside development", needed)
                else:
                    reader.problem(f"NOTIFIER_JWT_SECRET is too weak: at least {needed} bytes are required for {algorithm}")
        elif algorithm in KEY_ALGORITHMS:
            if secret:
                reader.problem(f"NOTIFIER_JWT_SECRET is set but NOTIFIER_JWT_ALGORITHM is {algorithm}; give NOTIFIER_JWT_PUBLIC_KEY_FILE instead")
            if not public_key_file:
                reader.problem(f"NOTIFIER_JWT_PUBLIC_KEY_FILE is required with NOTIFIER_JWT_ALGORITHM={algorithm}")
            else:
                public_key = reader.file("JWT_PUBLIC_KEY_FILE", public_key_file)
            if private_key_file:
                private_key = reader.file("JWT_PRIVATE_KEY_FILE", private_key_file)
            try:
                import cryptography  # noqa: F401
            except ImportError:
                reader.problem(f"NOTIFIER_JWT_ALGORITHM={algorithm} needs the 'cryptography' package (pip install cryptography)")
        else:
            reader.problem(f"NOTIFIER_JWT_ALGORITHM must be one of {', '.join(HMAC_ALGORITHMS + KEY_ALGORITHMS)}")

        topology = None
        if redis_url is not None:
            try:
                topology = parse_redis_url(redis_url)
            except TopologyError as exc:
                reader.problem(str(exc))
        redis_prefix = reader.text("REDIS_PREFIX") or "notifier:"
        if topology is not None and topology.sharded and ("{" in redis_prefix or "}" in redis_prefix):
            reader.problem("NOTIFIER_REDIS_PREFIX must not contain { or } with a Redis Cluster "
                           "(the channel names carry the hash tag)")
        min_replicas = reader.number("REDIS_MIN_REPLICAS", 0, int, 0, 16)
        if min_replicas and (topology is None or topology.kind == "single"):
            reader.problem("NOTIFIER_REDIS_MIN_REPLICAS needs a replicated Redis: a redis+sentinel:// "
                           "or redis+cluster:// NOTIFIER_REDIS_URL")

        config = cls(
            env=env,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            redis_socket_timeout=reader.number("REDIS_SOCKET_TIMEOUT", 5.0, float, 0.1, 300),
            redis_min_replicas=min_replicas,
            cluster_reorder_ms=reader.number("CLUSTER_REORDER_MS", 2000, int, 0, 600_000),
            jwt_algorithm=algorithm,
            jwt_secret=secret if algorithm in HMAC_ALGORITHMS else None,
            jwt_public_key=public_key,
            jwt_private_key=private_key,
            jwt_cookie_name=reader.text("JWT_COOKIE_NAME") or "notifier_access",
            jwt_cookie_secure=reader.flag("JWT_COOKIE_SECURE", not dev),
            jwt_leeway_seconds=reader.number("JWT_LEEWAY_SECONDS", 5, int, 0, 300),
            heartbeat_seconds=reader.number("HEARTBEAT_SECONDS", 15.0, float, 0.05, 300),
            retry_ms=reader.number("RETRY_MS", 3000, int, 100, 600_000),
            max_stream_seconds=reader.number("MAX_STREAM_SECONDS", 3600.0, float, 1, 7 * 24 * 3600),
            queue_size=reader.number("QUEUE_SIZE", 512, int, 1, 1_000_000),
            max_topics=reader.number("MAX_TOPICS", 20, int, 0, 1000),
            max_payload_bytes=reader.number("MAX_PAYLOAD_BYTES", 64 * 1024, int, 64, 16 * 1024 * 1024),
            max_batch=reader.number("MAX_BATCH", 100, int, 1, 10_000),
            max_recipients=reader.number("MAX_RECIPIENTS", 1000, int, 1, 100_000),
            history_max_events=reader.number("HISTORY_MAX_EVENTS", 1000, int, 1, 10_000_000),
            history_max_age_seconds=reader.number("HISTORY_MAX_AGE_SECONDS", 24 * 3600, int, 1, 365 * 24 * 3600),
            replay_max_events=reader.number("REPLAY_MAX_EVENTS", 1000, int, 1, 1_000_000),
            probe_interval_seconds=reader.number("PROBE_INTERVAL_SECONDS", 5.0, float, 0.05, 3600),
            probe_timeout_seconds=reader.number("PROBE_TIMEOUT_SECONDS", 3.0, float, 0.05, 3600),
            drain_seconds=reader.number("DRAIN_SECONDS", 10.0, float, 0, 3600),
            log_level=(reader.text("LOG_LEVEL") or "INFO").upper(),
            dev_page=dev_page and dev,
        )
        if config.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            reader.problem("NOTIFIER_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        if reader.problems:
            raise ConfigError(reader.problems)
        return config


# The variables Config.from_env reads, for docs and for the manifest tests.
ENV_VARS = (
    "ENV", "REDIS_URL", "REDIS_PREFIX", "REDIS_SOCKET_TIMEOUT", "REDIS_MIN_REPLICAS", "CLUSTER_REORDER_MS",
    "JWT_SECRET", "JWT_ALGORITHM",
    "JWT_PUBLIC_KEY_FILE", "JWT_PRIVATE_KEY_FILE", "JWT_COOKIE_NAME", "JWT_COOKIE_SECURE",
    "JWT_LEEWAY_SECONDS", "DEV_SECRET_FILE", "HEARTBEAT_SECONDS", "RETRY_MS", "MAX_STREAM_SECONDS",
    "QUEUE_SIZE", "MAX_TOPICS", "MAX_PAYLOAD_BYTES", "MAX_BATCH", "MAX_RECIPIENTS",
    "HISTORY_MAX_EVENTS", "HISTORY_MAX_AGE_SECONDS", "REPLAY_MAX_EVENTS", "PROBE_INTERVAL_SECONDS",
    "PROBE_TIMEOUT_SECONDS", "DRAIN_SECONDS", "LOG_LEVEL",
)


class _Reader:
    """Reads variables and collects problems instead of raising on the first."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ
        self.problems: list[str] = []

    def problem(self, message: str) -> None:
        self.problems.append(message)

    def text(self, name: str) -> str | None:
        value = self.environ.get(PREFIX + name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def number(self, name: str, default: T, kind: Callable[[str], T], low: float, high: float) -> T:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = kind(raw)
        except ValueError:
            self.problem(f"{PREFIX}{name} must be a {'whole ' if kind is int else ''}number, got {raw!r}")
            return default
        if not (low <= value <= high):  # type: ignore[operator]
            self.problem(f"{PREFIX}{name} must be between {low:g} and {high:g}, got {raw}")
            return default
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.text(name)
        if raw is None:
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        self.problem(f"{PREFIX}{name} must be true or false, got {raw!r}")
        return default

    def file(self, name: str, path: str) -> str | None:
        try:
            return Path(path).read_text()
        except OSError as exc:
            self.problem(f"{PREFIX}{name}: cannot read {path}: {exc.strerror}")
            return None


def _min_secret_bytes(algorithm: str) -> int:
    """RFC 7518 3.2: an HMAC key at least as long as the hash (32/48/64 bytes)."""
    return max(MIN_SECRET_BYTES, int(algorithm[2:]) // 8)


def default_dev_secret_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "notifier" / "dev-secret"


def load_dev_secret(path: str | None = None) -> str:
    """The local development secret, created on first use and kept (mode 0600)
    so that the service and ``notifier token`` agree across restarts."""
    secret_path = Path(path) if path else default_dev_secret_file()
    try:
        existing = secret_path.read_text().strip()
        if len(existing) >= MIN_SECRET_BYTES:
            return existing
    except FileNotFoundError:
        pass
    secret_path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    log.warning("created a development JWT secret in %s", secret_path)
    return value


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
