"""notifier mounted into a host Flask app with its own login: an identity
loader (a real Flask-Login app, its session cookie, no JWT), a URL prefix, the
host's hooks, error handlers and logging left alone, and the explicit
interplay with a host's own flask-jwt-extended."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from flask import Flask, jsonify, request
from flask_jwt_extended import JWTManager, create_access_token, jwt_required, set_access_cookies
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user

from notifier import Identity, Notifier

from ..support import tokens
from ..support.config import make_config
from ..support.http import assert_json_error, events_in, open_stream

PREFIX = "/realtime"


class User(UserMixin):
    def __init__(self, user_id: str):
        self.id = user_id


def flask_login_host() -> tuple[Flask, Notifier]:
    """A legacy app: Flask-Login sessions, its own pages, hooks and error pages."""
    app = Flask("legacy")
    app.secret_key = "host-session-key-" + "z" * 30
    app.config["SEEN"] = []
    login = LoginManager(app)
    login.user_loader(User)

    @app.post("/login")
    def do_login():
        login_user(User(request.form["user"]))
        return "ok"

    @app.post("/logout")
    def do_logout():
        logout_user()
        return "bye"

    @app.get("/orders")
    def orders():
        return jsonify(["order-1"])

    @app.get("/boom")
    def boom():
        raise KeyError("host bug")

    @app.before_request
    def host_before():
        app.config["SEEN"].append(("before", request.path))

    @app.after_request
    def host_after(response):
        response.headers["X-Host"] = "yes"
        return response

    @app.errorhandler(404)
    def host_404(error):
        return "host's own 404 page", 404

    @app.errorhandler(Exception)
    def host_500(error):
        return "host's own error page", 500

    notifier = Notifier(app, make_config(), url_prefix=PREFIX)

    @notifier.identity_loader
    def who() -> Identity | None:
        if not current_user.is_authenticated:
            return None
        return Identity(current_user.id, topics=("orders:*",))

    return app, notifier


@pytest.fixture
def host() -> Iterator[tuple[Flask, Notifier]]:
    app, notifier = flask_login_host()
    yield app, notifier
    app.extensions["notifier"].stop()


def test_a_flask_login_app_streams_with_its_own_session_cookie(host) -> None:
    app, notifier = host
    client = app.test_client()
    response, _ = open_stream(client, query="")  # at the root: not notifier's any more
    assert response.get_data(as_text=True) == "host's own 404 page"
    assert_json_error(client.get(PREFIX + "/v1/events"), 401, "unauthorized")

    client.post("/login", data={"user": "alice"})
    assert {cookie.key for cookie in client._cookies.values()} == {"session"}, "no JWT, only the host's session"
    response = client.get(PREFIX + "/v1/events", buffered=False)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    chunks = iter(response.response)
    next(chunks)
    with app.test_request_context():
        notifier.notify("alice", "Your order has shipped!", type="order.shipped", data={"order": 42})
    [event] = events_in(next(chunks))
    assert event.event == "order.shipped" and event.json()["data"] == {"order": 42}
    response.close()

    # Topics come from the loader's grants.
    granted = client.get(PREFIX + "/v1/events?topic=orders:42", buffered=False)
    assert granted.status_code == 200
    granted.close()
    assert_json_error(client.get(PREFIX + "/v1/events?topic=admin"), 403, "forbidden")

    client.post("/logout")
    assert_json_error(client.get(PREFIX + "/v1/events"), 401, "unauthorized")
    assert len(app.extensions["notifier"].hub) == 0


def test_a_jwt_is_not_an_identity_when_the_host_has_a_loader(host) -> None:
    app, _ = host
    assert_json_error(app.test_client().get(PREFIX + "/v1/events", headers=tokens.bearer(tokens.token("alice"))),
                      401)


def test_what_the_loader_returns_is_checked(host) -> None:
    app, notifier = host
    client = app.test_client()
    notifier.identity_loader(lambda: "bob")
    response = client.get(PREFIX + "/v1/notifications")
    assert response.status_code == 200, "a plain user id is an identity"
    notifier.identity_loader(lambda: "bad\nid")
    assert_json_error(client.get(PREFIX + "/v1/events"), 422)
    assert len(app.extensions["notifier"].hub) == 0


def test_every_route_moves_under_the_prefix(host) -> None:
    app, _ = host
    client = app.test_client()
    for path in ("/livez", "/readyz", "/metrics", "/v1/client.js"):
        assert client.get(PREFIX + path).status_code == 200, path
        assert client.get(path).get_data(as_text=True) == "host's own 404 page", path
    assert_json_error(client.post(PREFIX + "/v1/publish", json={}), 401)


def test_the_host_routes_keep_their_hooks_error_handlers_and_headers(host) -> None:
    app, _ = host
    client = app.test_client()
    response = client.get("/orders")
    assert response.get_json() == ["order-1"] and response.headers["X-Host"] == "yes"
    assert "X-Request-ID" not in response.headers, "notifier's hooks do not run for the host's routes"
    assert client.get("/boom").get_data(as_text=True) == "host's own error page"
    assert client.get("/nowhere").get_data(as_text=True) == "host's own 404 page"
    # notifier's own routes: the host's hooks run too (it is the host's app), plus notifier's.
    notifier_response = client.get(PREFIX + "/livez")
    assert notifier_response.headers["X-Host"] == "yes" and notifier_response.headers["X-Request-ID"]
    assert app.config["SEEN"] == [("before", "/orders"), ("before", "/boom"), ("before", "/nowhere"),
                                  ("before", PREFIX + "/livez")]


def test_mounting_adds_no_app_wide_before_or_after_hook() -> None:
    app = Flask("plain")
    before = {key: list(value) for key, value in app.before_request_funcs.items()}
    after = {key: list(value) for key, value in app.after_request_funcs.items()}
    Notifier(app, make_config())
    try:
        assert app.before_request_funcs.get(None, []) == before.get(None, [])
        assert app.after_request_funcs.get(None, []) == after.get(None, [])
    finally:
        app.extensions["notifier"].stop()


@pytest.fixture
def host_logging() -> Iterator[list[logging.LogRecord]]:
    """The host's logging setup: a handler on the root logger. (The standalone
    service, built by other tests in this process, gives the notifier logger a
    handler of its own: undone here, as in a process that only mounts.)"""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    root, ours = logging.getLogger(), logging.getLogger("notifier")
    saved = (root.level, ours.handlers[:], ours.propagate, ours.level)
    ours.handlers, ours.propagate, ours.level = [], True, logging.NOTSET
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield records
    root.removeHandler(handler)
    root.setLevel(saved[0])
    ours.handlers, ours.propagate, ours.level = saved[1], saved[2], saved[3]


def test_notifiers_log_lines_go_to_the_hosts_logging(host_logging) -> None:
    app, _notifier = flask_login_host()
    try:
        app.test_client().get(PREFIX + "/livez")
        assert logging.getLogger("notifier").handlers == [], "mounted: no handler of notifier's own"
        access = [r for r in host_logging if r.name == "notifier.access"]
        assert len(access) == 1 and access[0].path == PREFIX + "/livez"  # type: ignore[attr-defined]
    finally:
        app.extensions["notifier"].stop()


# -- flask-jwt-extended in the host --------------------------------------------

HOST_SECRET = "the-host-own-secret-" + "h" * 40


def jwt_host(**notifier_options: str) -> tuple[Flask, set[str]]:
    """A host that uses flask-jwt-extended itself: its own secret, cookie name,
    headers-only locations for its routes, a blocklist callback."""
    app = Flask("jwt-host")
    app.config.update(JWT_SECRET_KEY=HOST_SECRET, JWT_TOKEN_LOCATION=["headers"],
                      JWT_ACCESS_COOKIE_NAME="host_jwt", JWT_COOKIE_SECURE=False)
    revoked: set[str] = set()
    manager = JWTManager(app)

    @manager.token_in_blocklist_loader
    def is_revoked(header, payload):
        return payload["jti"] in revoked

    @app.get("/me")
    @jwt_required()
    def me():
        return "host route ok"

    @app.post("/login")
    def login():
        response = jsonify(ok=True)
        set_access_cookies(response, create_access_token(identity=request.form["user"]))
        return response

    Notifier(app, make_config(), **notifier_options)
    return app, revoked


def test_a_host_with_its_own_jwt_manager_keeps_all_of_it() -> None:
    app, revoked = jwt_host()
    state = app.extensions["notifier"]
    try:
        assert state.jwt_mode == "host"
        assert app.config["JWT_SECRET_KEY"] == HOST_SECRET and app.config["JWT_TOKEN_LOCATION"] == ["headers"]
        assert app.config["JWT_ACCESS_COOKIE_NAME"] == "host_jwt"
        client = app.test_client()
        client.post("/login", data={"user": "alice"})
        host_token = client.get_cookie("host_jwt").value
        # The host's own route still reads headers only, as it said.
        assert client.get("/me").status_code == 401
        assert client.get("/me", headers=tokens.bearer(host_token)).get_data(as_text=True) == "host route ok"
        # notifier streams with the host's token: from the host's cookie (EventSource) or a Bearer header.
        for headers in ({}, tokens.bearer(host_token)):
            response, chunks = open_stream(client, headers)
            assert response.status_code == 200, response.get_data(as_text=True)
            response.close()
        # Verified with the host's key and callbacks: notifier's own secret is not a key here.
        client.delete_cookie("host_jwt")
        assert_json_error(open_stream(client, tokens.bearer(tokens.token("alice")))[0], 401)
        revoked.add(tokens_jti(host_token))
        assert_json_error(open_stream(client, tokens.bearer(host_token))[0], 401)
    finally:
        state.stop()


def tokens_jti(token: str) -> str:
    import jwt

    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


def test_notifier_will_not_silently_share_a_hosts_jwt_manager() -> None:
    with pytest.raises(ValueError, match="own flask-jwt-extended JWTManager"):
        jwt_host(jwt="notifier")
    plain = Flask("plain")
    with pytest.raises(ValueError, match="needs the host's JWTManager"):
        Notifier(plain, make_config(), jwt="host")


def test_a_host_without_a_jwt_manager_gets_notifiers_settings_and_keeps_its_own_keys() -> None:
    """The other direction: notifier configures JWT, a JWT_* key the host set
    stays, and headers-only locations do not turn off the stream's cookie."""
    app = Flask("host")
    app.config["JWT_TOKEN_LOCATION"] = ["headers"]
    Notifier(app, make_config())
    state = app.extensions["notifier"]
    try:
        assert state.jwt_mode == "notifier" and app.config["JWT_TOKEN_LOCATION"] == ["headers"]
        assert app.config["JWT_ACCESS_COOKIE_NAME"] == "notifier_access"
        client = app.test_client()
        client.set_cookie("notifier_access", tokens.token("alice"), domain="localhost")
        response, _ = open_stream(client)
        assert response.status_code == 200
        response.close()
    finally:
        state.stop()


