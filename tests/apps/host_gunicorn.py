"""A host app's own gunicorn config, calling notifier's hooks.

With ``preload_app = True`` the app is imported in the master, before
gunicorn's gevent worker patches the standard library (it patches after the
fork): gevent must patch first, here, before anything imports the app or
redis. Without preloading there is nothing to do (the worker patches before
it imports the app).
"""

import os

PRELOAD = os.environ.get("HOST_PRELOAD") == "1"

if PRELOAD:
    from gevent import monkey

    monkey.patch_all()

from notifier import server  # noqa: E402

settings = server.load_settings()
server.prepare(settings)

bind = list(settings.bind)
workers = settings.workers
worker_class = "gevent"
preload_app = PRELOAD
control_socket_disable = True
graceful_timeout = settings.graceful_timeout
accesslog = None
errorlog = "-"
loglevel = "info"

on_starting = server.on_starting
post_worker_init = server.post_worker_init
child_exit = server.child_exit
on_exit = server.on_exit
