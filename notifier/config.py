"""Configuration: read once from ``NOTIFIER_*`` environment variables, validated
once at startup, frozen afterwards.

Every problem is collected and reported together in one ``ConfigError`` so an
operator fixes them in one go; secrets are never part of a message or a repr.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import multiprocessing
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
# Nesting of a publish's ``data``: far below what the JSON parser (and every
# reader of the history) can take, and more than any real payload needs.
MAX_DATA_DEPTH_LIMIT = 256
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
KEY_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")
# The placeholder of k8s/overlays/example/secret.example.yaml: a deployment
# that still carries it was never given its real secret.
PLACEHOLDER = "REPLACE_ME"
# The key type (JWK "kty") each algorithm family verifies with.
JWK_TYPES = {"HS": "oct", "RS": "RSA", "ES": "EC"}

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
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Read and validate ``NOTIFIER_*`` variables. Raises ConfigError listing every problem."""
        env_vars = os.environ if environ is None else environ
        reader = _Reader(env_vars)

        redis_url = reader.text("REDIS_URL")
        secret = reader.text("JWT_SECRET")
        public_key_file = reader.text("JWT_PUBLIC_KEY_FILE")

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
        keys = _read_keys(reader, algorithm, secret, dev)
        if dev:
            _check_loopback_bind(reader)

        # gunicorn's own setting (gunicorn.conf.py), read here only to leave
        # room for requests that are not streams.
        worker_connections = reader.number("WORKER_CONNECTIONS", 10000, int, 1, 1_000_000)

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
        if redis_url is not None and PLACEHOLDER in redis_url:
            reader.problem(f"NOTIFIER_REDIS_URL holds the example's placeholder ({PLACEHOLDER}); set the real password")

        config = cls(
            env=env,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            redis_socket_timeout=reader.number("REDIS_SOCKET_TIMEOUT", 5.0, float, 0.1, 300),
            redis_min_replicas=min_replicas,
            cluster_reorder_ms=reader.number("CLUSTER_REORDER_MS", 2000, int, 0, 600_000),
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
            cors_origins=_cors_origins(reader),
            publish_rate=reader.number("PUBLISH_RATE", 1000.0, float, 0, 1_000_000),
            publish_burst=reader.number("PUBLISH_BURST", 2000, int, 1, 10_000_000),
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
            max_payload_bytes=reader.number("MAX_PAYLOAD_BYTES", 64 * 1024, int, 64, 16 * 1024 * 1024),
            max_batch=reader.number("MAX_BATCH", 100, int, 1, 10_000),
            max_recipients=reader.number("MAX_RECIPIENTS", 1000, int, 1, 100_000),
            max_data_depth=reader.number("MAX_DATA_DEPTH", 32, int, 1, MAX_DATA_DEPTH_LIMIT),
            page_max_bytes=reader.number("PAGE_MAX_BYTES", 1024 * 1024, int, 64 * 1024, 256 * 1024 * 1024),
            history_max_events=reader.number("HISTORY_MAX_EVENTS", 1000, int, 1, 10_000_000),
            history_max_age_seconds=reader.number("HISTORY_MAX_AGE_SECONDS", 24 * 3600, int, 1, 365 * 24 * 3600),
            replay_max_events=reader.number("REPLAY_MAX_EVENTS", 1000, int, 1, 1_000_000),
            replay_max_bytes=reader.number("REPLAY_MAX_BYTES", 8 * 1024 * 1024, int, 64 * 1024, 1024 * 1024 * 1024),
            probe_interval_seconds=reader.number("PROBE_INTERVAL_SECONDS", 5.0, float, 0.05, 3600),
            probe_timeout_seconds=reader.number("PROBE_TIMEOUT_SECONDS", 3.0, float, 0.05, 3600),
            drain_seconds=reader.number("DRAIN_SECONDS", 10.0, float, 0, 3600),
            log_level=(reader.text("LOG_LEVEL") or "INFO").upper(),
            dev_page=keys.dev_secret and dev,
        )
        if config.log_level not in LOG_LEVELS:
            reader.problem("NOTIFIER_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        if reader.problems:
            raise ConfigError(reader.problems)
        return config


@dataclass(frozen=True)
class ServerSettings:
    """gunicorn's side of the service (``gunicorn.conf.py``, ``notifier.server``).
    Build with ``ServerSettings.from_env()``."""

    bind: tuple[str, ...] = ("127.0.0.1:8000",)
    workers: int = 1
    worker_connections: int = 10000
    drain_seconds: float = 10.0
    log_level: str = "INFO"
    embedded_broker: bool = True
    # Not ours, read here so that nothing else reads the environment:
    metrics_dir: str | None = None  # PROMETHEUS_MULTIPROC_DIR
    track_greenlet_tree: str | None = None  # GEVENT_TRACK_GREENLET_TREE
    notes: tuple[str, ...] = ()  # adjustments made, for the server's log

    @property
    def graceful_timeout(self) -> int:
        # Streams are long-lived by design; the drain ends them before this runs out.
        return int(self.drain_seconds) + 10

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        """Read and validate the server variables. Raises ConfigError listing every problem."""
        env_vars = os.environ if environ is None else environ
        reader = _Reader(env_vars)
        bind = tuple(part.strip() for part in (reader.text("BIND") or "127.0.0.1:8000").split(",") if part.strip())
        for address in bind:
            if not _valid_bind(address):
                reader.problem(f"NOTIFIER_BIND: {address!r} is not HOST, HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N")
        if not bind:
            reader.problem("NOTIFIER_BIND must name at least one address")
        workers = reader.number("WORKERS", 0, int, 1, 1024, fallback="WEB_CONCURRENCY") or multiprocessing.cpu_count()
        embedded = reader.text("REDIS_URL") is None
        notes = []
        if embedded and workers != 1:
            # The embedded broker lives inside one process: a second worker
            # would never see the first one's events.
            notes.append("no NOTIFIER_REDIS_URL, so the embedded broker runs in a single worker")
            workers = 1
        log_level = (reader.text("LOG_LEVEL") or "INFO").upper()
        if log_level not in LOG_LEVELS:
            reader.problem("NOTIFIER_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        settings = cls(
            bind=bind,
            workers=workers,
            worker_connections=reader.number("WORKER_CONNECTIONS", 10000, int, 1, 1_000_000),
            drain_seconds=reader.number("DRAIN_SECONDS", 10.0, float, 0, 3600),
            log_level=log_level,
            embedded_broker=embedded,
            metrics_dir=env_vars.get(METRICS_DIR_VAR) or None,
            track_greenlet_tree=env_vars.get("GEVENT_TRACK_GREENLET_TREE") or None,
            notes=tuple(notes),
        )
        if reader.problems:
            raise ConfigError(reader.problems)
        return settings


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
METRICS_DIR_VAR = "PROMETHEUS_MULTIPROC_DIR"
_PORT = re.compile(r"\d{1,5}")


def _valid_bind(address: str) -> bool:
    """gunicorn's address forms; a port, when given, is 0-65535."""
    if address.startswith("unix:"):
        return len(address) > len("unix:")
    if address.startswith("fd://"):
        return address[len("fd://"):].isdigit()
    if any(char.isspace() for char in address):
        return False
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
        if rest and port is None:
            return False  # "[::1]8000"
    else:
        host, colon, port_text = address.rpartition(":")
        host, port = (host, port_text) if colon else (address, None)
        if ":" in host:
            return False  # an IPv6 address needs brackets
    return bool(host) and (port is None or (_PORT.fullmatch(port) is not None and int(port) <= 65535))


def multiprocess_metrics_dir(environ: Mapping[str, str] | None = None) -> str | None:
    """``PROMETHEUS_MULTIPROC_DIR``: where prometheus_client keeps each worker's
    values (set by ``notifier.server`` before any worker starts), or None."""
    return (os.environ if environ is None else environ).get(METRICS_DIR_VAR) or None


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

    def number(self, name: str, default: T, kind: Callable[[str], T], low: float, high: float,
               fallback: str | None = None) -> T:
        """``PREFIX + name``, else the unprefixed ``fallback`` variable, else ``default``."""
        full_name, raw = PREFIX + name, self.text(name)
        if raw is None and fallback is not None:
            full_name, raw = fallback, (self.environ.get(fallback) or "").strip() or None
        if raw is None:
            return default
        try:
            value = kind(raw)
        except ValueError:
            self.problem(f"{full_name} must be a {'whole ' if kind is int else ''}number, got {raw!r}")
            return default
        if not (low <= value <= high):  # type: ignore[operator]
            self.problem(f"{full_name} must be between {low:g} and {high:g}, got {raw}")
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


def default_streams_per_worker(worker_connections: int) -> int:
    """Streams a worker accepts by default: its gunicorn connection budget
    minus a tenth (at least 5), so that health probes, scrapes, publishes and
    refusals still find a free connection when the worker is full of streams."""
    return max(1, worker_connections - max(5, worker_connections // 10))


@dataclass(frozen=True)
class _Keys:
    secret: str | None = None
    public_key: str | None = None
    private_key: str | None = None
    jwks: str | None = None
    dev_secret: bool = False  # the generated development secret (the dev page may mint with it)


def _read_keys(reader: _Reader, algorithm: str, secret: str | None, dev: bool) -> _Keys:
    """The verification (and signing) keys: one HMAC secret, one public key, or a JWKS of several."""
    public_key_file = reader.text("JWT_PUBLIC_KEY_FILE")
    private_key_file = reader.text("JWT_PRIVATE_KEY_FILE")
    jwks_file = reader.text("JWT_JWKS_FILE")
    if algorithm not in HMAC_ALGORITHMS + KEY_ALGORITHMS:
        reader.problem(f"NOTIFIER_JWT_ALGORITHM must be one of {', '.join(HMAC_ALGORITHMS + KEY_ALGORITHMS)}")
        return _Keys()
    if algorithm in KEY_ALGORITHMS:
        try:
            import cryptography  # noqa: F401
        except ImportError:
            reader.problem(f"NOTIFIER_JWT_ALGORITHM={algorithm} needs the 'cryptography' package (pip install cryptography)")
    private_key = reader.file("JWT_PRIVATE_KEY_FILE", private_key_file) if private_key_file else None
    if jwks_file:
        if secret or public_key_file:
            reader.problem("NOTIFIER_JWT_JWKS_FILE replaces NOTIFIER_JWT_SECRET and NOTIFIER_JWT_PUBLIC_KEY_FILE; give only the key set")
        return _Keys(private_key=private_key, jwks=_read_jwks(reader, jwks_file, algorithm))
    if algorithm in KEY_ALGORITHMS:
        if secret:
            reader.problem(f"NOTIFIER_JWT_SECRET is set but NOTIFIER_JWT_ALGORITHM is {algorithm}; give NOTIFIER_JWT_PUBLIC_KEY_FILE instead")
        if not public_key_file:
            reader.problem(f"NOTIFIER_JWT_PUBLIC_KEY_FILE (or NOTIFIER_JWT_JWKS_FILE) is required with NOTIFIER_JWT_ALGORITHM={algorithm}")
            return _Keys(private_key=private_key)
        return _Keys(public_key=reader.file("JWT_PUBLIC_KEY_FILE", public_key_file), private_key=private_key)
    if public_key_file:
        reader.problem(f"NOTIFIER_JWT_PUBLIC_KEY_FILE is set but NOTIFIER_JWT_ALGORITHM is {algorithm}; use RS256/ES256 with a key")
    generated = secret is None and dev
    if generated:
        secret = load_dev_secret(reader.text("DEV_SECRET_FILE"))
    _check_secret(reader, secret, algorithm, dev)
    return _Keys(secret=secret, dev_secret=generated)


def _check_secret(reader: _Reader, secret: str | None, algorithm: str, dev: bool) -> None:
    needed = _min_secret_bytes(algorithm)
    if secret is None:
        reader.problem("NOTIFIER_JWT_SECRET is required (or NOTIFIER_JWT_PUBLIC_KEY_FILE with NOTIFIER_JWT_ALGORITHM=RS256/ES256)")
    elif PLACEHOLDER in secret:
        # Refused in every mode: it is public, so whoever reads the example can sign tokens.
        reader.problem(f"NOTIFIER_JWT_SECRET is the example's placeholder ({PLACEHOLDER}); set a real secret")
    elif len(secret.encode("utf-8")) < needed:
        if dev:
            log.warning("NOTIFIER_JWT_SECRET is shorter than %d bytes: refused outside development", needed)
        else:
            reader.problem(f"NOTIFIER_JWT_SECRET is too weak: at least {needed} bytes are required for {algorithm}")


def _check_loopback_bind(reader: _Reader) -> None:
    """Development mode hands a cookie for any user to whoever asks (the dev
    page): it may listen on this machine only."""
    bind = reader.environ.get(PREFIX + "BIND") or "127.0.0.1:8000"
    for address in (part.strip() for part in bind.split(",")):
        if address and not _is_loopback(address):
            reader.problem(f"NOTIFIER_ENV=development listens on loopback only (127.0.0.1, ::1, localhost or a unix "
                           f"socket); NOTIFIER_BIND has {address!r}. Set NOTIFIER_ENV=production to serve others")


def _is_loopback(address: str) -> bool:
    if address.startswith("unix:"):
        return True
    host = address
    if address.startswith("["):
        host = address[1:].split("]", 1)[0]
    elif address.count(":") == 1:
        host = address.split(":", 1)[0]
    elif address.isdigit():
        return False  # a bare port: every interface
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _cors_origins(reader: _Reader) -> tuple[str, ...]:
    """Exact origins (``https://app.example.com``): credentials are allowed for
    these, so a wildcard would hand every site the user's session."""
    raw = reader.text("CORS_ORIGINS")
    if raw is None:
        return ()
    origins = tuple(dict.fromkeys(part.strip().rstrip("/") for part in raw.split(",") if part.strip()))
    for origin in origins:
        if "*" in origin:
            reader.problem("NOTIFIER_CORS_ORIGINS lists exact origins; a wildcard would let any site read with the "
                           "user's cookie")
        elif not origin.startswith(("https://", "http://")) or "/" in origin.split("://", 1)[1]:
            reader.problem(f"NOTIFIER_CORS_ORIGINS: {origin!r} is not an origin like https://app.example.com")
    return origins


def _read_jwks(reader: _Reader, path: str, algorithm: str) -> str | None:
    """The JWKS file's text, once every key in it has a unique ``kid``, the key
    type of ``algorithm`` and no placeholder. Read once, at startup (see docs/security.md)."""
    text = reader.file("JWT_JWKS_FILE", path)
    if text is None:
        return None
    try:
        keys = json.loads(text)["keys"]
        assert isinstance(keys, list) and keys and all(isinstance(key, dict) for key in keys)
    except (ValueError, KeyError, TypeError, AssertionError):
        reader.problem("NOTIFIER_JWT_JWKS_FILE must be a JSON Web Key Set: {\"keys\": [{\"kid\": ..., \"kty\": ...}, ...]}")
        return None
    kids = [key.get("kid") for key in keys]
    if not all(isinstance(kid, str) and kid for kid in kids) or len(set(kids)) != len(kids):
        reader.problem("NOTIFIER_JWT_JWKS_FILE: every key needs its own non-empty kid")
    wanted = JWK_TYPES.get(algorithm[:2])
    if any(key.get("kty") != wanted or key.get("alg", algorithm) != algorithm for key in keys):
        reader.problem(f"NOTIFIER_JWT_JWKS_FILE: every key must be kty {wanted} for NOTIFIER_JWT_ALGORITHM={algorithm}")
    if PLACEHOLDER in text:
        reader.problem(f"NOTIFIER_JWT_JWKS_FILE holds the example's placeholder ({PLACEHOLDER})")
    for key in keys:
        _check_jwk(reader, key, algorithm)
    return text


def _check_jwk(reader: _Reader, key: dict[str, Any], algorithm: str) -> None:
    import jwt

    try:
        loaded = jwt.PyJWK(key, algorithm)
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
        reader.problem(f"NOTIFIER_JWT_JWKS_FILE: key {key.get('kid')!r} cannot be read as a {algorithm} key")
        return
    if algorithm in HMAC_ALGORITHMS and len(loaded.key) < _min_secret_bytes(algorithm):
        reader.problem(f"NOTIFIER_JWT_JWKS_FILE: key {key.get('kid')!r} is too weak: at least "
                       f"{_min_secret_bytes(algorithm)} bytes are required for {algorithm}")


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
