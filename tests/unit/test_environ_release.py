"""runtime/gunicorn.release_environ: a stream's WSGI environ is emptied only
where this worker's gunicorn will not read it again, judged with gunicorn's
own Config and Logger."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.http.wsgi import FileWrapper

from notifier.runtime import gunicorn as gunicorn_runtime


def a_worker(**settings: Any) -> SimpleNamespace:
    cfg = Config()
    for name, value in settings.items():
        cfg.set(name, value)
    return SimpleNamespace(cfg=cfg, log=Logger(cfg))


def an_environ() -> dict[str, Any]:
    return {"wsgi.file_wrapper": FileWrapper, "REQUEST_METHOD": "GET", "PATH_INFO": "/v1/events",
            "HTTP_AUTHORIZATION": "Bearer secret", "HTTP_COOKIE": "access_token_cookie=secret"}


@pytest.fixture(autouse=True)
def unnoted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gunicorn_runtime, "_environ_read_later", None)


def test_an_environ_gunicorn_will_not_read_again_is_emptied_but_for_the_file_wrapper() -> None:
    assert gunicorn_runtime.note_worker(a_worker()) is True
    environ = an_environ()
    assert gunicorn_runtime.release_environ(environ) is True
    assert environ == {"wsgi.file_wrapper": FileWrapper}


def _hook(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    pass


class ReadingLogger(Logger):
    """A deployment's own logger class: its access line reads the environ
    whether or not gunicorn's access log is configured."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        self.info("%s %s", environ["REQUEST_METHOD"], environ["PATH_INFO"])


def test_gunicorns_statsd_logger_reads_no_environ_and_the_environ_goes() -> None:
    from gunicorn.instrument.statsd import Statsd

    cfg = Config()
    cfg.set("statsd_host", "127.0.0.1:9")  # a UDP socket on loopback; nothing is sent here
    log = Statsd(cfg)
    try:
        assert gunicorn_runtime.note_worker(SimpleNamespace(cfg=cfg, log=log)) is True
    finally:
        log.sock.close()


@pytest.mark.parametrize("reader", [
    lambda: a_worker(accesslog="-"),  # gunicorn's access line reads the method, path, headers...
    lambda: a_worker(post_request=_hook),  # the hook is handed the environ
    lambda: SimpleNamespace(cfg=Config(), log=ReadingLogger(Config())),  # gunicorn calls access() regardless
    lambda: None,  # not a gunicorn worker of ours: nothing is known
], ids=["access-log", "post-request-hook", "own-logger-class", "not-noted"])
def test_an_environ_something_reads_later_is_kept(reader: Callable[[], SimpleNamespace | None]) -> None:
    worker = reader()
    if worker is not None:
        assert gunicorn_runtime.note_worker(worker) is False
    environ = an_environ()
    assert gunicorn_runtime.release_environ(environ) is False
    assert environ == an_environ()
