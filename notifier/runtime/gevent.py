"""gevent internals: the OS socket inside gevent's wrapper, and two calls on
the hub's event loop (a readability watcher, a callback after this turn).

Read against gevent 26.9 (libev and libuv loops). Outside the tested range:
the wrapper itself stands in for the OS socket (``sockets.peek`` lifts its
timeout, so it never waits), no peer watch is started (the heartbeat's peek
notices a gone client instead) and callbacks run in a raw greenlet.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import gevent
import gevent.monkey
import greenlet  # type: ignore[import-untyped]  # ships no type information

from .versions import Tested

TESTED = Tested("gevent", "26.9", "27")
ACTIVE = TESTED.active

T = TypeVar("T")

READ = 1  # libev's EV_READ and libuv's UV_READABLE


class Watcher(Protocol):
    def stop(self) -> None: ...

    def close(self) -> None: ...


def os_socket(sock: Any) -> Any:
    """The OS-level socket inside gevent's wrapper (a non-blocking peek on the
    wrapper would wait for data), else ``sock`` itself."""
    if ACTIVE:
        return getattr(sock, "_sock", sock)
    return sock


def fast_watch_readable(fileno: int, callback: Callable[[], None]) -> Watcher:
    """A loop watcher calling ``callback`` (in the hub) when ``fileno`` turns
    readable, until stopped. No greenlet per watched socket."""
    watcher = gevent.get_hub().loop.io(fileno, READ)
    watcher.start(callback)
    return watcher


def public_watch_readable(fileno: int, callback: Callable[[], None]) -> Watcher | None:
    """No public API watches a descriptor without a greenlet per socket."""
    return None


def fast_call_after_this_turn(callback: Callable[[], None]) -> None:
    """Run ``callback`` in the hub once the greenlets ready now have run."""
    gevent.get_hub().loop.run_callback(callback)


def public_call_after_this_turn(callback: Callable[[], None]) -> None:
    gevent.spawn_raw(callback)


watch_readable = fast_watch_readable if ACTIVE else public_watch_readable
call_after_this_turn = fast_call_after_this_turn if ACTIVE else public_call_after_this_turn


def on_fresh_stack(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a greenlet of its own that ends with it: its
    return value, or its exception raised here. The caller waits (the
    function may wait on I/O: other greenlets run meanwhile).

    Why: each greenlet keeps the Python frame stack it grew to (CPython
    allocates it in 16 KiB chunks and keeps the pages it touched) for as long
    as it lives. A stream's greenlet lives for hours but only needs a shallow
    stack once the stream is open; the deep work of opening it (Flask's
    dispatch, token checks, Redis) done here leaves that stack behind with
    this greenlet. Public greenlet API only: a child greenlet returns to its
    parent when it ends. ``contextvars`` (Flask's request context) are copied
    in.
    """
    child = greenlet.greenlet(contextvars.copy_context().run)
    try:
        result: T = child.switch(function, *args)
    except BaseException:
        # Killed while the child waits (gunicorn's graceful timeout): the
        # child must unwind too, releasing what it took, or it would finish
        # later and switch into whatever this greenlet waits on by then.
        if not child.dead:
            child.throw()  # GreenletExit: returned here, not raised, once the child ends
        raise
    return result


def after_this_turn_here() -> Callable[[Callable[[], None]], None]:
    """A scheduler for the event loop of the calling OS thread: a callback
    asked for from that thread runs after the loop's current turn; asked for
    from any other thread (whose loop would never run it), at once."""
    native_ident = gevent.monkey.get_original("_thread", "get_ident")
    owner = native_ident()

    def defer(callback: Callable[[], None]) -> None:
        if native_ident() == owner:
            call_after_this_turn(callback)
        else:
            callback()
    return defer
