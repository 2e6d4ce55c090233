"""A host Flask app that mounts notifier, as a legacy app would
(tests/e2e/test_preload.py serves it under gunicorn, with and without preload_app)."""

import os

from flask import Flask

from notifier import Notifier
from notifier.config import Config

app = Flask("host")


@app.get("/host/pid")
def pid() -> dict[str, int]:
    return {"pid": os.getpid()}


Notifier(app, Config.from_env())
