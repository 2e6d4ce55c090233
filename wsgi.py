"""WSGI entry point: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Imported by each gunicorn worker after gevent has patched the standard
library (no preload_app), so the app and its Redis subscriber greenlet are
built inside the worker that uses them.
"""

from notifier import create_app

app = create_app()
