"""A poison message is parked on the dead-letter subject and counted; the flow goes on."""

from __future__ import annotations

import httpx
import nats
import pytest

from buurtalert.embedded import free_port
from shared import subjects
from shared.schemas import DeliveryJobs, DeliveryRequested, delivery_id, utcnow
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


async def test_poison_delivery_job_goes_to_dead_letter_and_jobs_go_on(system: System) -> None:
    # A configured SMS provider gives the notifier its delivery queue; this one is never
    # reached (the port is closed): the good job after the poison one records a transient
    # failure, proving the worker went on past the poison.
    system.extra_env.update(
        {
            "TWILIO_API_BASE": f"http://127.0.0.1:{free_port()}",
            "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
            "TWILIO_AUTH_TOKEN": "token",
            "TWILIO_FROM_NUMBER": "+3197010000001",
            "BUURTALERT_MAX_SEND_ATTEMPTS": "1",
        }
    )
    system.start_all()
    poison = b'{"schema_version": 1, "jobs": [{"recipient": "sms:x"}]}'
    good = DeliveryJobs(
        jobs=[
            DeliveryRequested(
                delivery_id=delivery_id("dl-1", "sms:k"),
                alert_id="dl-1",
                recipient="sms:k",
                channel="sms",
                address="+31612345678",
                text="test",
                priority="resident",
                accepted_at=utcnow(),
                requested_at=utcnow(),
            )
        ]
    )
    nc = await nats.connect(system.nats.url)
    try:
        js = nc.jetstream()
        dead = await js.subscribe(subjects.dead_letter("notifier"), stream="ALERTS")
        queue = subjects.deliver("sms", "resident")
        await js.publish(queue, poison, headers={subjects.MSG_ID_HEADER: "p-1"}, stream="ALERTS")
        await js.publish(
            queue,
            good.model_dump_json().encode(),
            headers={subjects.MSG_ID_HEADER: "g-1"},
            stream="ALERTS",
        )
        parked = await dead.next_msg(timeout=20)
        assert parked.data == poison
        assert parked.headers is not None
        assert parked.headers["Buurtalert-Reason"] == "permanent"
    finally:
        await nc.drain()
    with system.client() as client:
        recorded = wait_for(
            lambda: client.get("/v1/alerts/dl-1/outcomes", headers=system.admin_headers()),
            lambda r: r.status_code == 200 and len(r.json()) == 1,
        ).json()
    assert recorded[0]["outcome"] == "failed_transient"
    async with httpx.AsyncClient(timeout=5) as http:
        metrics = (await http.get(f"{system.url('notifier')}/metrics")).text
    assert 'notifier_deliveries_total{channel="sms",outcome="poison"} 1.0' in metrics
