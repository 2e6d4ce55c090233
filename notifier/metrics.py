"""Prometheus metrics, correct across gunicorn workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (notifier.server and the image set it)
prometheus_client writes each worker's values to files there and ``/metrics``
sums them; ``notifier.server`` removes a dead worker's live gauges. Without
it (tests, a single process) the values live in this process.

Label values are bounded sets (reasons, target kinds, status codes), never a
user id or a topic.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from .config import multiprocess_metrics_dir
from .hub import CloseReason
from .periodic import Every
from .runtime.gevent import call_after_this_turn
from .runtime.prometheus import observe_many

log = logging.getLogger("notifier.metrics")

# Every label value a counter can take, so each series exists (at 0) from the
# first scrape: rate() and absent() need the series before the first event.
DISCONNECT_REASONS = (CloseReason.CLIENT_GONE, CloseReason.TOKEN_EXPIRED, CloseReason.DEADLINE, CloseReason.EVICTED,
                      CloseReason.SHUTDOWN, CloseReason.WRITE_TIMEOUT, CloseReason.ERROR)
TARGET_KINDS = ("user", "topic", "broadcast")
AUTH_ENDPOINTS = ("events", "notifications", "publish")
RESET_REASONS = ("unknown_id", "too_old", "too_many", "history_lost")
STREAM_REJECTION_STATUSES = ("400", "401", "403", "429", "503")
PUBLISH_ERROR_STATUSES = ("400", "401", "403", "413", "415", "422", "503")
READINESS_FAILURE_REASONS = ("broker", "draining")
GC_GENERATIONS = ("0", "1", "2")
GC_PAUSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.streams_open = Gauge("notifier_streams_open", "Open SSE streams", registry=r, multiprocess_mode="livesum")
        self.stream_connects = Counter("notifier_stream_connects_total", "SSE streams opened", registry=r)
        self.stream_disconnects = Counter(
            "notifier_stream_disconnects_total", "SSE streams closed, by reason", ["reason"], registry=r)
        self.stream_rejections = Counter(
            "notifier_stream_rejections_total", "SSE stream requests refused, by HTTP status", ["status"], registry=r)
        self.events_published = Counter(
            "notifier_events_published_total", "Events accepted by the publish API, by target kind", ["target"], registry=r)
        self.events_delivered = Counter(
            "notifier_events_delivered_total", "Events written to SSE streams", registry=r)
        self.publish_to_write = Histogram(
            "notifier_publish_to_write_seconds", "Time from publish (event id) to the write to a stream",
            buckets=LATENCY_BUCKETS, registry=r)
        self.replays = Counter("notifier_replays_total", "Streams resumed from Last-Event-ID", registry=r)
        self.replayed_events = Counter("notifier_replayed_events_total", "Events sent from history on resume", registry=r)
        self.resets = Counter("notifier_replay_resets_total", "Resumes that could not replay, by reason", ["reason"], registry=r)
        self.evictions = Counter("notifier_evictions_total", "Slow streams disconnected because their queue was full", registry=r)
        self.subscriber_reconnects = Counter(
            "notifier_subscriber_reconnects_total", "Redis pub/sub subscriber reconnects", registry=r)
        # By shard: "primary" for one Redis or Sentinel, the master's host:port
        # on a Cluster (one pub/sub connection per shard a worker needs).
        self.subscriber_probe_age = Gauge(
            "notifier_subscriber_probe_age_seconds", "Seconds since the pub/sub connection last proved alive, by shard",
            ["shard"], registry=r, multiprocess_mode="livemax")
        self.subscriber_up = Gauge(
            "notifier_subscriber_up", "1 when this worker's pub/sub subscriber is connected, by shard",
            ["shard"], registry=r, multiprocess_mode="livemin")
        self.auth_failures = Counter("notifier_auth_failures_total", "Rejected credentials, by endpoint", ["endpoint"], registry=r)
        self.publish_errors = Counter("notifier_publish_errors_total", "Failed publish requests, by HTTP status", ["status"], registry=r)
        self.publish_requests = Counter(
            "notifier_publish_requests_total", "Publish requests received, accepted or not", registry=r)
        self.undecodable_entries = Counter(
            "notifier_undecodable_entries_total", "Stored events skipped by a reader because they could not be decoded",
            registry=r)
        self.readiness_failures = Counter(
            "notifier_readiness_failures_total", "/readyz answered 503, by reason", ["reason"], registry=r)
        self.worker_cpu = Counter(
            "notifier_worker_cpu_seconds_total", "CPU time (user + system) the workers used", registry=r)
        self.worker_memory = Gauge(
            "notifier_worker_resident_memory_bytes", "Resident memory of the live workers, summed",
            registry=r, multiprocess_mode="livesum")
        self.memory_limit = Gauge(
            "notifier_memory_limit_bytes", "Memory the pod may use: its cgroup limit, else the machine's memory",
            registry=r, multiprocess_mode="livemax")
        self.draining = Gauge("notifier_draining", "1 while this worker drains for shutdown", registry=r,
                              multiprocess_mode="livemax")
        self.gc_pause = Histogram(
            "notifier_gc_pause_seconds", "Garbage collections in workers, by generation: each stops the whole worker",
            ["generation"], buckets=GC_PAUSE_BUCKETS, registry=r)
        for generation in GC_GENERATIONS:
            self.gc_pause.labels(generation)
        for reason in DISCONNECT_REASONS:
            self.stream_disconnects.labels(reason)
        for kind in TARGET_KINDS:
            self.events_published.labels(kind)
        for endpoint in AUTH_ENDPOINTS:
            self.auth_failures.labels(endpoint)
        for reset in RESET_REASONS:
            self.resets.labels(reset)
        for status in STREAM_REJECTION_STATUSES:
            self.stream_rejections.labels(status)
        for status in PUBLISH_ERROR_STATUSES:
            self.publish_errors.labels(status)
        for reason in READINESS_FAILURE_REASONS:
            self.readiness_failures.labels(reason)
        self.deliveries = DeliveryRecorder(self)

    def exposition(self) -> tuple[bytes, str]:
        if multiprocess_metrics_dir():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class DeliveryRecorder:
    """``events_delivered`` and ``publish_to_write``, exact per delivery but
    written once per turn of the event loop rather than once per stream write.

    A broadcast wakes thousands of streams in one turn; writing both metrics
    from each of them was a large part of a delivery's CPU in multiprocess
    mode (bench/README.md). With ``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn), the
    writes of one turn are summed and flushed by one event-loop callback that
    runs after them (no greenlet: the flush never blocks, the lock it takes is
    never held across a switch), so a scrape sees them within the same turn;
    without it (tests, one process) each call writes at once.
    """

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self._latencies: list[float] = []
        self._scheduled = False
        # Decided once per process, not per stream write (notifier.server sets
        # the variable in the master, before any worker builds its metrics).
        self._batched = multiprocess_metrics_dir() is not None

    def record(self, latencies: list[float]) -> None:
        if not self._batched:
            self._write(latencies)
            return
        self._latencies.extend(latencies)
        if not self._scheduled:
            self._scheduled = True
            call_after_this_turn(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        latencies, self._latencies = self._latencies, []
        self._write(latencies)

    def _write(self, latencies: list[float]) -> None:
        if latencies:
            self.metrics.events_delivered.inc(len(latencies))
            observe_many(self.metrics.publish_to_write, latencies)


class UndecodableEntries:
    """What a reader does with a stored event it cannot decode (written by
    something else, damaged, or nested past what the parser takes): skip it,
    count it, and say so in the log once per process, not once per read (the
    entry stays until the history trims it)."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self.logged = False

    def __call__(self) -> None:
        self.metrics.undecodable_entries.inc()
        if not self.logged:
            self.logged = True
            log.warning("skipped a stored event that could not be decoded (counted in "
                        "notifier_undecodable_entries_total; logged once per worker)")


