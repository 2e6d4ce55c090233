"""What each client of a fault test got against what was acknowledged:
events offered, acknowledged, received, lost and duplicated, per client, and
per channel order (the topology tests: Sentinel failover, Cluster slot
migration and master loss)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import requests

from notifier.events import parse_event_id

from . import tokens

PUBLISHER = tokens.bearer(tokens.publisher())


@dataclass
class Tally:
    """Publishes numbered events for ``users`` (and a broadcast every
    ``broadcast_every`` steps) over HTTP; a 503 is retried (the key is then
    "uncertain": the first try may have been stored, and the retry is a second
    event with the same key, which the publish contract allows)."""

    url: str
    users: list[str]
    broadcast_every: int = 0
    offered: int = 0
    acknowledged: dict[str, list[str]] = field(default_factory=dict)  # user -> keys, in publish order
    uncertain: set[str] = field(default_factory=set)
    unavailable: int = 0

    def __post_init__(self) -> None:
        self.acknowledged = {user: [] for user in self.users}

    def step(self, number: int, within: float = 30) -> None:
        """One batch per user (separate requests: on a Cluster users sit on different shards)."""
        targets: list[tuple[dict[str, Any], list[str]]] = [
            ({"user_id": user}, [user]) for user in self.users]
        if self.broadcast_every and number % self.broadcast_every == 0:
            targets.append(({"broadcast": True}, list(self.users)))
        for target, receivers in targets:
            key = f"{number}:{target.get('user_id', 'all')}"
            self._publish({**target, "type": "t", "message": key, "data": {"key": key}}, key, within)
            for user in receivers:
                self.acknowledged[user].append(key)

    def _publish(self, body: dict[str, Any], key: str, within: float) -> None:
        deadline = time.monotonic() + within
        while True:
            self.offered += 1
            try:
                response = requests.post(self.url + "/v1/publish", json=body, headers=PUBLISHER, timeout=10)
                status = response.status_code
            except requests.RequestException:
                status = 599  # the outcome is unknown: like a 503
            if status == 202:
                return
            assert status in (503, 599), f"publish answered {status}"
            self.unavailable += 1
            self.uncertain.add(key)
            assert time.monotonic() < deadline, "publish kept failing"
            time.sleep(0.05)


@dataclass
class Outcome:
    user: str
    acknowledged: int
    received: int
    lost: list[str]
    duplicated: list[str]
    reordered: list[str]
    resets: int


def outcome(client: Any, tally: Tally) -> Outcome:
    """For one client (tests/support/sse.py's EventSourceClient): acknowledged
    keys it never got, keys it got twice (beyond the uncertain ones), and ids
    out of order per channel (per target: the user's own, the broadcast)."""
    notes = client.notifications()
    keys = [n["data"]["key"] for n in notes]
    expected = tally.acknowledged[client.user]
    got = set(keys)
    lost = [k for k in expected if k not in got]
    duplicated = sorted({k for k in keys if keys.count(k) > 1 and k not in tally.uncertain})
    last: dict[str, Any] = {}
    reordered = []
    seen_ids: set[tuple[str, str]] = set()
    for note in notes:
        channel = "broadcast" if note.get("broadcast") else f"user:{note.get('user_id')}"
        event_id = parse_event_id(note["id"])
        if (channel, note["id"]) in seen_ids:
            duplicated.append(f"id {note['id']} on {channel}")
        seen_ids.add((channel, note["id"]))
        if channel in last and event_id is not None and event_id <= last[channel]:
            reordered.append(note["data"]["key"])
        last[channel] = event_id
    return Outcome(client.user, len(expected), len(keys), lost, duplicated, reordered, len(client.resets()))


def summary(outcomes: list[Outcome], tally: Tally) -> dict[str, int]:
    return {"offered": tally.offered, "acknowledged": sum(o.acknowledged for o in outcomes),
            "received": sum(o.received for o in outcomes), "lost": sum(len(o.lost) for o in outcomes),
            "duplicated": sum(len(o.duplicated) for o in outcomes), "reordered": sum(len(o.reordered) for o in outcomes),
            "resets": sum(o.resets for o in outcomes), "unavailable": tally.unavailable}


def wait_received(clients: list[Any], tally: Tally, timeout: float = 30) -> None:
    """Until every client has every acknowledged key (or a reset), bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(client.resets() or set(tally.acknowledged[client.user]) <= {n["data"]["key"] for n in client.notifications()}
               for client in clients):
            break
        time.sleep(0.1)
    time.sleep(0.3)  # a duplicate would arrive now
