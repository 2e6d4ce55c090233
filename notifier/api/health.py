"""Health and metrics: cheap, unauthenticated, never streaming.

- ``/livez``: this worker's loop answers. Never looks at Redis: a Redis
  outage must not make Kubernetes restart healthy pods.
- ``/readyz``: this worker can deliver: its subscriber is connected (Redis
  reachable) and it is not draining.
- ``/metrics``: Prometheus exposition, summed over the workers.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..state import current_state

bp = Blueprint("notifier_health", __name__)


@bp.get("/livez")
def livez() -> Response:
    response = jsonify({"status": "ok"})
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/readyz")
def readyz() -> Response:
    state = current_state()
    health = state.core.health()
    ready, why = health.ok, health.reason
    if state.draining:
        ready, why = False, "draining"
    body = {"status": "ok" if ready else "unavailable", "broker": health.broker, "streams": len(state.hub)}
    if not ready:
        body["reason"] = why
        state.metrics.readiness_failures.labels("draining" if state.draining else "broker").inc()
    response = jsonify(body)
    response.status_code = 200 if ready else 503
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/metrics")
def metrics() -> Response:
    state = current_state()
    # Every worker refreshes its own subscriber gauges in the background
    # (SubscriberGauges); the one answering this scrape brings its own to now.
    state.subscriber_gauges.refresh(state.core)
    payload, content_type = state.metrics.exposition()
    return Response(payload, status=200, headers={"Content-Type": content_type, "Cache-Control": "no-store"})
