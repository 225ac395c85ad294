"""Retention and erasure against a real redis-server: what is old goes, a person who leaves goes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from redis.asyncio import Redis

from shared.addresses import recipient_key, whatsapp_session_key
from shared.held import HELD, hold, list_held, offences_key
from shared.outbox import OUTBOX
from shared.registry import Registry, memberships_key
from shared.retention import erase_person, min_stream_id, sweep
from shared.schemas import AlertReceived, GroupIn, Location, MemberIn
from tests.integration.test_end_to_end import SQUARE, STEIN, outbox, wait_for
from tests.servers import System

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

JOINS = "ba:join-requests"
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
WEEK_S = 7 * 24 * 3600.0
PHONE = "+31612345678"
OTHER = "+31687654321"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


def held_alert(alert_id: str, received_at: datetime, sender_ref: str) -> AlertReceived:
    return AlertReceived(
        alert_id=alert_id,
        channel="sms",
        kind="report",
        text="Iedereen opletten, die gasten weer",
        location=Location(lat=STEIN["lat"], lon=STEIN["lon"]),
        called_112=False,
        received_at=received_at,
        sender_ref=sender_ref,
    )


async def add_entry(redis: Redis, stream: str, at: datetime, fields: dict[str, str]) -> None:
    await redis.xadd(stream, fields, id=f"{int(at.timestamp() * 1000)}-0")  # type: ignore[arg-type]


async def fields_of(redis: Redis, stream: str) -> list[dict[str, str]]:
    rows = await redis.xrange(stream) or []
    return [{str(k): str(v) for k, v in (f or {}).items()} for _, f in rows]


def outbox_fields(address: str) -> dict[str, str]:
    return {"entry": json.dumps({"channel": "sms", "address": address, "text": "Melding"})}


async def test_sweep_drops_what_outlived_the_retention_period(redis: Redis) -> None:
    old, recent = NOW - timedelta(days=8), NOW - timedelta(days=6)
    for at in (old, recent):
        await add_entry(redis, OUTBOX, at, outbox_fields(PHONE))
        await add_entry(redis, JOINS, at, {"channel": "sms", "address": PHONE, "place": "Stein"})
    await hold(redis, held_alert("a-old", old, "sms:aaa"), "chatter")
    await hold(redis, held_alert("a-new", recent, "sms:aaa"), "chatter")

    swept = await sweep(redis, now=NOW, keep_s=WEEK_S, streams=(OUTBOX, JOINS))

    assert swept.stream_entries == 2
    assert swept.held == 1
    assert await redis.xlen(OUTBOX) == 1
    assert await redis.xlen(JOINS) == 1
    assert [e["alert_id"] for e in await list_held(redis)] == ["a-new"]
    assert await redis.hlen(f"{HELD}:reasons") == 1
    # A second sweep finds nothing more: every edge may run it.
    again = await sweep(redis, now=NOW, keep_s=WEEK_S, streams=(OUTBOX, JOINS))
    assert (again.stream_entries, again.held) == (0, 0)


def test_min_stream_id_is_the_cutoff_in_ms() -> None:
    assert min_stream_id(NOW, 60) == f"{int(NOW.timestamp() * 1000) - 60_000}-0"
    assert min_stream_id(datetime(1970, 1, 1, tzinfo=UTC), 60) == "0-0"


async def test_erasing_a_person_leaves_everyone_else(redis: Redis) -> None:
    registry = Registry(redis)
    await registry.put_group(GroupIn(id="g1", name="Een", area_ids=["BU1"]))
    await registry.put_group(GroupIn(id="g2", name="Twee", area_ids=["BU2"]))
    for group_id in ("g1", "g2"):
        await registry.add_member(group_id, MemberIn(channel="sms", address=PHONE))
    other = await registry.add_member("g1", MemberIn(channel="sms", address=OTHER))
    for address in (PHONE, OTHER, PHONE):
        await redis.xadd(OUTBOX, outbox_fields(address))  # type: ignore[arg-type]
    await redis.xadd(JOINS, {"channel": "sms", "address": PHONE, "place": "6171AB"})
    await redis.xadd(JOINS, {"channel": "telegram", "address": PHONE, "place": "x"})
    await hold(redis, held_alert("h-mine", NOW, "sms:mine"), "chatter")
    await hold(redis, held_alert("h-other", NOW, "sms:other"), "chatter")
    rkey = recipient_key("sms", PHONE)
    await redis.set(whatsapp_session_key(rkey), "1")
    await redis.set(offences_key("sms:mine"), "2")

    erased = await erase_person(
        redis, registry, channel="sms", address=PHONE, sender_ref="sms:mine",
        streams=(OUTBOX, JOINS),
    )

    assert erased.memberships == 2
    assert erased.stream_entries == 3  # two outbox entries, one sms join request
    assert erased.held == 1
    assert [m.member_id for m in await registry.members("g1")] == [other.member_id]
    assert await registry.members("g2") == []
    assert not await redis.exists(memberships_key(rkey))
    left = [json.loads(f["entry"])["address"] for f in await fields_of(redis, OUTBOX)]
    assert left == [OTHER]
    assert [f["channel"] for f in await fields_of(redis, JOINS)] == ["telegram"]
    assert [e["alert_id"] for e in await list_held(redis)] == ["h-other"]
    assert not await redis.exists(whatsapp_session_key(rkey), offences_key("sms:mine"))


def test_admin_erasure_endpoint(system: System) -> None:
    system.start_all()
    with system.client() as client:
        admin = system.admin_headers()
        assert client.post("/v1/groups", headers=admin, json={
            "id": "stein-er", "name": "Stein", "geometry": SQUARE}).status_code == 201
        assert client.post("/v1/groups/stein-er/members", headers=admin, json={
            "channel": "sms", "address": "06 12345678"}).status_code == 201
        alert_id = client.post("/v1/reports", json={
            "text": "Voor het wissen", "location": STEIN, "called_112": True}).json()["alert_id"]
        wait_for(lambda: outbox(client, system), lambda es: any(
            e["alert_id"] == alert_id for e in es))

        body = {"channel": "sms", "address": "06 12345678"}
        assert client.post("/v1/erasure", json=body).status_code == 401
        dispatch = {"Authorization": f"Bearer {system.dispatch_key}"}
        assert client.post("/v1/erasure", json=body, headers=dispatch).status_code == 403
        bad = client.post("/v1/erasure", json={"channel": "sms", "address": "geen nummer"},
                          headers=admin)
        assert bad.status_code == 422
        assert "detail" in bad.json()
        done = client.post("/v1/erasure", json=body, headers=admin)
        assert done.status_code == 200, done.text
        assert done.json()["memberships"] == 1
        assert done.json()["stream_entries"] == 1
        assert [e for e in outbox(client, system) if e.get("address") == PHONE] == []
        # Nobody is left in the group to reach.
        after = client.post("/v1/reports", json={
            "text": "Na het wissen", "location": STEIN, "called_112": True}).json()["alert_id"]
        outcomes = wait_for(
            lambda: client.get(f"/v1/alerts/{after}/outcomes", headers=admin).json(),
            lambda os_: len(os_) == 1)
        assert [o["outcome"] for o in outcomes] == ["no_recipients"]
        metrics = httpx.get(f"{system.url('ingest')}/metrics", timeout=5).text
        assert "ingest_retention_removed_total" in metrics
