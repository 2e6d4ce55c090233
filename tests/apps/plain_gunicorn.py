"""No gunicorn settings and none of notifier's hooks: the command line of the
app under test (``GUNICORN_CMD_ARGS``) is all there is, as in flask-sse's
quickstart (``gunicorn sse:app --worker-class gevent``). Only here so that
gunicorn does not pick up the repository's own ``gunicorn.conf.py``."""
