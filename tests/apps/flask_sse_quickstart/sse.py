# ruff: noqa: I001  (the quickstart as written: only its flask_sse import changed)
"""flask-sse's quickstart app, from its documentation (docs/quickstart.rst of
https://github.com/singingwolfboy/flask-sse, flask-sse 1.0.0, MIT licence,
by David Baumgold), changed by one import: ``notifier.compat.flask_sse``
instead of ``flask_sse``. Its template is the quickstart's ``index.html``.

Run as the quickstart says, ``gunicorn sse:app --worker-class gevent``
(tests/e2e/test_flask_sse_quickstart.py; it points notifier at its own
throwaway Redis with NOTIFIER_REDIS_URL, which wins over the code's
``REDIS_URL``).
"""

from flask import Flask, json, render_template  # noqa: F401
from notifier.compat.flask_sse import sse

app = Flask(__name__)
app.config["REDIS_URL"] = "redis://localhost"
app.register_blueprint(sse, url_prefix='/stream')

@app.route('/')
def index():
    return render_template("index.html")

@app.route('/hello')
def publish_hello():
    sse.publish({"message": "Hello!"}, type='greeting')
    return "Message sent!"
