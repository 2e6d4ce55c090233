"""Flask internals: whether an app already has a handler for an exception.

Read against Flask 3.1 (``App.error_handler_spec``: ``{scope: {code: {class:
handler}}}``, documented as internal). Mounted in a host app, notifier maps its
own errors to JSON only if the host has not said how to render them. Outside
the tested range only notifier's own registration is remembered (in
``app.extensions``), so a host handler registered before notifier is
replaced; one registered after it wins either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask

from .versions import Tested

TESTED = Tested("flask", "3.1", "3.2")
ACTIVE = TESTED.active

_MARK = "notifier.error_handlers"


def fast_has_error_handler(app: Flask, exception: type[Exception]) -> bool:
    return exception in app.error_handler_spec.get(None, {}).get(None, {})


def public_has_error_handler(app: Flask, exception: type[Exception]) -> bool:
    return exception in app.extensions.get(_MARK, ())


has_error_handler = fast_has_error_handler if ACTIVE else public_has_error_handler


def register_error_handler_once(app: Flask, exception: type[Exception], handler: Callable[[Any], Any]) -> bool:
    """Register ``handler`` app-wide unless ``exception`` already has one.
    True when registered."""
    if has_error_handler(app, exception):
        return False
    app.register_error_handler(exception, handler)
    app.extensions.setdefault(_MARK, set()).add(exception)
    return True
