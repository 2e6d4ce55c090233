"""Load benchmark for notifier: ``python -m bench.run --help`` (see bench/README.md).

- ``bench.server``: starts a throwaway redis-server and gunicorn (2 gevent
  workers, gunicorn.conf.py) on free loopback ports, stops them by PID, and
  reads their CPU time and RSS from /proc.
- ``bench.wire``: a minimal HTTP/1.1 chunked + SSE parser (pure, no I/O).
- ``bench.agents``: the client processes (asyncio, raw sockets): stream
  holders and a publisher, driven over a pipe by the coordinator.
- ``bench.run``: the scenarios (connect, broadcast, fanout, unicast, batch,
  publish), one JSON line and one table each.
"""
