"""flask-sse's public surface on notifier's delivery: switch with one import.

    from flask_sse import sse                    # before
    from notifier.compat.flask_sse import sse    # after

The surface is flask-sse 1.0.0's (https://github.com/singingwolfboy/flask-sse,
MIT licence, by David Baumgold): the ``sse`` blueprint with its ``stream``
view (``url_for("sse.stream")``, ``?channel=NAME``, default ``sse``),
``sse.publish(data, type=None, id=None, retry=None, channel="sse")`` (its
argument order), ``ServerSentEventsBlueprint`` (``add_url_rule(rule="",
endpoint="stream", view_func=bp.stream)`` for one of your own), ``Message``,
and the Redis URL from ``app.config["SSE_REDIS_URL"]``, else ``REDIS_URL``.
A string is sent as it is, anything else as JSON (the app's JSON provider,
as flask-sse does); ``type`` is the SSE ``event:``, ``retry`` its
``retry:``. Access control stays flask-sse's: ``@sse.before_request`` (defined
before the blueprint is registered).

What changes underneath: one Redis pub/sub connection per worker instead of
one per client, a heartbeat so a gone client is noticed, and replay: every
event has an id, and a browser that reconnects (EventSource sends
``Last-Event-ID``) gets what it missed from the channel's bounded history.

Documented differences (README.md, "Coming from flask-sse"):

- ``id``: the SSE ``id:`` is notifier's event id, because that is what a
  reconnect resumes from. The id you pass is kept in the stored event
  (``data.flask_sse.id``), not sent as ``id:``.
- ``publish`` returns how many worker processes (Redis) or local streams
  (embedded broker) had a subscriber, not how many Redis clients.
- Channel names: 1-196 characters of letters, digits and ``: . _ / @ -``,
  kept as notifier topics ``sse:<channel>``; another name raises
  ``InvalidEvent`` from ``publish`` and gets a ``400`` JSON error from the
  stream. ``type``: 1-64 of letters, digits and ``: . _ / -``, starting with
  a letter or digit (``InvalidEvent``); no type is sent without ``event:``,
  as before (it is stored as type ``message``, which browsers treat the same).
  ``retry``: a whole number of milliseconds. The data's text is at most
  ``NOTIFIER_MAX_PAYLOAD_BYTES`` (64 KiB; ``PayloadTooLarge``).
- Framing: ``data: `` with a space and lines split on CR, LF and CRLF only.
  flask-sse split with ``str.splitlines`` (U+2028 and other separators broke
  a line in two), dropped a line's leading space, and sent nothing a browser
  would dispatch for empty data; these now arrive as published.
- Every publisher must use this module: events go through notifier's publish
  script and history on notifier's channels (``NOTIFIER_REDIS_PREFIX``); a
  process still publishing with flask-sse on the raw Redis channel reaches
  no one. The Redis is ``NOTIFIER_REDIS_URL`` when the environment sets it
  (a deployment's setting wins over the code's), else ``SSE_REDIS_URL``,
  else ``REDIS_URL``; with none, the embedded broker (one process: serve one
  worker) where flask-sse raised ``KeyError``. Every other ``NOTIFIER_*``
  setting applies (heartbeat, history bounds, stream caps).
- ``sse.redis`` and ``sse.messages()`` are not offered: they are a Redis
  connection per caller, the thing this replaces (``NotImplementedError``).
- Who may stream: nobody is authenticated, as in flask-sse. A compat stream
  reads one ``sse:`` topic and nothing else (never a user's private channel
  or the broadcast channel, whatever the host's identity loader or JWT
  says; neither is consulted). Guard channels with ``@sse.before_request``.
  Compat streams count against ``NOTIFIER_MAX_STREAMS_PER_WORKER``, not the
  per-user cap (there is no user). notifier's own ``GET /v1/events`` reads
  the same events with ``?topic=sse:<channel>`` and a token granting it.
- A stream ends after ``NOTIFIER_MAX_STREAM_SECONDS`` (jittered) and the
  browser reconnects and replays; one that fell further behind than the
  history gets an ``event: reset`` first (ignored unless the page listens).
- Under plain gunicorn (the quickstart's command line) a worker's Redis
  subscriber starts at its first stream or publish, and shutdown cuts the
  streams at gunicorn's graceful timeout; notifier's gunicorn hooks
  (``notifier/server.py``) start it with the worker and drain on SIGTERM.
- ``Message.__str__`` is the frame above (without notifier's id).
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from functools import lru_cache
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from flask import json as flask_json

from ..api.errors import error_response
from ..api.events import StreamRequest, open_stream, refuse_while_draining
from ..config import Config
from ..errors import BadRequest, InvalidEvent, NotifierError
from ..events import Delivery, encode, format_event_id
from ..extension import Notifier
from ..inprocess import publish_item, target_item
from ..state import NotifierState

__all__ = ["Message", "ServerSentEventsBlueprint", "sse"]

DEFAULT_CHANNEL = "sse"
TOPIC_PREFIX = "sse:"  # a flask-sse channel is the notifier topic sse:<channel>
NO_TYPE = "message"  # what browsers call an event sent without an event: line
ANONYMOUS = "flask-sse"  # the user of compat streams in logs: they have none
_EXTRA = "flask_sse"  # where the stored event keeps what SSE fields do not carry
_CHANNEL = re.compile(r"[A-Za-z0-9:._/@\-]{1,196}")  # with the prefix, a valid topic


class Message:
    """Data published as a server-sent event (flask-sse's ``Message``)."""

    def __init__(self, data: Any, type: str | None = None, id: Any = None, retry: int | None = None):
        self.data = data
        self.type = type
        self.id = id
        self.retry = retry

    def to_dict(self) -> dict[str, Any]:
        """A minimal dictionary: ``data`` and the optional fields that are set."""
        found: dict[str, Any] = {"data": self.data}
        if self.type:
            found["type"] = self.type
        if self.id:
            found["id"] = self.id
        if self.retry:
            found["retry"] = self.retry
        return found

    def text(self) -> str:
        """The ``data`` as sent: a string as it is, anything else as JSON."""
        return self.data if isinstance(self.data, str) else flask_json.dumps(self.data)

    def frame(self, event_id: str | None = None) -> bytes:
        return encode(self.text(), event_id=event_id, event=self.type or None, retry_ms=self.retry or None)

    def __str__(self) -> str:
        return self.frame(str(self.id) if self.id else None).decode("utf-8")

    def __repr__(self) -> str:
        kwargs = OrderedDict((key, value) for key, value in self.to_dict().items() if key != "data")
        shown = "".join(f", {key}={value!r}" for key, value in kwargs.items())
        return f"{type(self).__name__}({self.data!r}{shown})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, type(self)) and (self.data, self.type, self.id, self.retry) == (
            other.data, other.type, other.id, other.retry)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value (as flask-sse's)


def topic_for(channel: Any, error: type[NotifierError] = InvalidEvent) -> str:
    """The notifier topic of a flask-sse channel; ``error`` (naming the field
    ``channel``) when notifier cannot carry that name."""
    if not isinstance(channel, str) or not _CHANNEL.fullmatch(channel):
        raise error("channel must be 1-196 characters of letters, digits and : . _ / @ -", field="channel")
    return TOPIC_PREFIX + channel


def _retry(value: Any) -> int | None:
    if not value:
        return None  # flask-sse leaves out a falsy retry
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidEvent("retry must be a whole number of milliseconds", field="retry")
    return value


def _stored_extra(message: Message) -> dict[str, Any] | None:
    """What the SSE fields of the stored event cannot carry: the caller's id,
    the retry."""
    extra: dict[str, Any] = {}
    if message.id:
        extra["id"] = str(message.id)
    retry = _retry(message.retry)
    if retry:
        extra["retry"] = retry
    return {_EXTRA: extra} if extra else None


@lru_cache(maxsize=1024)
def flask_sse_frame(delivery: Delivery) -> bytes:
    """An event of an ``sse:`` topic as flask-sse framed it, with notifier's id.

    Built once per event and worker (cached) however many streams send it,
    as notifier's own frame is. Events published to the topic by notifier's
    own API are framed the same way: their ``message`` is the data.
    """
    envelope = json.loads(delivery.payload)
    extra = (envelope.get("data") or {}).get(_EXTRA) or {}
    retry = extra.get("retry")
    return encode(envelope["message"], event_id=format_event_id(delivery.id),
                  event=None if delivery.type == NO_TYPE else delivery.type,
                  retry_ms=retry if isinstance(retry, int) and not isinstance(retry, bool) else None)


def _host_redis_url(app: Flask) -> tuple[str, str] | None:
    for name in ("SSE_REDIS_URL", "REDIS_URL"):
        if app.config.get(name):
            return name, str(app.config[name])
    return None


def state_for(app: Flask) -> NotifierState:
    """notifier in ``app``: the one a ``Notifier(app)`` set up, else one set
    up now with no routes of its own, on flask-sse's Redis settings."""
    state: NotifierState | None = app.extensions.get("notifier")
    if state is None:
        config = Config.from_env(host_redis_url=_host_redis_url(app), needs_keys=False)
        state = Notifier().init_app(app, config, api=False)
    return state


class ServerSentEventsBlueprint(Blueprint):
    """A blueprint that publishes and streams server-sent events
    (flask-sse's), on notifier's delivery."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # This blueprint's refusals as notifier's JSON errors; the host's own
        # error pages are left alone.
        self.register_error_handler(NotifierError, error_response)

    def register(self, app: Any, options: dict[str, Any]) -> None:
        """Flask's registration, then notifier set up in ``app`` (a ``Flask``)."""
        super().register(app, options)
        state_for(app)

    @property
    def redis(self) -> Any:
        raise NotImplementedError("notifier.compat.flask_sse holds no Redis client per caller: "
                                  "publish with sse.publish(), stream with the blueprint's view")

    def messages(self, channel: str = DEFAULT_CHANNEL) -> Any:
        raise NotImplementedError("notifier.compat.flask_sse has no per-caller Redis subscription: "
                                  "stream with the blueprint's view (one pub/sub connection per worker)")

    def publish(self, data: Any, type: str | None = None, id: Any = None, retry: int | None = None,
                channel: str = DEFAULT_CHANNEL) -> int:
        """Publish ``data`` as a server-sent event on ``channel`` (needs an
        app context, as flask-sse's). Returns how many worker processes
        (Redis) or local streams (embedded broker) had a subscriber. Raises
        InvalidEvent / PayloadTooLarge for what notifier cannot carry (see the
        module's documented differences), BrokerUnavailable when Redis is."""
        message = Message(data, type=type, id=id, retry=retry)
        item = target_item("topic", topic_for(channel), message.text(), message.type or NO_TYPE,
                           _stored_extra(message))
        published = publish_item(state_for(current_app), item, after_request=False)
        return published.receivers if published is not None else 0

    def stream(self) -> Response:
        """The event stream of ``?channel=`` (default ``sse``), resumed from
        ``Last-Event-ID`` when the browser reconnects."""
        state = state_for(current_app)
        state.ensure_started()  # plain gunicorn runs none of notifier's hooks
        try:
            refuse_while_draining(state)
            topic = topic_for(request.args.get("channel") or DEFAULT_CHANNEL, BadRequest)
        except NotifierError as exc:
            state.metrics.stream_rejections.labels(str(exc.status)).inc()
            raise
        wanted = StreamRequest(ANONYMOUS, [state.names.topic(topic)], anonymous=True, reframe=flask_sse_frame)
        return open_stream(state, wanted)


sse = ServerSentEventsBlueprint("sse", __name__)
"""The blueprint to register: ``app.register_blueprint(sse, url_prefix="/stream")``."""
sse.add_url_rule(rule="", endpoint="stream", view_func=sse.stream)
