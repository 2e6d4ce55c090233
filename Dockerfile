# notifier: gunicorn with gevent workers serving Server-Sent Events.
#
#   docker build -t notifier .
#   docker run --rm -p 8000:8000 -e NOTIFIER_REDIS_URL=redis://redis:6379/0 \
#       -e NOTIFIER_JWT_SECRET="$(openssl rand -base64 48)" notifier
#
# Two stages: the first builds a virtualenv with the runtime dependencies
# only (install_requires, pinned by constraints.txt; no dev tools), the
# second copies that virtualenv onto a clean slim base and runs as a
# non-root user. Everything the app writes goes to /tmp (the Kubernetes
# manifests mount an emptyDir there and make the root filesystem read-only).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY constraints.txt setup.cfg pyproject.toml README.md ./
COPY notifier ./notifier
# A regular (not editable) install of the package and its runtime
# dependencies, at the versions the tests ran with.
RUN pip install --no-cache-dir -c constraints.txt ./

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="notifier" \
      org.opencontainers.image.description="Real-time notifications over Server-Sent Events"
RUN groupadd --system --gid 10001 notifier \
    && useradd --system --uid 10001 --gid notifier --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin notifier
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY gunicorn.conf.py wsgi.py ./
# Explicit production settings: the app refuses to start without a real
# secret (NOTIFIER_JWT_SECRET or a key file) and NOTIFIER_REDIS_URL decides
# between Redis (any number of workers and pods) and the embedded broker.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NOTIFIER_ENV=production \
    NOTIFIER_BIND=0.0.0.0:8000 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/notifier-metrics
USER 10001:10001
EXPOSE 8000
# Liveness only: /livez never depends on Redis (readiness is /readyz, for
# the load balancer).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=2).status == 200 else 1)"]
# gunicorn drains on SIGTERM: streams end, spread out, within NOTIFIER_DRAIN_SECONDS.
STOPSIGNAL SIGTERM
CMD ["gunicorn", "--config", "/app/gunicorn.conf.py", "wsgi:app"]
