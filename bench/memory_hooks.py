"""gunicorn config for ``bench.memory``: the production ``gunicorn.conf.py``,
plus a worker hook that starts tracemalloc (``NOTIFIER_BENCH_TRACE=1``) and
writes a snapshot into ``NOTIFIER_BENCH_SNAPSHOTS`` each time a
``snapshot-<i>.request`` file appears there (after a full collection)."""

import gc
import os

import gevent

_production = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gunicorn.conf.py")
_here = __file__
__file__ = _production  # it puts its own directory, the checkout's root, first on sys.path
with open(_production) as _file:
    exec(compile(_file.read(), _production, "exec"))
__file__ = _here

_production_post_worker_init = post_worker_init  # noqa: F821 - defined by the exec above


def post_worker_init(worker):
    import tracemalloc

    _production_post_worker_init(worker)
    if os.environ.get("NOTIFIER_BENCH_TRACE") == "1":
        tracemalloc.start(8)
    directory = os.environ["NOTIFIER_BENCH_SNAPSHOTS"]

    def serve_snapshots():
        taken = 0
        while True:
            gevent.sleep(0.1)
            request = os.path.join(directory, f"snapshot-{taken}.request")
            if not os.path.exists(request):
                continue
            gc.collect()
            target = os.path.join(directory, f"snapshot-{taken}.tracemalloc")
            if tracemalloc.is_tracing():
                tracemalloc.take_snapshot().dump(target + ".part")
            else:
                open(target + ".part", "w").close()
            os.rename(target + ".part", target)
            taken += 1

    gevent.spawn(serve_snapshots)
