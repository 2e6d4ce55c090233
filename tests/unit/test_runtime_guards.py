"""Each dependency-internal touch (notifier/runtime/) is guarded by the release
range it was read against and tested with. These tests fail when an installed
release leaves a range, or when setup.cfg or constraints.txt disagree with one:
an upgrade is a conscious act (read the new source, widen the range)."""

from __future__ import annotations

import configparser
import re
from types import ModuleType

import pytest

from notifier.runtime import flask as flask_runtime
from notifier.runtime import gevent as gevent_runtime
from notifier.runtime import gunicorn as gunicorn_runtime
from notifier.runtime import prometheus as prometheus_runtime
from notifier.runtime import redis as redis_runtime
from notifier.runtime import versions

from ..support.processes import ROOT

GUARDED = [flask_runtime, gevent_runtime, gunicorn_runtime, prometheus_runtime, redis_runtime]


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def install_requires() -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    found = {}
    for line in parser["options"]["install_requires"].strip().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?(.*)", line.strip())
        assert match, line
        found[normalized(match.group(1))] = match.group(3).replace(" ", "")
    return found


def pinned() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return {normalized(name): version for name, version in (line.split("==") for line in lines if "==" in line)}


@pytest.mark.parametrize("module", GUARDED, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_the_installed_release_is_inside_the_range_the_touch_was_written_against(module: ModuleType) -> None:
    tested: versions.Tested = module.TESTED
    assert tested.installed is not None, f"{tested.distribution} is not installed"
    assert tested.covers(tested.installed), (
        f"{tested.describe()}: read notifier/runtime/{module.__name__.rsplit('.', 1)[1]}.py against this release, "
        "then widen TESTED and setup.cfg")
    assert module.ACTIVE


@pytest.mark.parametrize("module", GUARDED, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_setup_cfg_allows_exactly_the_guarded_range_and_constraints_pin_inside_it(module: ModuleType) -> None:
    tested: versions.Tested = module.TESTED
    name = normalized(tested.distribution)
    assert install_requires()[name] == tested.specifier
    assert tested.covers(pinned()[name])


def test_in_range_the_internal_paths_are_taken() -> None:
    assert redis_runtime.next_ready_pubsub_message is redis_runtime.fast_next_ready_pubsub_message
    assert redis_runtime.send_and_read is redis_runtime.fast_send_and_read
    assert redis_runtime.new_connection is redis_runtime.fast_new_connection
    assert redis_runtime.connection_has_pending_bytes is redis_runtime.fast_has_pending_bytes
    assert redis_runtime.connection_fileno is redis_runtime.fast_connection_fileno
    assert prometheus_runtime.observe_many is prometheus_runtime.fast_observe_many
    assert gevent_runtime.watch_readable is gevent_runtime.fast_watch_readable
    assert gevent_runtime.call_after_this_turn is gevent_runtime.fast_call_after_this_turn
    assert flask_runtime.has_error_handler is flask_runtime.fast_has_error_handler


@pytest.mark.parametrize(("version", "covered"), [
    ("27.0.0", False), ("27.0.1", True), ("27.0.1.post1", True), ("27.0.9", True), ("27.1", False),
    ("27.1.0rc1", False), ("28.0.0", False), ("26.9.9", False),
])
def test_a_range_includes_its_lowest_release_and_excludes_its_upper_bound(version: str, covered: bool) -> None:
    assert versions.Tested("gunicorn", "27.0.1", "27.1").covers(version) is covered


def test_a_missing_distribution_is_never_active() -> None:
    tested = versions.Tested("notifier-no-such-distribution", "1", "2")
    assert tested.installed is None and not tested.active
    assert versions.parse("8.1.0rc1") == (8, 1, 0)
