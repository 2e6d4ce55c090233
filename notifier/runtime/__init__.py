"""The only place in notifier that touches a dependency's internals.

One module per dependency. Each one that reaches past a public API declares the
release range it was read against and tested with (``TESTED``, a
``versions.Tested``); outside that range it takes a public-API fallback, so an
unknown release runs correctly, only slower. ``setup.cfg`` allows exactly these
ranges and ``tests/unit/test_runtime_guards.py`` fails when an installed release is
outside one: an upgrade is a conscious act (read the new source, widen the
range, run the tests).

Policy for a range: from the release tested (``constraints.txt``) up to, not
including, the next minor release.

Modules without ``TESTED`` (``jsonenc``, ``werkzeug``) use public APIs only and
say why that costs the same.
"""
