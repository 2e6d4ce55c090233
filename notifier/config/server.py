"""gunicorn's side of the service: bind, workers, connections, drain, and
the two variables of our dependencies it sets up for the workers."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Mapping
from dataclasses import dataclass

from .network import valid_bind
from .reader import ConfigError, Reader

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


METRICS_DIR_VAR = "PROMETHEUS_MULTIPROC_DIR"


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
        reader = Reader(env_vars)
        bind = tuple(part.strip() for part in (reader.text("BIND") or "127.0.0.1:8000").split(",") if part.strip())
        for address in bind:
            if not valid_bind(address):
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


def export_worker_environment(settings: ServerSettings, metrics_dir: str) -> None:
    """Set what our dependencies read from the environment in the workers:
    prometheus_client's ``PROMETHEUS_MULTIPROC_DIR`` and, unless the operator
    chose, gevent's ``GEVENT_TRACK_GREENLET_TREE`` (off: each greenlet's spawn
    stack is more objects per stream for every collection to walk, and nothing
    of ours reads them). The only place notifier writes the environment."""
    if settings.track_greenlet_tree is None:
        os.environ["GEVENT_TRACK_GREENLET_TREE"] = "false"
    os.environ[METRICS_DIR_VAR] = metrics_dir


def multiprocess_metrics_dir(environ: Mapping[str, str] | None = None) -> str | None:
    """``PROMETHEUS_MULTIPROC_DIR``: where prometheus_client keeps each worker's
    values (set by ``notifier.server`` before any worker starts), or None."""
    return (os.environ if environ is None else environ).get(METRICS_DIR_VAR) or None


def default_streams_per_worker(worker_connections: int) -> int:
    """Streams a worker accepts by default: its gunicorn connection budget
    minus a tenth (at least 5), so that health probes, scrapes, publishes and
    refusals still find a free connection when the worker is full of streams."""
    return max(1, worker_connections - max(5, worker_connections // 10))
