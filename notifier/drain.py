"""Ending every stream of a worker before gunicorn's ``graceful_timeout``
kills it: spread out, each with a jittered ``retry:``, so clients come back
elsewhere in a spread, not a stampede."""

from __future__ import annotations

import logging
import random
import time

import gevent

from .events import retry
from .hub import CloseReason, Hub

log = logging.getLogger("notifier")

RETRY_SPREAD = (0.5, 1.5)  # each farewell retry: is the configured value times a factor in this range


def drain_streams(hub: Hub, retry_ms: int, window: float) -> None:
    subscriptions = hub.subscriptions()
    random.shuffle(subscriptions)
    log.info("draining %d streams over %.1fs", len(subscriptions), window)
    start = time.monotonic()
    count = len(subscriptions)
    for index, subscription in enumerate(subscriptions):
        pause = start + window * index / max(count, 1) - time.monotonic()
        if pause > 0:
            gevent.sleep(pause)
        subscription.farewell = retry(int(retry_ms * random.uniform(*RETRY_SPREAD)))
        subscription.close(CloseReason.SHUTDOWN)
    # Streams that arrived on keep-alive connections during the drain.
    hub.close_all(CloseReason.SHUTDOWN)
    log.info("drain finished in %.1fs", time.monotonic() - start)
