"""Alerting rules and the Grafana dashboard speak about metrics the services really export.

The metric families come from the services themselves: each app factory is built (nothing is
started or connected) and its Prometheus registry is read. A metric renamed in the code, or a
label dropped, breaks these tests. promtool (scripts/ensure-promtool.sh, run by `make test`)
checks both Prometheus configs, the rules and their unit tests, and the dashboard's PromQL.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
PROMETHEUS_CONFIGS = (PROMETHEUS_DIR / "prometheus.yml", PROMETHEUS_DIR / "prometheus-k8s.yml")
RULES_FILE = PROMETHEUS_DIR / "rules.yml"
RULES_TEST_FILE = PROMETHEUS_DIR / "rules_test.yml"
GRAFANA_DIR = REPO / "deploy" / "grafana"
DASHBOARD_FILE = GRAFANA_DIR / "dashboards" / "buurtalert.json"
DATASOURCE_FILE = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"

SERVICES = ("ingest", "router", "notifier")
#: Labels Prometheus itself attaches to every scraped series, or histograms carry.
TARGET_LABELS = frozenset({"job", "instance", "le", "namespace"})
#: Series Prometheus makes itself.
BUILTIN_SERIES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})
PROMQL_KEYWORDS = frozenset(
    {
        "by", "without", "on", "ignoring", "group_left", "group_right",
        "and", "or", "unless", "offset", "bool", "inf", "nan", "atan2", "start", "end",
    }
)  # fmt: skip
SEVERITIES = frozenset({"warning", "critical"})


# --- the metrics the services export ------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """One metric family of a service registry."""

    service: str
    name: str
    kind: str
    labels: frozenset[str]

    def series_names(self) -> set[str]:
        """The sample names Prometheus stores for this family."""
        if self.kind == "counter":
            return {f"{self.name}_total", f"{self.name}_created"}
        if self.kind == "histogram":
            return {f"{self.name}_{suffix}" for suffix in ("bucket", "sum", "count", "created")}
        return {self.name}


def build_registry(service: str) -> CollectorRegistry:
    """Build one service's app (not started) and return its metrics registry."""
    import importlib

    from shared import settings as settings_module

    module = importlib.import_module(f"services.{service}.app")
    settings_class = {
        "ingest": settings_module.IngestSettings,
        "router": settings_module.RouterSettings,
        "notifier": settings_module.NotifierSettings,
    }[service]
    captured: list[Any] = []
    real_create_runtime = module.create_runtime

    def capturing(*args: Any, **kwargs: Any) -> Any:
        runtime = real_create_runtime(*args, **kwargs)
        captured.append(runtime)
        return runtime

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "create_runtime", capturing)
        module.create_app(settings_class(env="test"))
    # The factory configures logging for a service process; give pytest its handlers back.
    root.handlers[:] = handlers
    root.setLevel(level)
    (runtime,) = captured
    registry = runtime.metrics
    assert isinstance(registry, CollectorRegistry)
    return registry


@cache
def service_families() -> dict[str, tuple[Family, ...]]:
    """Each service's metric families (registries built once per run)."""
    result: dict[str, tuple[Family, ...]] = {}
    for service in SERVICES:
        registry = build_registry(service)
        # Label names are not part of the exposition of a family without samples; the
        # collectors know them (prometheus-client keeps them in `_labelnames`).
        collectors = {
            getattr(c, "_name", None): c for c in set(registry._names_to_collectors.values())
        }
        result[service] = tuple(
            Family(
                service,
                metric.name,
                metric.type,
                frozenset(getattr(collectors.get(metric.name), "_labelnames", ())),
            )
            for metric in registry.collect()
        )
    return result


def exported_families() -> dict[str, Family]:
    """Every sample name any service exports, mapped to its family."""
    return {
        name: family
        for families in service_families().values()
        for family in families
        for name in family.series_names()
    }


def test_every_service_exports_domain_and_faststream_metrics() -> None:
    """The registries really were built: domain metrics and FastStream's for each service."""
    for service, families in service_families().items():
        names = {family.name for family in families}
        assert any(name.startswith(f"{service}_") for name in names), service
        assert any(name.startswith("faststream_") for name in names), service
    exported = exported_families()
    assert exported["notifier_deliveries_total"].labels == {"channel", "outcome"}
    assert exported["notifier_pending_jobs"].kind == "gauge"
    assert exported["notifier_accept_to_provider_seconds_bucket"].kind == "histogram"


# --- reading PromQL -----------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{([^{}]*)\}")
_MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_LABEL_REPLACE_TARGET = re.compile(r'label_replace\s*\([^"]*"([A-Za-z_]\w*)"')


@dataclass(frozen=True)
class Query:
    """What one PromQL expression refers to."""

    series: frozenset[str]
    labels: frozenset[str]  # in matchers and grouping clauses
    matchers: tuple[tuple[str, str, str], ...]  # (label, operator, value)
    made_labels: frozenset[str]  # labels label_replace creates


