"""gunicorn settings for notifier: gevent workers holding thousands of streams.

Every value comes from ``NOTIFIER_*`` through ``notifier.config.ServerSettings``
(docs/deployment.md lists them); the hooks live in ``notifier/server.py``.
"""

import os
import sys

# Run from a checkout or the image's /app, installed or not.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from notifier import server

settings = server.load_settings()
server.prepare(settings)

bind = list(settings.bind)
workers = settings.workers
worker_class = "gevent"
# Each stream is one greenlet: size for thousands per worker.
worker_connections = settings.worker_connections
# gevent must patch before the app (and redis, ssl...) is imported.
preload_app = False
# gunicorn >= 23 opens a control socket in ~/.gunicorn: a second instance on
# the same machine would take over the first one's. We do not use it.
control_socket_disable = True
graceful_timeout = settings.graceful_timeout
timeout = 30
keepalive = 5
# Our JSON access log replaces gunicorn's (which would log query strings).
accesslog = None
errorlog = "-"
loglevel = settings.log_level.lower()
proc_name = "notifier"

on_starting = server.on_starting
post_worker_init = server.post_worker_init
child_exit = server.child_exit
on_exit = server.on_exit
