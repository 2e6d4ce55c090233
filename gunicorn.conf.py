"""gunicorn settings for notifier: gevent workers holding thousands of streams.

Everything can be tuned from the environment (``NOTIFIER_BIND``,
``NOTIFIER_WORKERS``, ``NOTIFIER_WORKER_CONNECTIONS``, ``NOTIFIER_DRAIN_SECONDS``).
"""

import multiprocessing
import os
import resource
import shutil
import sys
import tempfile


def _env_int(name, default):
    try:
        return int(os.environ.get(name) or default)
    except ValueError:
        sys.exit(f"{name} must be a whole number")


def _env_float(name, default):
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        sys.exit(f"{name} must be a number")


bind = os.environ.get("NOTIFIER_BIND", "127.0.0.1:8000").split(",")
worker_class = "gevent"
# Each stream is one greenlet: size for thousands per worker.
worker_connections = _env_int("NOTIFIER_WORKER_CONNECTIONS", 10000)
workers = _env_int("NOTIFIER_WORKERS", _env_int("WEB_CONCURRENCY", multiprocessing.cpu_count()))
if not os.environ.get("NOTIFIER_REDIS_URL") and workers != 1:
    # The embedded broker lives inside one process: a second worker would
    # never see the first one's events.
    print("notifier: no NOTIFIER_REDIS_URL, so the embedded broker runs in a single worker", file=sys.stderr)
    workers = 1
# gevent must patch before the app (and redis, ssl...) is imported.
preload_app = False
# gevent records, for every greenlet, the stack it was spawned from: four more
# objects per stream for every garbage collection to walk, and a slower spawn.
# Nothing of ours reads them.
os.environ.setdefault("GEVENT_TRACK_GREENLET_TREE", "false")
# gunicorn >= 23 opens a control socket in ~/.gunicorn: a second instance on
# the same machine would take over the first one's. We do not use it.
control_socket_disable = True
# Streams are long-lived by design; the drain ends them before this runs out.
drain_seconds = _env_float("NOTIFIER_DRAIN_SECONDS", 10.0)
graceful_timeout = int(drain_seconds) + 10
timeout = 30
keepalive = 5
# Our JSON access log replaces gunicorn's (which would log query strings).
accesslog = None
errorlog = "-"
loglevel = os.environ.get("NOTIFIER_LOG_LEVEL", "info").lower()
proc_name = "notifier"


def on_starting(server):
    """Validate the configuration once, in the master, before any worker forks,
    so a bad setting is one clear error and a non-zero exit, not a boot loop."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from notifier.config import Config, ConfigError

    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"notifier: {exc}", file=sys.stderr)
        sys.exit(2)
    server.log.info("notifier config: %r", config)
    _raise_file_limit(server)
    _prepare_metrics_dir(server)


def _raise_file_limit(server):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1_048_576
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            server.log.warning("could not raise the open-file limit above %s", soft)


def _prepare_metrics_dir(server):
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        path = tempfile.mkdtemp(prefix="notifier-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    os.makedirs(path, exist_ok=True)
    # Files of a previous run would be summed into this one's.
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.unlink(os.path.join(path, name))


def post_worker_init(worker):
    """Each worker, once its app is loaded: fewer sends per response, garbage
    collection tuned for long-lived streams and timed, and a watcher that
    starts the drain as soon as gunicorn asks this worker to stop (SIGTERM
    sets ``worker.alive = False``), so streams end, spread out, well inside
    ``graceful_timeout`` instead of being killed when it runs out."""
    import gevent

    # One send per small response and per SSE chunk (notifier/gunicorn_writes.py).
    from notifier.gunicorn_writes import install
    from notifier.worker_gc import PauseRecorder, tune_for_streams
    from notifier.worker_resources import ResourceSampler

    install()
    # Shorter and fewer full garbage collections (notifier/worker_gc.py).
    worker.log.debug("froze %d startup objects", tune_for_streams())
    state = worker.wsgi.extensions.get("notifier") if hasattr(worker.wsgi, "extensions") else None
    if state is None:
        return
    # Started after the startup collection: that one stops nobody.
    PauseRecorder(state.metrics.gc_pause).start()
    # The worker's CPU and memory (prometheus_client's process metrics see one worker only).
    ResourceSampler(state.metrics).start()

    def watch():
        while worker.alive:
            gevent.sleep(0.2)
        state.drain()

    gevent.spawn(watch)


def child_exit(server, worker):
    """A dead worker's live gauges must not be summed any more."""
    from prometheus_client import multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if os.path.basename(path).startswith("notifier-metrics-"):
        shutil.rmtree(path, ignore_errors=True)
