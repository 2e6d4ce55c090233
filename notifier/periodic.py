"""A worker's small background chores (metric samplers): run one every few
seconds in its own greenlet, and never let it take the worker down."""

from __future__ import annotations

import logging
from collections.abc import Callable

import gevent

log = logging.getLogger("notifier")


class Every:
    """``action()`` every ``interval`` seconds while started (first run after
    one interval), until ``stop()`` or until ``until()`` says so."""

    def __init__(self, interval: float, action: Callable[[], None], what: str,
                 until: Callable[[], bool] | None = None):
        self.interval = interval
        self.action = action
        self.what = what
        self.until = until
        self._greenlet: gevent.Greenlet | None = None

    @property
    def running(self) -> bool:
        return self._greenlet is not None

    def start(self) -> None:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _run(self) -> None:
        me = gevent.getcurrent()
        while self.until is None or not self.until():
            gevent.sleep(self.interval)
            # stop() kills without waiting: the kill lands at this greenlet's
            # next switch, which can come after a wake-up already due.
            if self._greenlet is not me:
                return
            try:
                self.action()
            except Exception:  # a chore must never take the worker down
                log.exception("could not %s", self.what)
