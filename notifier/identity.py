"""Who a subscriber is when the host app says so: the identity loader.

A host app with its own login (Flask-Login, a session cookie) tells notifier
who is asking with a function it registers (``@notifier.identity_loader``),
called in the request of ``GET /v1/events`` and the inbox endpoints. It
returns ``None`` (not signed in: 401), a user id, or an ``Identity`` with the
topics that user may subscribe to. No JWT is involved: the browser sends the
host's own session cookie, as with any page of the host.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .auth import Subscriber
from .errors import Unauthorized
from .validation import validate_user_id


@dataclass(frozen=True)
class Identity:
    """A signed-in user, as the host's identity loader reports them.

    ``topics`` are grant patterns (``"orders:*"``), as in a token's ``topics``
    claim. ``expires_at`` (a ``time.time()`` value) ends the stream then, as a
    token's expiry does; None: the stream lives its normal maximum age and the
    loader is asked again on the reconnect.
    """

    user_id: str
    topics: tuple[str, ...] = ()
    expires_at: float | None = None


LoaderResult = Identity | str | None
IdentityLoader = Callable[[], LoaderResult]


def subscriber_from(result: LoaderResult) -> Subscriber:
    """What the loader returned, as a subscriber; 401 for None."""
    if result is None:
        raise Unauthorized("not signed in")
    identity = Identity(result) if isinstance(result, str) else result
    if not isinstance(identity, Identity):
        raise TypeError(f"an identity loader returns an Identity, a user id or None, not {type(result).__name__}")
    validate_user_id(identity.user_id)
    topics = tuple(identity.topics)
    if not all(isinstance(topic, str) for topic in topics):
        raise TypeError("Identity.topics must be strings (grant patterns)")
    return Subscriber(identity.user_id, identity.expires_at, topics)