def test_an_unknown_jwt_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="jwt must be one of"):
        Notifier(Flask("x"), make_config(), jwt="maybe")


def test_url_prefix_is_a_plain_path() -> None:
    from notifier.extension import normalized_prefix

    assert normalized_prefix("realtime/") == "/realtime" and normalized_prefix("/") == ""
    with pytest.raises(ValueError):
        normalized_prefix("/a?b")




def test_a_host_that_configured_no_logging_logs_through_gunicorns_error_log() -> None:
    from notifier.logs import adopt_handlers

    ours, gunicorn_error = logging.getLogger("notifier"), logging.Logger("gunicorn.error.test")
    saved = (ours.handlers[:], ours.level)
    target = logging.Handler()
    gunicorn_error.addHandler(target)
    gunicorn_error.setLevel(logging.INFO)
    try:
        ours.handlers = [logging.NullHandler()]
        assert not adopt_handlers(gunicorn_error), "the standalone service's own handler stays"
        ours.handlers = []
        root_had = logging.getLogger().handlers[:]
        logging.getLogger().handlers = [logging.NullHandler()]
        assert not adopt_handlers(gunicorn_error), "a host with logging of its own keeps it"
        logging.getLogger().handlers = []
        try:
            assert adopt_handlers(gunicorn_error)
        finally:
            logging.getLogger().handlers = root_had
        assert ours.handlers == [target] and ours.level == logging.INFO
    finally:
        ours.handlers, ours.level = saved