_metrics: Metrics | None = None


def process_metrics() -> Metrics:
    """One set per process: prometheus_client metrics are process-wide by nature
    (in multiprocess mode they are files named after the pid)."""
    global _metrics
    if _metrics is None:
        _metrics = Metrics()
    return _metrics


class SubscriberGauges:
    """Keeps this worker's ``notifier_subscriber_up``,
    ``notifier_subscriber_probe_age_seconds`` and reconnect count current from
    the worker itself, out of the broker's ``health()``.

    In multiprocess mode each worker writes its own gauge file and a scrape
    reads them all, but a scrape runs in one worker only: a value set at
    scrape time would be stale (or never set) in every other worker. So each
    worker refreshes its own values every ``interval`` seconds from a small
    greenlet.
    """

    def __init__(self, metrics: Metrics, interval: float = 1.0):
        self.metrics = metrics
        self.interval = interval
        self._reconnects = 0
        self._shards: set[str] = set()
        self._chore: Every | None = None

    def refresh(self, source: Any) -> None:
        """``source`` has ``health()`` (the core or a broker)."""
        health = source.health()
        shards = [(s.name, s.ok, s.last_alive) for s in health.shards] or [("primary", health.ok, health.last_alive)]
        now = time.time()
        for name, ok, last_alive in shards:
            self.metrics.subscriber_up.labels(name).set(1 if ok else 0)
            if last_alive:
                self.metrics.subscriber_probe_age.labels(name).set(max(0.0, now - last_alive))
        # A shard this worker no longer needs (its channels left, or its master
        # failed over) has nothing to wait for: it reads as up, and fresh.
        current = {name for name, _ok, _alive in shards}
        for name in self._shards - current:
            self.metrics.subscriber_up.labels(name).set(1)
            self.metrics.subscriber_probe_age.labels(name).set(0)
        self._shards |= current
        if health.reconnects > self._reconnects:
            self.metrics.subscriber_reconnects.inc(health.reconnects - self._reconnects)
            self._reconnects = health.reconnects

    def start(self, source: Any) -> None:
        """Refresh from ``source`` every ``interval`` seconds until it says "stopping"."""
        if self._chore is None:
            self._chore = Every(self.interval, lambda: self.refresh(source), "refresh subscriber gauges",
                                until=lambda: source.health().reason == "stopping")
            self._chore.start()

    def stop(self) -> None:
        if self._chore is not None:
            self._chore.stop()
            self._chore = None
