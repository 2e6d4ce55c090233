"""The Grafana dashboard and the alert rules an operator imports, proven.

- The rules: ``promtool check rules``, and ``promtool test rules`` on
  deploy/prometheus/notifier-rules.test.yml, in which each alert fires on
  synthetic series and clears again. The PrometheusRule component says the
  same rules (it is generated from the plain file) and renders with kustomize.
- Each alert has a runbook in docs/operations.md, and its threshold is there.
- The dashboard has the panels an operator needs, each with a description,
  and a datasource variable so it imports anywhere.
- Against the real thing: a Prometheus of the test's own (loopback, 1 s
  scrapes and evaluations, the rules loaded) scrapes a real gunicorn (2
  gevent workers) and redis-server under a small bounded load; then every
  PromQL expression of the dashboard and of the rules runs through
  Prometheus' HTTP API. Each must return a result, name only metrics that
  Prometheus scraped, and use only labels those metrics carry, so a renamed
  metric or label fails here instead of leaving a panel or an alert silently
  empty.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from ..support import tokens
from ..support.processes import ROOT, Gunicorn, Prometheus, RedisServer, wait_until
from ..support.sse import SSEConnection

RULES = ROOT / "deploy" / "prometheus" / "notifier-rules.yml"
RULES_TESTS = ROOT / "deploy" / "prometheus" / "notifier-rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "notifier.json"
OPERATIONS = ROOT / "docs" / "operations.md"
K8S = ROOT / "k8s"
COMPONENT = K8S / "components" / "prometheus-rules"
BIN = Path(sys.executable).parent

# The target labels Kubernetes service discovery gives notifier's series; the test's Prometheus sets them too.
NAMESPACE, POD = "notifier-test", "notifier-test-0"
# Dashboard variables as Grafana would fill them in (the pod variable's "All" is ".*").
VARIABLES = {"$namespace": NAMESPACE, "$pod": ".*", "$__rate_interval": "10s"}

# The panels an operator needs: title -> metrics its queries must use.
PANELS = {
    "Open streams (total)": {"notifier_streams_open"},
    "Open streams per pod": {"notifier_streams_open"},
    "Stream connects and disconnects by reason": {"notifier_stream_connects_total", "notifier_stream_disconnects_total"},
    "Stream rejections by status": {"notifier_stream_rejections_total"},
    "Auth failures by endpoint": {"notifier_auth_failures_total"},
    "Events published by target and delivered": {"notifier_events_published_total", "notifier_events_delivered_total"},
    "Publish-to-write latency": {"notifier_publish_to_write_seconds_bucket"},
    "Evictions": {"notifier_evictions_total"},
    "Replays and resets by reason": {"notifier_replays_total", "notifier_replay_resets_total"},
    "Subscriber state": {"notifier_subscriber_up"},
    "Subscriber reconnects and readiness failures": {"notifier_subscriber_reconnects_total", "notifier_readiness_failures_total"},
    "Subscriber probe age": {"notifier_subscriber_probe_age_seconds"},
    "Publish requests and errors by status": {"notifier_publish_requests_total", "notifier_publish_errors_total"},
    "Publish error ratio": {"notifier_publish_errors_total", "notifier_publish_requests_total"},
    "GC pauses by generation": {"notifier_gc_pause_seconds_bucket"},
    "CPU per pod": {"notifier_worker_cpu_seconds_total"},
    "Memory per pod": {"notifier_worker_resident_memory_bytes", "notifier_memory_limit_bytes"},
}
# The labels each of those panels must split by.
PANEL_GROUPING = {
    "Open streams per pod": {"pod"},
    "Stream connects and disconnects by reason": {"reason"},
    "Stream rejections by status": {"status"},
    "Auth failures by endpoint": {"endpoint"},
    "Events published by target and delivered": {"target"},
    "Replays and resets by reason": {"reason"},
    "Subscriber state": {"pod"},
    "Publish requests and errors by status": {"status"},
    "GC pauses by generation": {"generation", "le"},
    "CPU per pod": {"pod"},
    "Memory per pod": {"pod"},
}
ALERTS = {"NotifierSubscriberDown", "NotifierReadinessFailing", "NotifierEvictionRateHigh", "NotifierPublishErrorRatioHigh",
          "NotifierPublishToWriteSlow", "NotifierMemoryNearLimit", "NotifierGCPausesLong"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is not on PATH: install Debian's prometheus package (scripts/ensure-system-deps)"
    return subprocess.run([binary, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict[str, Any]]:
    found = []
    for panel in dashboard()["panels"]:
        found.extend(panel.get("panels", []) if panel["type"] == "row" else [panel])
    return found


# ---------------------------------------------------------------------------
# PromQL, read just enough to know which metrics and labels an expression uses

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on", "ignoring", "group_left", "group_right"}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (not functions, aggregations, keywords or labels)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(\s*\()?", text):
        if match.group(2) is None and match.group(1).lower() not in _KEYWORDS:
            names.add(match.group(1))
    return names


def matcher_labels(expr: str) -> list[tuple[str, str]]:
    """(metric, label) for each label matcher written as ``metric{label=...}``."""
    found = []
    for match in re.finditer(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}", _STRING.sub(lambda m: '"' + "x" * (len(m.group()) - 2) + '"', expr)):
        for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", match.group(2)):
            found.append((match.group(1), label))
    return found


def _balanced(text: str, start: int) -> str:
    """The text inside the parenthesis opening at ``start``."""
    depth = 0
    for index in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return text[start + 1:index]
    raise AssertionError(f"unbalanced parentheses in {text!r}")


def grouping(expr: str) -> list[tuple[set[str], set[str]]]:
    """(labels, metrics aggregated) for each ``by (labels) (argument)`` in an expression."""
    text = _STRING.sub('""', expr)
    found = []
    for match in re.finditer(r"\bby\s*\(([^)]*)\)\s*", text):
        assert text[match.end()] == "(", f"write `sum by (...) (x)`, not `sum(x) by (...)`: {expr}"
        labels = {label.strip() for label in match.group(1).split(",") if label.strip()}
        found.append((labels, metric_names(_balanced(text, match.end()))))
    return found


def test_promql_reading_finds_metrics_labels_and_groupings() -> None:
    expr = ('histogram_quantile(0.99, sum by (pod, le) (rate(notifier_x_bucket{namespace="$ns", pod=~"a{b}"}[5m])))'
            ' / on(pod) max by (pod) (notifier_limit_bytes) > 1e3 and up offset 5m')
    assert metric_names(expr) == {"notifier_x_bucket", "notifier_limit_bytes", "up"}
    assert matcher_labels(expr) == [("notifier_x_bucket", "namespace"), ("notifier_x_bucket", "pod")]
    assert grouping(expr) == [({"pod", "le"}, {"notifier_x_bucket"}), ({"pod"}, {"notifier_limit_bytes"})]


# ---------------------------------------------------------------------------
# the rules, offline


def test_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_each_alert_fires_and_clears_in_promtool_unit_tests() -> None:
    result = promtool("test", "rules", str(RULES_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    names = {rule["alert"] for rule in alert_rules()}
    assert names >= ALERTS, ALERTS - names
    # Each alert has a case where it fires and, later in the same case, one where it has cleared.
    fired_then_cleared = set()
    for case in yaml.safe_load(RULES_TESTS.read_text())["tests"]:
        checks = sorted(case["alert_rule_test"], key=lambda check: _minutes(check["eval_time"]))
        for index, check in enumerate(checks):
            if check["exp_alerts"] and any(later["alertname"] == check["alertname"] and later["exp_alerts"] == []
                                           for later in checks[index + 1:]):
                fired_then_cleared.add(check["alertname"])
    assert fired_then_cleared == names, names ^ fired_then_cleared


def _minutes(duration: str) -> float:
    number, unit = re.fullmatch(r"(\d+)([smh])", duration).groups()  # type: ignore[union-attr]
    return int(number) * {"s": 1 / 60, "m": 1, "h": 60}[unit]


def test_alerts_have_severity_summary_and_a_runbook_with_their_threshold() -> None:
    text = OPERATIONS.read_text()
    headings = {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip()).lower().replace(" ", "-"): line
                for line in text.splitlines() if line.startswith("#")}
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
        path, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert path == "docs/operations.md" and anchor == name.lower(), rule["annotations"]["runbook_url"]
        assert anchor in headings, f"docs/operations.md has no heading for #{anchor}"
        section = text.split(headings[anchor], 1)[1].split("\n### ", 1)[0]
        for part in ("What it means", "What to check", "What to do"):
            assert part in section, f"{name}'s runbook lacks {part!r}"
        # The threshold (the number after the last comparison) is in the runbook's alert table.
        threshold = re.search(r"[<>]=?\s*([0-9.]+)\s*$", rule["expr"]).group(1)  # type: ignore[union-attr]
        row = next((line for line in text.splitlines() if line.startswith(f"| [{name}]")), "")
        assert f"`{threshold}`" in row, f"the alert table in docs/operations.md does not show {name}'s threshold {threshold}"


def test_prometheus_rule_component_says_the_same_rules() -> None:
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "render-prometheus-rule"), "--check"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stderr
    [resource] = [doc for doc in yaml.safe_load_all((COMPONENT / "prometheusrule.yaml").read_text()) if doc]
    assert resource["apiVersion"] == "monitoring.coreos.com/v1" and resource["kind"] == "PrometheusRule"
    assert resource["spec"] == yaml.safe_load(RULES.read_text())
    # What the Prometheus Operator's CRD requires of a rule.
    for group in resource["spec"]["groups"]:
        assert isinstance(group["name"], str) and group["rules"]
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule)
            assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule
            assert isinstance(rule["expr"], str)
            assert re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", rule.get("for", "0s"))
            for mapping in (rule.get("labels", {}), rule.get("annotations", {})):
                assert all(isinstance(key, str) and isinstance(value, str) for key, value in mapping.items())


def test_prometheus_rule_component_renders_into_the_overlay(tmp_path: Path) -> None:
    relative = os.path.relpath(K8S, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "notifier",
        "resources": [f"{relative}/overlays/example"], "components": [f"{relative}/components/prometheus-rules"],
    }))
    result = subprocess.run([str(BIN / "kubectl"), "kustomize", str(tmp_path)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    [rule] = [doc for doc in yaml.safe_load_all(result.stdout) if doc and doc["kind"] == "PrometheusRule"]
    assert rule["metadata"]["namespace"] == "notifier"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    # promtool checks what the Operator will hand Prometheus.
    extracted = tmp_path / "rules.yml"
    extracted.write_text(yaml.safe_dump(rule["spec"]))
    check = promtool("check", "rules", str(extracted))
    assert check.returncode == 0, check.stdout + check.stderr


# ---------------------------------------------------------------------------
# the dashboard, offline


def test_dashboard_imports_anywhere_and_has_the_panels_an_operator_needs() -> None:
    board = dashboard()
    assert board["id"] is None and board["uid"] and board["title"]
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["pod"]["includeAll"] and variables["pod"]["allValue"] == ".*"
    found = {panel["title"]: panel for panel in panels()}
    assert set(PANELS) <= set(found), set(PANELS) - set(found)
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        title = panel["title"]
        # Every query goes to the chosen data source, never a data source of the machine it was made on.
        for holder in (panel, *panel["targets"]):
            assert holder["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        description = panel.get("description", "")
        assert len(description) > 150, f"{title}: say what it means and what to do when it looks wrong"
        exprs = [target["expr"] for target in panel["targets"]]
        assert exprs and all('namespace="$namespace"' in expr and 'pod=~"$pod"' in expr for expr in exprs), title
        used = set().union(*(metric_names(expr) for expr in exprs))
        assert PANELS.get(title, set()) <= used, (title, PANELS.get(title, set()) - used)
        grouped = set().union(*(labels for expr in exprs for labels, _ in grouping(expr)))
        assert PANEL_GROUPING.get(title, set()) <= grouped, (title, PANEL_GROUPING.get(title))
    assert any("histogram_quantile(0.99" in target["expr"] for target in found["Publish-to-write latency"]["targets"])
    for variable in ("namespace", "pod"):
        assert "notifier_streams_open" in variables[variable]["query"]["query"]


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, expr) for every panel query, the variables filled in as Grafana would."""
    queries = []
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in sorted(VARIABLES.items(), key=lambda item: -len(item[0])):
                expr = expr.replace(name, value)
            assert "$" not in expr, expr
            queries.append((f"panel {panel['title']!r} {target['refId']}", expr))
    return queries