def read_promql(expr: str) -> Query:
    """Series names, label names and matchers of a PromQL expression (no full parser)."""
    matchers = tuple(
        (m.group(1), m.group(2), m.group(3))
        for block in _MATCHERS.findall(expr)
        for m in _MATCHER.finditer(block)
    )
    made = frozenset(_LABEL_REPLACE_TARGET.findall(expr))
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    grouping = {
        label.strip()
        for clause in _GROUPING.findall(text)
        for label in clause.split(",")
        if label.strip()
    }
    text = _GROUPING.sub(" ", text)
    text = _RANGE.sub(" ", text)
    series = {
        name for name in _IDENTIFIER.findall(text) if name.lower() not in PROMQL_KEYWORDS
    }
    return Query(
        frozenset(series),
        frozenset(grouping | {label for label, _, _ in matchers}),
        matchers,
        made,
    )


def test_promql_reader() -> None:
    """The reader finds series, labels and matchers, and not functions, keywords or strings."""
    query = read_promql(
        'sum by (channel) (rate(a_total{outcome=~"x|y", job="notifier"}[5m] offset 10m))'
        ' / on (channel) group_left sum without (le) (b_bucket) > 0.5 unless c'
        ' or label_replace(d, "reason", "p", "", "")'
        " and histogram_quantile(0.99, e[$__rate_interval])"
    )
    assert query.series == {"a_total", "b_bucket", "c", "d", "e"}
    assert query.labels == {"channel", "le", "outcome", "job"}
    assert ("outcome", "=~", "x|y") in query.matchers
    assert query.made_labels == {"reason"}


# --- the rules and the dashboard ----------------------------------------------------------------


def load_rules() -> list[dict[str, Any]]:
    """Every rule of rules.yml."""
    groups = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def load_dashboard() -> dict[str, Any]:
    """The dashboard JSON."""
    data = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def dashboard_panels() -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in load_dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, expr) for every dashboard target."""
    return [
        (f"panel {panel['id']} {panel['title']!r} {target['refId']}", target["expr"])
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
    ]


def all_queries() -> list[tuple[str, str]]:
    """(where, expr) for every rule and every dashboard target."""
    rules = [(f"rule {rule.get('alert') or rule['record']}", rule["expr"]) for rule in load_rules()]
    return rules + dashboard_queries()


def recorded_names() -> set[str]:
    """Series the rules record themselves."""
    return {rule["record"] for rule in load_rules() if "record" in rule}


@pytest.mark.parametrize(("where", "expr"), all_queries(), ids=lambda value: str(value)[:60])
def test_queries_use_exported_metrics(where: str, expr: str) -> None:
    """Every series a rule or panel reads is exported by a service, with the labels it uses."""
    families = exported_families()
    query = read_promql(expr)
    assert query.series, f"{where}: no series found in {expr!r}"
    unknown = query.series - families.keys() - BUILTIN_SERIES - recorded_names()
    assert not unknown, f"{where}: no service exports {sorted(unknown)}"
    known_labels = set(TARGET_LABELS) | set(query.made_labels)
    for name in query.series & families.keys():
        known_labels |= families[name].labels
    assert query.labels <= known_labels, f"{where}: unknown labels {query.labels - known_labels}"


def outcome_values() -> set[str]:
    """Outcome label values: the schema's Outcome plus those the notifier sets by literal."""
    from shared.schemas import Outcome

    values = set(typing.get_args(Outcome))
    for path in (REPO / "services" / "notifier").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        values |= set(re.findall(r"deliveries\.labels\([^()]*,\s*\"(\w+)\"\)", source))
    return values


def test_matched_label_values_exist() -> None:
    """outcome, kind and job values in matchers are ones the code and scrape configs produce."""
    from shared.schemas import AlertReceived

    kinds = set(typing.get_args(AlertReceived.model_fields["kind"].annotation))
    allowed = {"outcome": outcome_values(), "kind": kinds, "job": set(SERVICES)}
    for where, expr in all_queries():
        for label, operator, value in read_promql(expr).matchers:
            if label in allowed and operator in {"=", "=~"}:
                for alternative in value.split("|"):
                    assert alternative in allowed[label], f"{where}: {label}={alternative!r}"


def test_scrape_jobs_are_the_services() -> None:
    """Both Prometheus configs name their jobs after the services, as the rules expect."""
    for path in PROMETHEUS_CONFIGS:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        jobs = {job["job_name"] for job in config["scrape_configs"]} - {"prometheus"}
        assert jobs == set(SERVICES), path.name
        assert config["rule_files"] == ["rules.yml"], path.name


