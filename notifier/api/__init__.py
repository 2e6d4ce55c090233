"""HTTP endpoints, one blueprint per concern."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask

if TYPE_CHECKING:  # pragma: no cover
    from ..state import NotifierState


def register_blueprints(app: Flask, state: NotifierState, *, standalone: bool, url_prefix: str = "") -> list[str]:
    """Register notifier's routes under ``url_prefix``; returns the blueprints' names."""
    from ..errors import NotifierError
    from ..runtime.flask import register_error_handler_once
    from . import client, devpage, events, health, inbox, openapi, publish, tickets
    from .cors import allow_origins
    from .errors import error_response, register_error_handlers

    blueprints = [events.bp, inbox.bp, publish.bp, health.bp, client.bp, tickets.bp, openapi.bp]
    # The dev page takes "/": never in a host app, which has its own.
    if standalone and state.config.dev_mode and state.config.dev_page:
        blueprints.append(devpage.bp)
    for blueprint in blueprints:
        if blueprint.name not in app.blueprints:
            app.register_blueprint(blueprint, url_prefix=url_prefix or None)
    allow_origins(app, state.config.cors_origins)
    if standalone:
        register_error_handlers(app)
    else:
        # Mounted in a host app: map our errors to JSON without touching how
        # the host renders its own.
        register_error_handler_once(app, NotifierError, error_response)
    return [blueprint.name for blueprint in blueprints]
