"""Moved to notifier/runtime/gunicorn.py; kept for host configs that call
``notifier.gunicorn_writes.install()`` (prefer ``notifier.server.post_worker_init``)."""

from .runtime.gunicorn import install_writes as install

__all__ = ["install"]
