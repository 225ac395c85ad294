"""The ops endpoints on real nats-server and redis-server, services as processes, provider stubs.

A group over one buurt with an SMS member (Twilio stub: delivered) and a Telegram member who
blocked the bot (Telegram stub: 403, failed for good); a police notice and a report reach them.
The ops JSON must show coverage, the notice with "reached 1 of 2", and the failure by channel,
in step with the notifier's own Prometheus counters, and refuse anyone without an admin key.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_end_to_end import wait_for
from tests.providers import ProviderStubs, StubsConfig, TelegramConfig, TwilioConfig
from tests.servers import System

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

TWILIO_TOKEN = "twilio-auth-token-0123456789"
BLOCKED_CHAT = 4242
MEMBER_PHONE = "+31612345678"
HEADLINE = "Vermist: man van 80 met blauwe jas"
# Two buurten of about 1 km side by side in Stein (Limburg); the group covers "Centrum".
CENTRUM = [[5.76, 50.965], [5.775, 50.965], [5.775, 50.975], [5.76, 50.975], [5.76, 50.965]]
OOST = [[5.775, 50.965], [5.79, 50.965], [5.79, 50.975], [5.775, 50.975], [5.775, 50.965]]
SYNTHETIC = [("BU09710001", "Centrum", CENTRUM), ("BU09710002", "Oost", OOST)]
IN_CENTRUM = {"lat": 50.9697, "lon": 5.7667}
OPS_PATHS = ("/v1/ops/map", "/v1/ops/feed", "/v1/ops/delivery")


def import_features(system: System, tmp_path: Path, features: list[dict[str, Any]]) -> None:
    """Load areas with the real import command."""
    path = tmp_path / "buurten.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    done = subprocess.run(
        [sys.executable, "-m", "buurtalert", "areas", "import", str(path), "--no-progress",
         "--redis-url", system.redis_url],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr


def synthetic_buurten() -> list[dict[str, Any]]:
    """The two square buurten, as CBS-style features."""
    return [
        {
            "type": "Feature",
            "properties": {"BU_CODE": code, "BU_NAAM": name},
            "geometry": {"type": "Polygon", "coordinates": [ring]},
        }
        for code, name, ring in SYNTHETIC
    ]


@pytest.fixture
def stubs() -> Iterator[ProviderStubs]:
    """Twilio and Telegram stubs in this process; one Telegram chat has blocked the bot."""
    config = StubsConfig(
        twilio=TwilioConfig(auth_token=TWILIO_TOKEN),
        telegram=TelegramConfig(blocked_chats={BLOCKED_CHAT}),
    )
    with ProviderStubs(config, channels=["sms", "telegram"]) as running:
        yield running


def wire(system: System, stubs: ProviderStubs) -> None:
    """Point the notifier at the stubs; receipts come back to the edge."""
    system.env()  # allocates the ports, so the edge's URL is known before it starts
    system.extra_env.update(stubs.env())
    system.extra_env.update({
        "BUURTALERT_PUBLIC_URL": system.url("ingest"),
        "BUURTALERT_OPS_FEED_IDLE_S": "30",
    })


def add_group_with_members(client: httpx.Client, system: System, area_ids: list[str]) -> None:
    """Group "stein-centrum" over the areas: an SMS member and a Telegram member (blocked)."""
    admin = system.admin_headers()
    created = client.post("/v1/groups", headers=admin, json={
        "id": "stein-centrum", "name": "Stein centrum", "area_ids": area_ids})
    assert created.status_code == 201, created.text
    for channel, address in (("sms", MEMBER_PHONE), ("telegram", str(BLOCKED_CHAT))):
        member = client.post("/v1/groups/stein-centrum/members", headers=admin,
                             json={"channel": channel, "address": address})
        assert member.status_code == 201, member.text


def post_notice(client: httpx.Client, system: System) -> str:
    """A missing-person notice in a 200 m circle inside Centrum, no adjacent ring."""
    resp = client.post(
        "/v1/notices",
        headers={"Authorization": f"Bearer {system.dispatch_key}"},
        json={"category": "missing_person", "headline": HEADLINE, "adjacent_rings": 0,
              "area": {"circle": {**IN_CENTRUM, "radius_m": 200}}},
    )
    assert resp.status_code == 202, resp.text
    alert_id: str = resp.json()["alert_id"]
    return alert_id


def ops_get(client: httpx.Client, system: System, path: str, **params: Any) -> Any:
    resp = client.get(path, params=params, headers=system.admin_headers())
    assert resp.status_code == 200, resp.text
    return resp.json()


def feed_item(client: httpx.Client, system: System, item_id: str) -> dict[str, Any] | None:
    for item in ops_get(client, system, "/v1/ops/feed")["items"]:
        if item["id"] == item_id:
            found: dict[str, Any] = item
            return found
    return None


def settled(item: dict[str, Any] | None, planned: int) -> bool:
    reach = (item or {}).get("reach") or {}
    return reach.get("planned") == planned and reach.get("pending") == 0


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_ops_endpoints_show_coverage_reach_and_failures(
    system: System, stubs: ProviderStubs, tmp_path: Path
) -> None:
    import_features(system, tmp_path, synthetic_buurten())
    wire(system, stubs)
    system.start_all()
    with system.client() as client:
        add_group_with_members(client, system, ["BU09710001"])

        # Access: an admin key only. No key or an unknown one 401; a dispatch key or one
        # group's admin key 403.
        group_key = client.post("/v1/groups/stein-centrum/admin-keys",
                                headers=system.admin_headers()).json()["key"]
        for path in OPS_PATHS:
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
            for other in (system.dispatch_key, group_key):
                resp = client.get(path, headers={"Authorization": f"Bearer {other}"})
                assert resp.status_code == 403, (path, resp.text)
                assert "detail" in resp.json()
        page = client.get("/ops")
        assert page.status_code == 200
        assert "Beheersleutel" in page.text

        # Coverage: Centrum has the group, Oost has none.
        world = ops_get(client, system, "/v1/ops/map")
        assert world["mode"] == "areas"
        assert (world["areas_total"], world["areas_covered"], world["groups_total"]) == (2, 1, 1)
        props = {f["id"]: f["properties"] for f in world["features"]}
        assert props["BU09710001"]["covered"] is True
        assert props["BU09710001"]["groups"] == ["stein-centrum"]
        assert props["BU09710001"]["name"] == "Centrum"
        assert props["BU09710002"]["covered"] is False
        assert world["covered_extent"] == pytest.approx([5.76, 50.965, 5.775, 50.975])

        notice_id = post_notice(client, system)
        item = wait_for(lambda: feed_item(client, system, notice_id),
                        lambda i: settled(i, planned=2), timeout_s=60)
        assert item is not None
        assert item["type"] == "notice"
        assert item["notice"]["category"] == "missing_person"
        assert item["notice"]["msg_type"] == "Alert"
        assert item["area_names"] == ["Centrum"]
        assert item["groups"] == ["stein-centrum"]
        reach = item["reach"]
        assert (reach["planned"], reach["reached"], reach["failed"]) == (2, 1, 1)
        assert reach["outcomes"] == {"delivered": 1, "failed_permanent": 1}
        assert item["outline"]["type"] == "Polygon"
        # The point lies inside the notice's circle, in Centrum.
        assert item["point"][0] == pytest.approx(IN_CENTRUM["lon"], abs=0.003)
        assert item["point"][1] == pytest.approx(IN_CENTRUM["lat"], abs=0.003)

        report = client.post("/v1/reports", json={
            "text": "Inbraak bezig bij nummer 12: twee mannen bij de achterdeur",
            "called_112": True, "location": IN_CENTRUM})
        assert report.status_code == 202, report.text
        report_id = report.json()["alert_id"]
        incident = wait_for(lambda: feed_item(client, system, report_id),
                            lambda i: settled(i, planned=2), timeout_s=60)
        assert incident is not None
        assert incident["type"] == "incident"
        assert (incident["reports"], incident["channels"]) == (1, {"web": 1})
        assert incident["topic"] == "burglary"
        assert incident["reach"]["reached"] == 1

        feed = ops_get(client, system, "/v1/ops/feed")
        assert feed["live"] is True
        assert [i["id"] for i in feed["items"][:2]] == [report_id, notice_id]  # newest first
        dumped = json.dumps(feed)
        for private in (HEADLINE, "achterdeur", MEMBER_PHONE, "612345678", str(BLOCKED_CHAT)):
            assert private not in dumped, private

        # Delivery per channel: in step with the notifier's Prometheus counters.
        delivery = ops_get(client, system, "/v1/ops/delivery", minutes=10)
        by_channel = {c["channel"]: c for c in delivery["channels"]}
        assert set(by_channel) == {"sms", "telegram"}
        assert by_channel["sms"]["window"] == {"delivered": 2}
        assert by_channel["telegram"]["window"] == {"failed_permanent": 2}
        assert by_channel["telegram"]["failure_rate"] == 1.0
        assert by_channel["sms"]["failure_rate"] == 0.0
        assert sum(by_channel["sms"]["per_minute"]["delivered"]) == 2
        assert sum(by_channel["telegram"]["per_minute"]["failed"]) == 2
        metrics = httpx.get(system.url("notifier") + "/metrics", timeout=10).text
        for channel, outcome in (("sms", "delivered"), ("telegram", "failed_permanent")):
            counted = metric(metrics, "notifier_deliveries_total", channel=channel,
                             outcome=outcome)
            assert by_channel[channel]["totals"][outcome] == counted == 2
        assert len(stubs.received("sms")) == 2
