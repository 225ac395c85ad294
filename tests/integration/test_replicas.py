"""Every service as two replicas at once: they share the work, and nobody gets a message twice.

Two edges take reports, two routers share the durable consumer, two notifiers fan out and
deliver against the same provider stubs (which enforce the providers' limits). The budgets and
idempotency markers live in Redis, so two notifiers together stay within each limit and send
each (alert, person) once.
"""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from tests.integration.test_delivery import (
    ELSEWHERE,
    _sample,
    add_members,
    address,
    delivering,  # noqa: F401  (fixture)
    notice,
    outcomes,
    reach,
    received_for,
    stubs,  # noqa: F401  (fixture)
)
from tests.integration.test_end_to_end import wait_for
from tests.providers import RemoteStubs
from tests.servers import System

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

EERSEL = {"lat": 51.36, "lon": 5.315}
REPORTS = 40
SMALL_GROUP_CHANNELS = ("sms", "whatsapp", "email")


def counter_total(metrics: str, name: str) -> float:
    """Sum of every sample of one counter in a Prometheus text exposition."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def test_two_replicas_of_every_service_deliver_each_message_once(
    delivering: System,  # noqa: F811
    stubs: RemoteStubs,  # noqa: F811
) -> None:
    system = delivering
    edges = [system.url("ingest"), system.start_replica("ingest", 2)]
    routers = [system.url("router"), system.start_replica("router", 2)]
    notifiers = [system.url("notifier"), system.start_replica("notifier", 2)]
    client, admin = system.client(), system.admin_headers()
    members = add_members(client, admin, per_channel=100)  # Stein: 400 people on 4 channels
    assert client.post(
        "/v1/groups", headers=admin, json={"id": "eersel", "name": "Eersel", "geometry": ELSEWHERE}
    ).status_code == 201
    for i, channel in enumerate(SMALL_GROUP_CHANNELS):
        resp = client.post("/v1/groups/eersel/members", headers=admin, json={
            "channel": channel, "address": address(channel, 900_000 + i)})
        assert resp.status_code == 201, resp.text

    alert_id = notice(client, system, "Vermist: jongen (9), rode jas")
    report_ids = []
    for i in range(REPORTS):  # through both edges in turn
        with httpx.Client(base_url=edges[i % 2], timeout=10) as edge:
            resp = edge.post("/v1/reports", json={
                "text": f"Verdachte bus {i} bij de kerk", "location": EERSEL, "called_112": True})
        assert resp.status_code == 202, resp.text
        report_ids.append(resp.json()["alert_id"])

    wait_for(lambda: reach(client, system, alert_id),
             lambda r: r.get("pending") == 0 and r.get("planned") == 400, timeout_s=120)
    for rid in report_ids:
        wait_for(lambda rid=rid: reach(client, system, rid),
                 lambda r: r.get("pending") == 0 and r.get("planned") == 3, timeout_s=60)

    got = received_for(stubs, "jongen (9)")
    assert len(got) == 400
    assert set(got.values()) == {1}, "someone got the notice twice"
    recorded = outcomes(client, system, alert_id)
    assert {o["member_id"] for o in recorded} == set(members)
    assert Counter(o["outcome"] for o in recorded) == {"delivered": 400}
    for i, rid in enumerate(report_ids):
        per_person = received_for(stubs, f"Verdachte bus {i} bij")
        assert sorted(c for c, _ in per_person) == sorted(SMALL_GROUP_CHANNELS), (i, per_person)
        assert set(per_person.values()) == {1}, (i, per_person)
        assert [o["outcome"] for o in outcomes(client, system, rid)] == ["delivered"] * 3
    assert stubs.summary()["duplicate_deliveries"] == {}
    assert sum(stubs.violations().values()) == 0, stubs.violations()

    # The work was shared: each notifier delivered part of it, the routers together routed
    # every alert once.
    delivered = [
        counter_total(httpx.get(f"{url}/metrics").text, "notifier_deliveries_total")
        for url in notifiers
    ]
    routed = [
        counter_total(httpx.get(f"{url}/metrics").text, "router_alerts_total") for url in routers
    ]
    accepted = [
        _sample(httpx.get(f"{url}/metrics").text,
                'ingest_alerts_accepted_total{channel="web",kind="report"}')
        for url in edges
    ]
    print(f"replicas: delivered {delivered}, routed {routed}, accepted reports {accepted}")
    assert all(n > 0 for n in delivered), delivered
    assert sum(delivered) == 400 + 3 * REPORTS
    assert sum(routed) == 1 + REPORTS
    assert accepted == [REPORTS / 2, REPORTS / 2]

    # SIGTERM stops every replica cleanly (its last words logged), not by the kill that
    # follows a stop that hangs.
    system.stop_all()
    for name in ("ingest", "router", "notifier"):
        for log_path in (system.log_path(name), system.workdir / f"{name}-2.log"):
            text = log_path.read_text(encoding="utf-8", errors="replace")
            assert f'"msg": "{name} stopped"' in text, f"{log_path.name} did not stop cleanly"