def alert_signal(expr: str) -> str:
    """An alert's expression without its threshold: what it compares, which must have data at any time."""
    match = re.fullmatch(r"(.*\S)\s*(?:[<>]=?|==|!=)\s*[0-9.]+\s*", expr, flags=re.DOTALL)
    assert match, f"an alert's expr ends with `<comparison> <threshold>`: {expr}"
    return match.group(1)


# ---------------------------------------------------------------------------
# against a real Prometheus scraping a real notifier

PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: notifier
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:{port}"]
        labels:
          namespace: {namespace}
          pod: {pod}
"""


class Stack:
    def __init__(self, prometheus: Prometheus, server: Gunicorn):
        self.prometheus = prometheus
        self.server = server

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = requests.get(self.prometheus.url + "/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (expr, body)
        assert body["data"]["resultType"] == "vector", (expr, body["data"]["resultType"])
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def api(self, path: str, **params: Any) -> Any:
        response = requests.get(self.prometheus.url + path, params=params, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["data"]


def publish(server: Gunicorn, body: object, status: int = 202) -> None:
    response = requests.post(server.url + "/v1/publish", json=body, headers=tokens.bearer(tokens.publisher()), timeout=10)
    assert response.status_code == status, response.text


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    redis_server = RedisServer().start()
    server = Gunicorn({
        "NOTIFIER_REDIS_URL": redis_server.url,
        "NOTIFIER_JWT_SECRET": tokens.SECRET,
        "NOTIFIER_HEARTBEAT_SECONDS": "1",
        "NOTIFIER_PROBE_INTERVAL_SECONDS": "0.5",
        "NOTIFIER_PROBE_TIMEOUT_SECONDS": "1",
        "NOTIFIER_DRAIN_SECONDS": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path_factory.mktemp("metrics")),
    }, workers=2)
    prometheus: Prometheus | None = None
    connections: list[SSEConnection] = []
    try:
        server.start()
        prometheus = Prometheus(PROMETHEUS_CONFIG.format(rules=RULES, port=server.port, namespace=NAMESPACE, pod=POD)).start()
        stack = Stack(prometheus, server)
        load(server, connections)
        # Scraped after the load: every event delivered, and both workers' streams open.
        delivered = float(requests.get(server.url + "/metrics", timeout=5).text.split("\nnotifier_events_delivered_total ")[1].split()[0])
        wait_until(lambda: [float(s["value"][1]) for s in stack.query("sum(notifier_events_delivered_total)")] == [delivered],
                   15, interval=0.2, message="Prometheus to scrape the load")
        # A few more scrapes and rule evaluations, so rate() over the load has samples on both sides.
        time.sleep(3)
        yield stack
    finally:
        for connection in connections:
            connection.close()
        if prometheus is not None:
            prometheus.stop()
        server.stop()
        redis_server.stop()


def load(server: Gunicorn, connections: list[SSEConnection]) -> None:
    """Small and bounded: 8 streams, ~40 events in 7 publishes, a replay, a reset, refusals and errors."""
    for index in range(8):
        headers = tokens.bearer(tokens.token(f"user{index}", topics=["orders:*"]))
        connection = SSEConnection(server.url + "/v1/events?topic=orders:1", headers)
        assert connection.status == 200, connection.read_body()
        connections.append(connection)
    for round_ in range(3):
        publish(server, [{"user_id": f"user{index}", "message": f"m{round_}"} for index in range(8)])
    publish(server, {"topic": "orders:1", "message": "topic"})
    publish(server, {"broadcast": True, "message": "all"})
    for connection in connections:
        assert len(connection.collect(5, 10)) == 5
    first = connections[0]
    # A resume (replay) and a resume from an id that is not ours (reset).
    resumed = SSEConnection(server.url + "/v1/events", {**tokens.bearer(tokens.token("user0")), "Last-Event-ID": "0-0"})
    resumed.close()
    reset = SSEConnection(server.url + "/v1/events", {**tokens.bearer(tokens.token("user0")), "Last-Event-ID": "not-an-id"})
    assert [event.event for event in reset.collect(1, 5)] == ["reset"]
    reset.close()
    # Refusals: a bad token (401, an auth failure), a publish without a target (422), a subscriber's token on publish.
    assert requests.get(server.url + "/v1/events", headers=tokens.bearer("nope"), timeout=5).status_code == 401
    publish(server, {"message": "no target"}, status=422)
    response = requests.post(server.url + "/v1/publish", json={"user_id": "x", "message": "m"},
                             headers=tokens.bearer(tokens.token("user1")), timeout=5)
    assert response.status_code == 403
    assert first.status == 200


@pytest.mark.e2e
def test_prometheus_scrapes_every_notifier_metric_and_loads_the_rules(stack: Stack) -> None:
    names = set(stack.api("/api/v1/label/__name__/values"))
    scraped = {line.split("{")[0].split()[0] for line in requests.get(stack.server.url + "/metrics", timeout=5).text.splitlines()
               if line.startswith("notifier_")}
    assert scraped and scraped <= names, scraped - names
    [target] = stack.api("/api/v1/targets")["activeTargets"]
    assert target["health"] == "up", target
    # The rules are loaded and evaluate without error against real series.
    rules = [rule for group in stack.api("/api/v1/rules")["groups"] for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == {rule["alert"] for rule in alert_rules()}
    for rule in rules:
        assert rule["health"] == "ok" and not rule.get("lastError"), rule
    # Nothing is wrong with this notifier: no alert fires (a few may be pending on the load's refusals).
    firing = [alert for alert in stack.api("/api/v1/alerts")["alerts"] if alert["state"] == "firing"]
    assert firing == []


@pytest.mark.e2e
def test_every_dashboard_and_alert_query_names_real_metrics_and_labels(stack: Stack) -> None:
    names = set(stack.api("/api/v1/label/__name__/values"))
    labels: dict[str, set[str]] = {}

    def labels_of(metric: str) -> set[str]:
        if metric not in labels:
            series = stack.api("/api/v1/series", **{"match[]": metric})
            labels[metric] = set().union(*(set(s) for s in series)) - {"__name__"}
        return labels[metric]

    queries = dashboard_queries()
    for rule in alert_rules():
        # The alert itself must evaluate (it is quiet here); what it compares must have data.
        stack.query(rule["expr"])
        queries.append((f"alert {rule['alert']}", alert_signal(rule["expr"])))
    variables = {v["name"]: v["query"]["query"] for v in dashboard()["templating"]["list"] if v["type"] == "query"}
    assert set(stack.api("/api/v1/label/namespace/values", **{"match[]": "notifier_streams_open"})) == {NAMESPACE}
    assert set(stack.api("/api/v1/label/pod/values", **{"match[]": f'notifier_streams_open{{namespace="{NAMESPACE}"}}'})) == {POD}
    assert set(variables) == {"namespace", "pod"}

    problems = []
    for where, expr in queries:
        used = metric_names(expr)
        if not used:
            problems.append(f"{where}: names no metric: {expr}")
        for metric in sorted(used):
            if not metric.startswith("notifier_") or metric not in names:
                problems.append(f"{where}: {metric} is not a metric notifier exports")
        for metric, label in matcher_labels(expr):
            if metric in names and label not in labels_of(metric):
                problems.append(f"{where}: {metric} has no label {label!r} (it has {sorted(labels_of(metric))})")
        for by, metrics in grouping(expr):
            for metric in metrics & names:
                missing = by - labels_of(metric)
                if missing:
                    problems.append(f"{where}: groups {metric} by {sorted(missing)}, which it does not have")
        if not problems and not stack.query(expr):
            problems.append(f"{where}: returned nothing: {expr}")
    assert problems == [], "\n".join(problems)
    assert len(queries) >= 30


@pytest.mark.e2e
def test_queries_see_the_load(stack: Stack) -> None:
    """The numbers behind the panels are the load's, through Prometheus."""
    selector = f'{{namespace="{NAMESPACE}", pod="{POD}"}}'

    def value(expr: str) -> float:
        [sample] = stack.query(expr)
        return float(sample["value"][1])

    assert value(f"sum(notifier_streams_open{selector})") == 8
    assert value(f"sum(notifier_stream_connects_total{selector})") >= 10
    published = {s["metric"]["target"]: float(s["value"][1])
                 for s in stack.query(f"sum by (target) (notifier_events_published_total{selector})")}
    assert published == {"user": 24, "topic": 1, "broadcast": 1}
    assert value(f"sum(notifier_events_delivered_total{selector})") >= 40
    assert value(f"sum(notifier_publish_to_write_seconds_count{selector})") >= 40
    assert value(f'sum(notifier_stream_rejections_total{{status="401", namespace="{NAMESPACE}"}})') == 1
    assert value(f'sum(notifier_auth_failures_total{{endpoint="publish", namespace="{NAMESPACE}"}})') == 1
    assert value(f'sum(notifier_publish_errors_total{{status="422", namespace="{NAMESPACE}"}})') == 1
    assert value(f"sum(notifier_publish_requests_total{selector})") == 7
    assert value(f'sum(notifier_replay_resets_total{{reason="unknown_id", namespace="{NAMESPACE}"}})') == 1
    assert value(f"min(notifier_subscriber_up{selector})") == 1
    assert value(f"sum(notifier_worker_cpu_seconds_total{selector})") > 0
    memory = value(f"sum(notifier_worker_resident_memory_bytes{selector})")
    assert 20 << 20 < memory < value(f"max(notifier_memory_limit_bytes{selector})")
