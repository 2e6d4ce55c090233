"""Garbage collection in a worker that holds thousands of long-lived streams.

CPython's full (oldest-generation) collection walks every tracked object. It
runs once ten younger collections have passed since the last one and the
objects promoted since then reach a quarter of those that survived it: after
each quarter of growth while thousands of streams arrive, and once more
after the ramp. Each such walk stops the worker, every stream and publish in
it, for longer the more streams it holds (bench/README.md). So, once per
worker, after the app is loaded and before the first request:

- collect, then freeze what is left (modules, classes, functions, the app):
  it lives as long as the process, and no collection needs to walk it again.
  Frozen objects are still freed by reference counting; only a cycle among
  them is never collected, a one-off few objects at most: what startup
  builds lives as long as the process.
- (CPython up to 3.13, whose collector has three generations) ask for a
  full collection after 100 younger ones instead of 10. The
  quarter rule still decides; this only spaces the walks out while streams
  arrive. What it costs is that a reference cycle
  that lived long enough to be promoted waits longer to be freed, and a
  stream leaves none (notifier/api/events.py keeps a stream's objects few,
  slotted and free of cycles).

``notifier_gc_pause_seconds`` shows what is left.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from typing import Any

from .periodic import Every

log = logging.getLogger("notifier.gc")

FULL_COLLECTION_EVERY = 100  # younger (generation 1) collections; CPython's default is 10
# From 3.14 the collector is incremental and ignores the third threshold.
SPACES_FULL_COLLECTIONS = sys.version_info < (3, 14)


def tune_for_streams() -> int:
    """Collect, freeze every object tracked now, and space full collections
    out. Returns how many objects were frozen."""
    if SPACES_FULL_COLLECTIONS:
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class PauseRecorder:
    """Times every collection of this process (``gc.callbacks``) for
    ``notifier_gc_pause_seconds``.

    A callback runs inside whatever allocation set the collection off, which
    may be inside prometheus_client's lock (a gevent lock here, not
    reentrant), so it only appends to a list; a greenlet writes the list to
    the histogram every ``interval`` seconds.
    """

    # Young collections come every 700 new objects: hundreds per second while
    # thousands of streams arrive. Between two flushes, never more than this.
    MAX_PENDING = 10_000

    def __init__(self, histogram: Any, interval: float = 1.0):
        self.histogram = histogram
        self.interval = interval
        self._started = 0.0
        self._pending: list[tuple[int, float]] = []
        self._chore = Every(interval, self.flush, "record garbage collection pauses")

    def on_collection(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif len(self._pending) < self.MAX_PENDING:
            self._pending.append((info["generation"], time.perf_counter() - self._started))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for generation, seconds in pending:
            self.histogram.labels(str(generation)).observe(seconds)

    def start(self) -> None:
        if not self._chore.running:
            gc.callbacks.append(self.on_collection)
            self._chore.start()

    def stop(self) -> None:
        if self._chore.running:
            gc.callbacks.remove(self.on_collection)
            self._chore.stop()
        self.flush()
