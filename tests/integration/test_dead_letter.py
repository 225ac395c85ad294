"""A poison message is parked on the dead-letter subject and counted; the flow goes on."""

from __future__ import annotations

import httpx
import nats
import pytest

from shared import subjects
from tests.integration.test_end_to_end import SQUARE, STEIN, outbox, wait_for
from tests.servers import System

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_poison_message_goes_to_dead_letter_and_flow_continues(system: System) -> None:
    system.start_all()
    nc = await nats.connect(system.nats.url)
    try:
        js = nc.jetstream()
        dead = await js.subscribe(subjects.dead_letter("router"), stream="ALERTS")
        await js.publish(subjects.received("web"), b'{"not": "an alert"}',
                         headers={subjects.MSG_ID_HEADER: "poison-1"}, stream="ALERTS")
        parked = await dead.next_msg(timeout=20)
        assert parked.data == b'{"not": "an alert"}'
        assert parked.headers is not None
        assert parked.headers["Buurtalert-Reason"] == "permanent"
    finally:
        await nc.drain()

    async with httpx.AsyncClient(timeout=5) as http:
        metrics = (await http.get(f"{system.url('router')}/metrics")).text
    assert 'router_dead_letters_total{reason="permanent"} 1.0' in metrics

    with system.client() as client:
        admin = system.admin_headers()
        assert client.post("/v1/groups", headers=admin, json={
            "id": "g", "name": "g", "geometry": SQUARE}).status_code == 201
        assert client.post("/v1/groups/g/members", headers=admin, json={
            "channel": "sms", "address": "0612345678"}).status_code == 201
        alert_id = client.post("/v1/reports", json={
            "text": "Na de rommel", "location": STEIN, "called_112": True}).json()["alert_id"]
        wait_for(lambda: outbox(client, system),
                 lambda es: any(e["alert_id"] == alert_id for e in es))
