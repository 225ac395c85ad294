"""One alert's id follows it through the JSON logs of all three services, and nothing personal
is logged on the way."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_end_to_end import SQUARE, STEIN, outbox, wait_for
from tests.servers import System

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PHONE_LOCAL = "06 23456789"
PHONE_E164 = "+31623456789"


def records(path: Path) -> list[dict[str, Any]]:
    """The JSON records of one service log (other lines, if any, are left out)."""
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_correlation_id_follows_an_alert_through_all_services(system: System) -> None:
    system.start_all()
    canary = f"Verdachte auto canary-{uuid.uuid4().hex[:12]} bij de school"
    with system.client() as client:
        admin = system.admin_headers()
        assert (
            client.post(
                "/v1/groups",
                headers=admin,
                json={"id": "stein-logs", "name": "Stein (logs)", "geometry": SQUARE},
            ).status_code
            == 201
        )
        assert (
            client.post(
                "/v1/groups/stein-logs/members",
                headers=admin,
                json={"channel": "sms", "address": PHONE_LOCAL},
            ).status_code
            == 201
        )
        accepted = client.post(
            "/v1/reports", json={"text": canary, "location": STEIN, "called_112": False}
        )
        assert accepted.status_code == 202, accepted.text
        alert_id = accepted.json()["alert_id"]
        wait_for(
            lambda: outbox(client, system), lambda es: any(e["alert_id"] == alert_id for e in es)
        )

    system.stop_all()  # flushes every log
    seen: dict[str, list[str]] = {}
    for name in ("ingest", "router", "notifier"):
        mine = [r for r in records(system.log_path(name)) if r.get("correlation_id") == alert_id]
        seen[name] = [r["msg"] for r in mine]
        assert mine, f"{name} logged nothing with correlation_id {alert_id}"
        assert all(r["service"] == name for r in mine)
        assert any(r["level"] == "info" for r in mine), f"{name}: {seen[name]}"
        text = system.log_path(name).read_text(encoding="utf-8", errors="replace")
        assert canary not in text, f"{name} logged the report's text"
        assert PHONE_E164 not in text, f"{name} logged the number"
        assert "623456789" not in text, f"{name} logged the number"
        assert system.admin_key not in text, f"{name} logged the admin key"
    assert "accepted alert" in seen["ingest"]
    assert "routed alert" in seen["router"]
    assert "fanned out alert" in seen["notifier"]
