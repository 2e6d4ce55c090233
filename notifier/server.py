"""gunicorn hooks for notifier: ``gunicorn.conf.py`` takes its settings from
``ServerSettings`` and calls these. A host app served by its own gunicorn
config can call them too (see README.md, "Mounting").

In the master, at config load (``prepare``), before the app or any worker
exists: every setting validated, ``PROMETHEUS_MULTIPROC_DIR`` made ready (a
fresh temp dir when unset, files of a previous run removed) and
``GEVENT_TRACK_GREENLET_TREE`` defaulted to false. At ``on_starting``: the
app's ``Config`` validated, the open-file limit raised. In each worker, once
its app is loaded (``post_worker_init``): fewer sends per response, garbage
collection tuned and timed, the app's background work started, and a watcher
that drains the streams as soon as gunicorn asks the worker to stop.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import sys
import tempfile
from typing import Any, NoReturn

from .config import Config, ConfigError, ServerSettings, export_worker_environment

_prepared: dict[str, Any] = {}  # once per master: gunicorn re-reads its config on HUP


def load_settings() -> ServerSettings:
    """The server settings, or exit 2 listing every problem (the app's
    settings' too, so an operator fixes them in one go)."""
    try:
        return ServerSettings.from_env()
    except ConfigError as exc:
        problems = list(exc.problems)
    try:
        Config.from_env()
    except ConfigError as exc:
        problems.extend(exc.problems)
    _exit(ConfigError(problems))


def prepare(settings: ServerSettings) -> None:
    """At config load, in the master: what must be in place before the app is
    imported (``preload_app``) and before any worker forks. The environment
    is the config's business, read and written (``export_worker_environment``)."""
    if _prepared:
        return
    path = settings.metrics_dir
    _prepared["owned_metrics_dir"] = path is None
    if path is None:
        path = tempfile.mkdtemp(prefix="notifier-metrics-")
    export_worker_environment(settings, path)
    os.makedirs(path, exist_ok=True)
    # Files of a previous run would be summed into this one's.
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.unlink(os.path.join(path, name))
    _prepared["metrics_dir"] = path
    _prepared["notes"] = settings.notes


def on_starting(server: Any) -> None:
    """Validate the app's configuration once, in the master, before any worker
    forks, so a bad setting is one clear error and a non-zero exit, not a boot loop."""
    try:
        config = Config.from_env()
    except ConfigError as exc:
        _exit(exc)
    for note in _prepared.get("notes", ()):
        server.log.warning("notifier: %s", note)
    server.log.info("notifier config: %r", config)
    if _prepared:
        server.log.info("notifier: worker metrics in %s", _prepared["metrics_dir"])
    _raise_file_limit(server)


def post_worker_init(worker: Any) -> None:
    """Each worker, once its app is loaded."""
    from . import lifecycle
    from .metrics import process_metrics
    from .runtime import gunicorn as gunicorn_runtime
    from .worker_gc import PauseRecorder, tune_for_streams
    from .worker_resources import ResourceSampler

    patched = gunicorn_runtime.install_writes()
    released = gunicorn_runtime.note_worker(worker)
    worker.log.info("notifier: a stream's WSGI environ %s", "is emptied once the stream opens" if released else
                    "is kept (gunicorn's access log, a logger class of its own or a post_request hook reads it, "
                    "or gunicorn is untested)")
    worker.log.info("notifier: one send per response %s", "on" if patched else
                    f"off: {gunicorn_runtime.TESTED.describe()}")
    # Shorter and fewer full garbage collections (notifier/worker_gc.py).
    worker.log.debug("froze %d startup objects", tune_for_streams())
    if not lifecycle.serving():
        return  # no notifier app in this worker
    from .logs import adopt_handlers, flush_after_each_turn
    from .runtime.gevent import after_this_turn_here

    flush_after_each_turn(after_this_turn_here())
    # gunicorn's error log is a logger of that name (its documented logconfig name).
    if adopt_handlers(logging.getLogger("gunicorn.error")):
        worker.log.info("notifier: logging to gunicorn's error log (the app configured no logging)")
    # Started after the startup collection: that one stops nobody.
    PauseRecorder(process_metrics().gc_pause).start()
    # The worker's CPU and memory (prometheus_client's process metrics see one worker only).
    ResourceSampler(process_metrics()).start()
    if gunicorn_runtime.ACTIVE:
        _spawn_drain_watch(worker)
    else:
        worker.log.warning("notifier: no drain on SIGTERM with %s", gunicorn_runtime.TESTED.describe())


def _spawn_drain_watch(worker: Any) -> None:
    """Streams end, spread out, well inside ``graceful_timeout`` instead of
    being killed when it runs out."""
    import gevent

    from .lifecycle import drain_all
    from .runtime.gunicorn import worker_stopping

    def watch() -> None:
        while not worker_stopping(worker):
            gevent.sleep(0.2)
        drain_all()

    gevent.spawn(watch)


def child_exit(server: Any, worker: Any) -> None:
    """A dead worker's live gauges must not be summed any more."""
    from prometheus_client import multiprocess

    from .config import multiprocess_metrics_dir

    if multiprocess_metrics_dir():
        multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if _prepared.get("owned_metrics_dir"):
        shutil.rmtree(_prepared["metrics_dir"], ignore_errors=True)


def _raise_file_limit(server: Any) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1_048_576
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            server.log.warning("could not raise the open-file limit above %s", soft)


def _exit(error: ConfigError) -> NoReturn:
    print(f"notifier: {error}", file=sys.stderr)
    sys.exit(2)