def test_rules_are_complete() -> None:
    """Each alert has for:, a severity, summary and description; the required alerts exist."""
    alerts = [rule for rule in load_rules() if "alert" in rule]
    names = [rule["alert"] for rule in alerts]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in alerts:
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{rule['alert']}: for:"
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]
    required = {
        "BuurtalertNoDeliveries": "notifier_deliveries_total",
        "BuurtalertDeliveryFailureRatioHigh": "notifier_deliveries_total",
        "BuurtalertPendingWorkGrowing": "notifier_pending_jobs",
        "BuurtalertDeadLetters": "_dead_letters_total",
        "BuurtalertServiceDown": "up{",
    }
    by_name = {rule["alert"]: rule["expr"] for rule in alerts}
    for name, needle in required.items():
        assert needle in by_name[name], name


def test_rule_tests_prove_firing_and_silence() -> None:
    """rules_test.yml shows the no-deliveries and dead-letter alerts both firing and silent."""
    tests = yaml.safe_load(RULES_TEST_FILE.read_text(encoding="utf-8"))
    assert tests["rule_files"] == ["rules.yml"]
    fired: set[str] = set()
    silent: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    alert_names = {rule["alert"] for rule in load_rules() if "alert" in rule}
    assert alert_names <= fired, f"never shown firing: {alert_names - fired}"
    for name in ("BuurtalertNoDeliveries", "BuurtalertDeadLetters"):
        assert name in silent, f"{name} never shown staying silent"


def test_dashboard_structure() -> None:
    """uid and title; unique panel ids; every panel uses the provisioned datasource."""
    dashboard = load_dashboard()
    assert dashboard["uid"] == "buurtalert"
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    (datasource,) = yaml.safe_load(DATASOURCE_FILE.read_text(encoding="utf-8"))["datasources"]
    panels = list(dashboard_panels())
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']!r} overlaps another panel"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}
        targets = panel["targets"]
        assert targets, f"{panel['title']!r} has no targets"
        ref_ids = [target["refId"] for target in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in targets:
            assert target["datasource"] == panel["datasource"]
            assert target["expr"].strip()


def test_dashboard_shows_what_ops_needs() -> None:
    """Throughput, outcomes, latency quantiles, limits, retries, backlog, reach, failures, up."""
    exprs = " ".join(expr for _, expr in dashboard_queries())
    for needle in (
        "ingest_alerts_accepted_total",
        "sum by (channel, outcome) (rate(notifier_deliveries_total",
        "histogram_quantile(0.5, sum by (channel, le) (rate(notifier_accept_to_provider_seconds",
        "histogram_quantile(0.99, sum by (channel, le) (rate(notifier_accept_to_provider_seconds",
        "notifier_rate_limited_total",
        "notifier_send_retries_total",
        "notifier_pending_jobs",
        "notifier_recipients_planned_total{kind=\"notice\"}",
        "router_dead_letters_total",
        "notifier_dead_letters_total",
        'up{job=~"ingest|router|notifier"}',
    ):
        assert needle in exprs, needle


# --- promtool -----------------------------------------------------------------------------------


def promtool() -> str:
    """promtool's path, or skip with how to get it."""
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(
            "promtool not on PATH: `make test` installs it (scripts/ensure-promtool.sh, as root);"
            " else apt-get install prometheus"
        )
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool with a timeout, output captured."""
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("path", PROMETHEUS_CONFIGS, ids=lambda path: path.name)
def test_promtool_check_config(path: Path) -> None:
    """`promtool check config` accepts the config and the rule files it loads."""
    result = run_promtool("check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rules.yml" in result.stdout


def test_promtool_check_rules() -> None:
    """`promtool check rules` accepts rules.yml."""
    result = run_promtool("check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    """The rules' unit tests pass: alerts fire when they should and stay silent otherwise."""
    result = run_promtool("test", "rules", str(RULES_TEST_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules_catches_a_broken_rule(tmp_path: Path) -> None:
    """A dead-letter rule that misses the first dead letter fails the rule tests."""
    broken = RULES_FILE.read_text(encoding="utf-8").replace(
        "(router_dead_letters_total unless router_dead_letters_total offset 15m)\n"
        "            or\n",
        "",
    )
    assert broken != RULES_FILE.read_text(encoding="utf-8")
    (tmp_path / "rules.yml").write_text(broken, encoding="utf-8")
    shutil.copy(RULES_TEST_FILE, tmp_path / "rules_test.yml")
    result = run_promtool("test", "rules", str(tmp_path / "rules_test.yml"))
    assert result.returncode != 0
    assert "BuurtalertDeadLetters" in result.stdout + result.stderr


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    """Every dashboard query is valid PromQL: promtool checks them as recording rules."""
    grafana_vars = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
    rules = []
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in grafana_vars.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
            record = f"dashboard:panel_{panel['id']}_{target['refId']}"
            rules.append({"record": record, "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout
