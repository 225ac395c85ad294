"""SIGKILL the router while alerts flow: every accepted alert is delivered exactly once."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from tests.integration.test_end_to_end import SQUARE, STEIN, outbox, wait_for
from tests.servers import System

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ALERTS = 300
MEMBERS = ["+31612345671", "+31612345672", "+31612345673"]


@pytest.mark.parametrize("victim", ["router", "notifier"])
def test_kill_while_alerts_flow_delivers_each_alert_once(system: System, victim: str) -> None:
    system.start_all()
    client = system.client()
    admin = system.admin_headers()
    assert (
        client.post(
            "/v1/groups", headers=admin, json={"id": "g", "name": "Stein", "geometry": SQUARE}
        ).status_code
        == 201
    )
    for number in MEMBERS:
        assert (
            client.post(
                "/v1/groups/g/members", headers=admin, json={"channel": "sms", "address": number}
            ).status_code
            == 201
        )

    accepted: list[str] = []
    refused: list[int] = []

    def post_alerts() -> None:
        with system.client() as poster:
            for i in range(ALERTS):
                resp = poster.post(
                    "/v1/reports",
                    json={"text": f"melding {i}", "location": STEIN, "called_112": True},
                )
                if resp.status_code == 202:
                    accepted.append(resp.json()["alert_id"])
                else:
                    refused.append(resp.status_code)
                time.sleep(0.005)

    poster = threading.Thread(target=post_alerts)
    poster.start()
    wait_for(lambda: len(accepted), lambda n: n >= ALERTS // 4, timeout_s=60)
    system.kill(victim)
    wait_for(lambda: len(accepted), lambda n: n >= ALERTS // 2, timeout_s=60)
    system.start(victim)
    poster.join(timeout=120)
    assert not poster.is_alive()
    assert refused == []
    assert len(accepted) == ALERTS

    expected = len(accepted) * len(MEMBERS)
    entries = wait_for(
        lambda: [e for e in outbox(client, system, limit=1000) if e["alert_id"] in set(accepted)],
        lambda es: len(es) >= expected,
        timeout_s=90,
    )
    per_person = Counter((e["alert_id"], e["recipient"]) for e in entries)
    duplicates = {k: v for k, v in per_person.items() if v > 1}
    assert duplicates == {}
    assert {a for a, _ in per_person} == set(accepted)
    assert len(per_person) == expected
    client.close()
