"""Reports close in place and time are one incident: the first goes out, then updates."""

from __future__ import annotations

import time

import pytest
from redis.asyncio import Redis

from shared.incidents import IncidentBook
from tests.integration.test_end_to_end import SQUARE, STEIN, outbox, wait_for
from tests.servers import System

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_incident_book_on_real_redis(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    book = IncidentBook(redis, radius_m=300, window_s=1800, update_every_s=300)
    t0 = 1_000_000.0
    first = await book.correlate("a1", 5.7667, 50.9697, now=t0)
    assert (first.count, first.send) == (1, True)
    near = await book.correlate("a2", 5.7680, 50.9700, now=t0 + 60)  # ~100 m, a minute later
    assert (near.incident_id, near.count, near.send) == (first.incident_id, 2, False)
    again = await book.correlate("a2", 5.7680, 50.9700, now=t0 + 61)  # a redelivery
    assert (again.count, again.send) == (2, False)
    later = await book.correlate("a3", 5.7667, 50.9697, now=t0 + 400)  # past the interval
    assert (later.incident_id, later.count, later.send) == (first.incident_id, 3, True)
    far = await book.correlate("b1", 5.80, 50.99, now=t0 + 401)  # ~3 km away
    assert far.incident_id != first.incident_id
    stale = await book.correlate("c1", 5.7667, 50.9697, now=t0 + 400 + 1801)  # window over
    assert stale.incident_id != first.incident_id
    await redis.aclose()


def test_members_get_the_first_report_then_an_update_not_one_per_reporter(
    system: System,
) -> None:
    system.extra_env.update({"BUURTALERT_INCIDENT_RADIUS_M": "300",
                             "BUURTALERT_INCIDENT_UPDATE_EVERY_S": "3"})
    system.start_all()
    with system.client() as client:
        admin = system.admin_headers()
        assert client.post("/v1/groups", headers=admin, json={
            "id": "g", "name": "g", "geometry": SQUARE}).status_code == 201
        assert client.post("/v1/groups/g/members", headers=admin, json={
            "channel": "sms", "address": "0612345678"}).status_code == 201
        ids = []
        for i in range(3):  # three neighbours report the same thing within a second
            ids.append(client.post("/v1/reports", json={
                "text": f"Rookwolk boven de loods ({i})", "location": STEIN,
                "called_112": True}).json()["alert_id"])
        wait_for(lambda: [client.get(f"/v1/alerts/{a}/outcomes", headers=admin).json()
                          for a in ids], lambda os_: all(os_))
        outcomes = [client.get(f"/v1/alerts/{a}/outcomes", headers=admin).json()[0]["outcome"]
                    for a in ids]
        assert outcomes == ["delivered", "merged", "merged"]
        time.sleep(3.5)
        fourth = client.post("/v1/reports", json={
            "text": "Brandweer is er nu", "location": STEIN, "called_112": True}).json()
        entries = wait_for(lambda: outbox(client, system),
                           lambda es: any(e["alert_id"] == fourth["alert_id"] for e in es))
        texts = [e["text"] for e in entries]
        assert len(texts) == 2
        assert texts[0].startswith("Update (4 meldingen): Brandweer is er nu")
        assert texts[1].startswith("Melding uit de buurt: Rookwolk boven de loods (0)")
