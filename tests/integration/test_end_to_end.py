"""One alert's whole path on real nats-server and redis-server, services as processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import System

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

# A square of about 1 km around the centre of Stein (Limburg).
STEIN = {"lat": 50.9697, "lon": 5.7667}
SQUARE = {
    "type": "Polygon",
    "coordinates": [
        [[5.76, 50.965], [5.775, 50.965], [5.775, 50.975], [5.76, 50.975], [5.76, 50.965]]
    ],
}


def wait_for(fetch: Any, until: Any, timeout_s: float = 30.0) -> Any:
    """Poll fetch() until until(value) holds; return the value or fail with the last one."""
    deadline = time.monotonic() + timeout_s
    value = fetch()
    while not until(value):
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s}s; last value: {value!r}")
        time.sleep(0.1)
        value = fetch()
    return value


def outbox(client: httpx.Client, system: System, limit: int = 1000) -> list[dict[str, Any]]:
    """Entries in the local outbox."""
    resp = client.get("/v1/outbox", params={"limit": limit}, headers=system.admin_headers())
    resp.raise_for_status()
    data: list[dict[str, Any]] = resp.json()
    return data


def test_report_reaches_member_of_group_containing_point(system: System) -> None:
    system.start_all()
    with system.client() as client:
        admin = system.admin_headers()
        resp = client.post(
            "/v1/groups",
            headers=admin,
            json={"id": "stein-centrum", "name": "Stein centrum", "geometry": SQUARE},
        )
        assert resp.status_code == 201, resp.text
        member = client.post(
            "/v1/groups/stein-centrum/members",
            headers=admin,
            json={"channel": "sms", "address": "06 12345678"},
        )
        assert member.status_code == 201, member.text
        member_id = member.json()["member_id"]
        # A group elsewhere must not hear about it.
        far = {
            "type": "Polygon",
            "coordinates": [[[4.0, 52.0], [4.1, 52.0], [4.1, 52.1], [4.0, 52.1], [4.0, 52.0]]],
        }
        assert (
            client.post(
                "/v1/groups",
                headers=admin,
                json={"id": "elders", "name": "Elders", "geometry": far},
            ).status_code
            == 201
        )
        assert (
            client.post(
                "/v1/groups/elders/members",
                headers=admin,
                json={"channel": "telegram", "address": "4242"},
            ).status_code
            == 201
        )

        accepted = client.post(
            "/v1/reports",
            json={
                "text": "Man probeert fietsen te openen bij de kerk",
                "location": STEIN,
                "called_112": True,
            },
        )
        assert accepted.status_code == 202, accepted.text
        alert_id = accepted.json()["alert_id"]

        entries = wait_for(
            lambda: outbox(client, system), lambda es: any(e["alert_id"] == alert_id for e in es)
        )
        mine = [e for e in entries if e["alert_id"] == alert_id]
        assert len(mine) == 1
        assert mine[0]["member_id"] == member_id
        assert mine[0]["address"] == "+31612345678"  # normalised to E.164
        assert mine[0]["channel"] == "sms"
        assert "112 is gebeld" in mine[0]["text"]

        outcomes = client.get(f"/v1/alerts/{alert_id}/outcomes", headers=admin).json()
        assert [o["outcome"] for o in outcomes] == ["delivered"]

        # Every service shows the alert in its metrics.
        for name, needle in [
            ("ingest", 'ingest_alerts_accepted_total{channel="web",kind="report"} 1.0'),
            ("router", 'router_alerts_total{kind="report",outcome="matched"} 1.0'),
            ("notifier", 'notifier_deliveries_total{channel="outbox",outcome="delivered"} 1.0'),
        ]:
            text = httpx.get(f"{system.url(name)}/metrics", timeout=5).text
            assert needle in text, f"{name} metrics lack {needle}"
            assert "faststream_" in text or name == "ingest"


def test_report_via_imported_area(system: System, tmp_path: Path) -> None:
    collection = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"BU_CODE": "BU09710001", "BU_NAAM": "Centrum"},
                "geometry": SQUARE,
            },
            {
                "type": "Feature",
                "properties": {"BU_CODE": "BU09710002", "BU_NAAM": "Oost"},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [
                        [
                            [5.775, 50.965],
                            [5.79, 50.965],
                            [5.79, 50.975],
                            [5.775, 50.975],
                            [5.775, 50.965],
                        ]
                    ],
                },
            },
        ],
    }
    path = tmp_path / "areas.geojson"
    path.write_text(json.dumps(collection))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "buurtalert",
            "areas",
            "import",
            str(path),
            "--no-progress",
            "--redis-url",
            system.redis_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    system.start_all()
    with system.client() as client:
        area = client.get("/v1/areas/BU09710001").json()
        assert area == {"id": "BU09710001", "name": "Centrum", "adjacent": ["BU09710002"]}
        admin = system.admin_headers()
        assert (
            client.post(
                "/v1/groups",
                headers=admin,
                json={"id": "oost", "name": "Oost", "area_ids": ["BU09710002"]},
            ).status_code
            == 201
        )
        assert (
            client.post(
                "/v1/groups/oost/members",
                headers=admin,
                json={"channel": "email", "address": "Lid@Example.org"},
            ).status_code
            == 201
        )
        alert_id = client.post(
            "/v1/reports",
            json={
                "text": "Verdachte auto",
                "location": {"lat": 50.97, "lon": 5.78},
                "called_112": False,
            },
        ).json()["alert_id"]
        entries = wait_for(
            lambda: outbox(client, system), lambda es: any(e["alert_id"] == alert_id for e in es)
        )
        assert [e["address"] for e in entries if e["alert_id"] == alert_id] == ["lid@example.org"]


def test_report_outside_every_group_gets_one_recorded_outcome(system: System) -> None:
    system.start_all()
    with system.client() as client:
        accepted = client.post(
            "/v1/reports",
            json={"text": "Rook gezien", "location": {"lat": 53.0, "lon": 6.5}, "called_112": True},
        ).json()
        assert accepted["covered"] is False  # the reporter is told nobody will hear it
        alert_id = accepted["alert_id"]
        outcomes = wait_for(
            lambda: client.get(
                f"/v1/alerts/{alert_id}/outcomes", headers=system.admin_headers()
            ).json(),
            lambda os_: len(os_) > 0,
        )
        assert [o["outcome"] for o in outcomes] == ["no_recipients"]
        metrics = client.get("/metrics").text
        assert 'ingest_reports_uncovered_total{channel="web"} 1.0' in metrics
