"""Read markers for the embedded broker: in this process, lost on restart
like its history."""

from __future__ import annotations

import time

from ..events import EventId, ReadState


class MemoryReadMarkers:
    def __init__(self, max_age_seconds: float = 86400, max_ids: int = 1000, max_users: int = 100_000):
        self.max_age = max_age_seconds
        self.max_ids = max_ids
        self.max_users = max_users
        self._states: dict[str, tuple[float, ReadState]] = {}

    def state(self, user_id: str) -> ReadState:
        entry = self._states.get(user_id)
        if entry is None or time.monotonic() - entry[0] > self.max_age:
            self._states.pop(user_id, None)
            return ReadState()
        return entry[1]

    def _keep(self, user_id: str, up_to: EventId, ids: set[EventId]) -> ReadState:
        newest = sorted(i for i in ids if i > up_to)[-self.max_ids:] if self.max_ids else []
        state = ReadState(up_to, frozenset(newest))
        if user_id not in self._states and len(self._states) >= self.max_users:
            self._expire()
        self._states[user_id] = (time.monotonic(), state)
        return state

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.max_age
        for user in [u for u, (at, _s) in self._states.items() if at < cutoff]:
            del self._states[user]
        while len(self._states) >= self.max_users:  # still full: the least recently marked go
            del self._states[min(self._states, key=lambda u: self._states[u][0])]

    def mark_up_to(self, user_id: str, up_to: EventId) -> ReadState:
        current = self.state(user_id)
        return self._keep(user_id, max(current.up_to, up_to), set(current.ids))

    def mark_ids(self, user_id: str, ids: list[EventId]) -> ReadState:
        current = self.state(user_id)
        return self._keep(user_id, current.up_to, set(current.ids) | set(ids))
