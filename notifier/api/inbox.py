"""Read state (the inbox): ``POST /v1/notifications/read``."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("notifier_inbox", __name__)
