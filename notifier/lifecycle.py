"""Start an app's background work (the broker's subscriber greenlet and its
connections, the gauges' greenlet) in the process that serves requests, never
in one that then forks.

A host app may be built in gunicorn's master with ``preload_app = True``; a
greenlet or socket made there would be inherited by every worker: a dead
greenlet and one connection shared by many processes. So ``init_app`` only
registers what to start, and it starts, once per process, on whichever comes
first:

- ``serving()``: notifier's gunicorn hook calls it in each worker once the app
  is loaded (``notifier.server.post_worker_init``), so the subscriber is up
  before the first request;
- the app's first request (a host served some other way; the test client).

A fork after something started is logged as a mistake: the child inherits
its parent's connections.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable

from flask import Flask

log = logging.getLogger("notifier.lifecycle")

# Which process this is: bumped in every forked child (no system call per
# request, as os.getpid() would be).
_generation = 1


class _Service:
    __slots__ = ("__weakref__", "drain", "start", "started_in")

    def __init__(self, start: Callable[[], None], drain: Callable[[], None]):
        self.start = start
        self.drain = drain
        self.started_in = 0  # the process generation it started in, 0 before

    def ensure_started(self) -> None:
        if self.started_in != _generation:
            self.started_in = _generation
            self.start()


# Weak: an app (and its service, held by the app's before_request list) that
# is gone is no longer started or drained.
_services: weakref.WeakSet[_Service] = weakref.WeakSet()


def start_when_serving(app: Flask, start: Callable[[], None], drain: Callable[[], None],
                       scopes: list[str | None] | None = None) -> Callable[[], None]:
    """Run ``start`` once in the process that serves ``app``; ``drain`` when
    that process is asked to stop (``drain_all``). The first-request hook runs
    for ``scopes`` (blueprint names; None, the default, is the whole app).
    Returns the idempotent starter, for callers that need it started at
    another moment (a host view publishing in process)."""
    service = _Service(start, drain)
    _services.add(service)
    for scope in [None] if scopes is None else scopes:
        app.before_request_funcs.setdefault(scope, []).append(service.ensure_started)
    _watch_forks()
    return service.ensure_started


def serving() -> int:
    """This process serves now: start everything registered. Returns how many."""
    services = list(_services)
    for service in services:
        service.ensure_started()
    return len(services)


def drain_all() -> None:
    for service in list(_services):
        if service.started_in == _generation:
            service.drain()


def started_here() -> int:
    return sum(1 for service in list(_services) if service.started_in == _generation)


_fork_watch = False


def _watch_forks() -> None:
    global _fork_watch
    if not _fork_watch:
        _fork_watch = True
        os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def _before_fork() -> None:
    if started_here():
        log.error("notifier started its broker in process %d, which is forking: the child inherits its "
                  "connections (start serving only after the fork: see notifier/lifecycle.py)", os.getpid())


def _after_fork_in_child() -> None:
    global _generation
    _generation += 1
