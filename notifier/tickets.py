"""Stream tickets: the one credential accepted in a URL.

A page served from another origin than notifier cannot give EventSource a
header, and may not be able to set a cookie on notifier's domain. It asks
``POST /v1/stream-tickets`` (with the user's Bearer token) for a ticket and
opens ``GET /v1/events?ticket=...``. A ticket is:

- single use: redeeming removes it (atomically, on any pod: ``TicketStore``);
- short-lived: ``TICKET_SECONDS``, enough to open the stream right away;
- bound to the user and to the topics it was issued for, and the stream it
  opens ends when the token it was issued from expires;
- random (256 bits) and stored only as its SHA-256, so neither Redis nor a
  log ever holds a redeemable ticket. Our access log never writes query
  strings (``logs.py``).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets

from .auth import Subscriber
from .broker import TicketStore
from .errors import Unauthorized

TICKET_SECONDS = 30
_TICKET = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
REFUSED = "stream ticket is not valid: unknown, already used or expired; ask for a new one"


class StreamTickets:
    def __init__(self, store: TicketStore, ttl_seconds: float = TICKET_SECONDS):
        self.store = store
        self.ttl_seconds = ttl_seconds

    def issue(self, subscriber: Subscriber, topics: list[str]) -> str:
        """A ticket for ``subscriber``'s stream with ``topics`` (already checked
        against the token's grants)."""
        ticket = secrets.token_urlsafe(32)
        value = json.dumps({"sub": subscriber.user_id, "topics": topics, "exp": subscriber.expires_at})
        self.store.put(_digest(ticket), value, self.ttl_seconds)
        return ticket

    def redeem(self, ticket: str) -> Subscriber:
        """The subscriber the ticket was issued to, granted exactly its topics.
        Raises Unauthorized; a ticket is gone once redeemed."""
        if not _TICKET.fullmatch(ticket):
            raise Unauthorized(REFUSED, field="ticket")
        value = self.store.take(_digest(ticket))
        if value is None:
            raise Unauthorized(REFUSED, field="ticket")
        held = json.loads(value)
        return Subscriber(held["sub"], held["exp"], tuple(held["topics"]))


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode("ascii")).hexdigest()
