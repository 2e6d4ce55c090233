"""What the core asked a worker's Redis subscriber for, shared by the request
greenlets that ask (``RedisBroker.subscribe`` / ``unsubscribe``) and the
owner greenlet that acts on it (``redis_session.Session``)."""

from __future__ import annotations

import os

from gevent.event import Event

from ..errors import BrokerUnavailable


class Waiter:
    """A request greenlet waiting for its channels to be confirmed."""

    __slots__ = ("done", "missing")

    def __init__(self, missing: set[str]):
        self.missing = missing
        self.done = Event()


class Wanted:
    """What the core asked for, shared by request greenlets and the owner.

    ``changed`` holds the channels whose wish changed since the owner last
    looked, so the owner never compares all (10,000s of) channels; the pipe
    wakes the owner from its wait on the socket. Waiters are indexed by
    channel, so a confirmation wakes its own waiters without looking at the
    others (thousands of clients may arrive at once).
    """

    def __init__(self, always: set[str]):
        self.always = always
        self.channels: set[str] = set(always)
        self.changed: set[str] = set()
        self.confirmed: set[str] = set()
        # Whether the current session has caught up: before that, a
        # confirmation does not release anybody yet.
        self.live = False
        self._waiting: dict[str, list[Waiter]] = {}
        # Opened by ``open`` in the process that serves: a pipe made before a
        # fork (an app preloaded in gunicorn's master) would be shared by every
        # worker, and one worker's owner would swallow another's wake-ups.
        self._read_fd = self._write_fd = -1

    def open(self) -> None:
        if self._read_fd < 0:
            self._read_fd, self._write_fd = os.pipe()
            os.set_blocking(self._read_fd, False)
            os.set_blocking(self._write_fd, False)

    @property
    def wake_fd(self) -> int:
        return self._read_fd

    def wake(self) -> None:
        if self._write_fd < 0:
            return  # not started: the first session subscribes everything wanted
        try:
            os.write(self._write_fd, b"!")
        except BlockingIOError:
            pass  # the pipe is full: the owner is already due to wake

    def drain(self) -> set[str]:
        """Acknowledge the wake-ups; returns the changed channels."""
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        changed, self.changed = self.changed, set()
        return changed

    def want(self, channels: list[str]) -> None:
        """Ask for ``channels``: the owner subscribes them when it next wakes."""
        for channel in channels:
            if channel not in self.channels:
                self.channels.add(channel)
                self.changed.add(channel)

    def drop(self, channel: str) -> None:
        """Stop asking for ``channel`` (never one of ``always``). Its
        confirmation goes at once: a client arriving before the UNSUBSCRIBE
        reply must wait for a fresh SUBSCRIBE."""
        if channel in self.channels and channel not in self.always:
            self.channels.discard(channel)
            self.confirmed.discard(channel)
            self.changed.add(channel)

    def wait_confirmed(self, channels: list[str], timeout: float) -> None:
        """Return once ``channels`` are confirmed on a caught-up session; raise
        BrokerUnavailable after ``timeout``."""
        waiter = self.waiter(channels)
        if waiter is None:
            return
        self.wake()
        try:
            if not waiter.done.wait(max(0.0, timeout)):
                raise BrokerUnavailable("could not subscribe in time; retry later")
        finally:
            self.forget(waiter)

    # -- waiting for confirmations -------------------------------------------

    def waiter(self, channels: list[str]) -> Waiter | None:
        """A waiter for those of ``channels`` not confirmed live yet; None when all are."""
        missing = set(channels) if not self.live else set(channels) - self.confirmed
        if not missing:
            return None
        waiter = Waiter(missing)
        for channel in missing:
            self._waiting.setdefault(channel, []).append(waiter)
        return waiter

    def forget(self, waiter: Waiter) -> None:
        for channel in waiter.missing:
            waiting = self._waiting.get(channel)
            if waiting and waiter in waiting:
                waiting.remove(waiter)
                if not waiting:
                    del self._waiting[channel]

    def confirm(self, channel: str) -> None:
        self.confirmed.add(channel)
        if self.live:
            self._release(channel)

    def go_live(self) -> None:
        """The session caught up: release everyone whose channels are confirmed."""
        self.live = True
        for channel in [c for c in self._waiting if c in self.confirmed]:
            self._release(channel)

    def go_down(self) -> None:
        self.live = False
        self.confirmed.clear()

    def release_all(self) -> None:
        """Let every waiter go (what they waited for is no longer carried here)."""
        for waiting in self._waiting.values():
            for waiter in waiting:
                waiter.done.set()
        self._waiting.clear()

    def _release(self, channel: str) -> None:
        for waiter in self._waiting.pop(channel, ()):
            waiter.missing.discard(channel)
            if not waiter.missing:
                waiter.done.set()

    def close(self) -> None:
        if self._read_fd >= 0:
            os.close(self._read_fd)
            os.close(self._write_fd)
            self._read_fd = self._write_fd = -1
