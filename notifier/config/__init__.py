"""Configuration: every ``NOTIFIER_*`` variable (and the two of our
dependencies gunicorn needs) is read here and nowhere else, once at startup,
validated with every problem listed in one ``ConfigError``, frozen after;
secrets are never part of a message or a repr.

- ``settings.py``: ``Config``, the app's settings;
- ``server.py``: ``ServerSettings``, gunicorn's side;
- ``keys.py``: the JWT keys (secret, public key, key set) and the dev secret;
- ``network.py``: bind addresses, loopback-only development, CORS origins;
- ``reader.py``: reading variables while collecting problems.
"""

from __future__ import annotations

from .keys import (
    HMAC_ALGORITHMS,
    JWK_TYPES,
    KEY_ALGORITHMS,
    MIN_SECRET_BYTES,
    PLACEHOLDER,
    default_dev_secret_file,
    load_dev_secret,
)
from .reader import PREFIX, ConfigError
from .server import (
    LOG_LEVELS,
    METRICS_DIR_VAR,
    ServerSettings,
    default_streams_per_worker,
    export_worker_environment,
    multiprocess_metrics_dir,
)
from .settings import ENV_VARS, MAX_DATA_DEPTH_LIMIT, Config, mask_url

__all__ = [
    "ENV_VARS",
    "HMAC_ALGORITHMS",
    "JWK_TYPES",
    "KEY_ALGORITHMS",
    "LOG_LEVELS",
    "MAX_DATA_DEPTH_LIMIT",
    "METRICS_DIR_VAR",
    "MIN_SECRET_BYTES",
    "PLACEHOLDER",
    "PREFIX",
    "Config",
    "ConfigError",
    "ServerSettings",
    "default_dev_secret_file",
    "default_streams_per_worker",
    "export_worker_environment",
    "load_dev_secret",
    "mask_url",
    "multiprocess_metrics_dir",
]
