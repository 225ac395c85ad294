"""Reports close in place and time are one incident: the first goes out, then updates."""

from __future__ import annotations

import time

import pytest
from redis.asyncio import Redis

from shared.incident_topics import Topic
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


# Two places about 100 m apart in Stein, well inside SQUARE and the 300 m radius.
HERE = (5.7667, 50.9697)
THERE = (5.76813, 50.9697)


async def test_only_reports_about_the_same_thing_share_an_incident(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    book = IncidentBook(redis, radius_m=300, window_s=1800, update_every_s=300)
    t0 = 1_000_000.0
    fire = await book.correlate("f1", *HERE, "Brand in de schuur, veel rook", now=t0)
    burglary = await book.correlate("b1", *THERE, "Inbraak bij nummer 14", now=t0 + 10)
    assert burglary.incident_id != fire.incident_id  # 100 m apart, but not the same thing
    assert (burglary.count, burglary.send) == (1, True)
    smoke = await book.correlate("f2", *THERE, "zie nu ook rook bij nummer 12", now=t0 + 20)
    # Nearest is the burglary; the fire a little further is the one it is about.
    assert (smoke.incident_id, smoke.count, smoke.send) == (fire.incident_id, 2, False)
    again = await book.correlate("f2", *THERE, "zie nu ook rook bij nummer 12", now=t0 + 21)
    assert (again.incident_id, again.count) == (fire.incident_id, 2)  # redelivery: once
    follow_up = await book.correlate("b2", *THERE, "hij rent richting het park", now=t0 + 30)
    assert (follow_up.incident_id, follow_up.count) == (burglary.incident_id, 2)  # nearest
    topics = [await redis.hget(f"ba:incident:{c.incident_id}", "topic") for c in (fire, burglary)]
    assert topics == [b"fire", b"burglary"]
    await redis.aclose()


async def test_an_incident_without_a_topic_takes_the_first_that_joins(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    book = IncidentBook(redis, radius_m=300, window_s=1800, update_every_s=300)
    t0 = 1_000_000.0
    first = await book.correlate("u1", *HERE, "Rare situatie bij de kerk", now=t0)
    other = await book.correlate("u2", *HERE, "Stroomstoring in de hele wijk", now=t0 + 5)
    assert other.incident_id != first.incident_id  # no topic either, no words in common
    same = await book.correlate("u3", *HERE, "Situatie bij de kerk lijkt rustig", now=t0 + 6)
    assert same.incident_id == first.incident_id  # no topic either, words in common
    joined = await book.correlate("v1", *HERE, "Verdachte man bij de kerk", now=t0 + 10)
    assert joined.incident_id in (first.incident_id, other.incident_id)  # nearest, no topic
    key = f"ba:incident:{joined.incident_id}"
    assert await redis.hmget(key, ["topic", "text"]) == [
        b"suspicious_person",
        b"Verdachte man bij de kerk",
    ]
    fire = await book.correlate("f1", *HERE, "Rook uit de kerk", now=t0 + 20)
    assert fire.incident_id != joined.incident_id  # it has a topic now, and another one
    assert fire.incident_id in (first.incident_id, other.incident_id)  # the one without
    await redis.aclose()


class _Raced(IncidentBook):
    """An incident book that another replica overtakes between looking and joining."""

    async def _nearby_open(
        self, lon: float, lat: float, kind: Topic, text: str, now: float, skip: set[str]
    ) -> str | None:
        found = await super()._nearby_open(lon, lat, kind, text, now, skip)
        if found is not None:
            # Meanwhile another replica's burglary report joined it and gave it its topic.
            await self.redis.hset(f"ba:incident:{found}", "topic", "burglary")
        return found


async def test_a_join_is_checked_again_in_redis(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    book = IncidentBook(redis, radius_m=300, window_s=1800, update_every_s=300)
    t0 = 1_000_000.0
    open_ = await book.correlate("u1", *HERE, "Rare situatie bij de kerk", now=t0)
    raced = _Raced(redis, radius_m=300, window_s=1800, update_every_s=300)
    fire = await raced.correlate("f1", *HERE, "Rook uit de kerk", now=t0 + 10)
    assert fire.incident_id != open_.incident_id  # refused there; opened its own
    assert (fire.count, fire.send) == (1, True)
    assert await redis.smembers(f"ba:incident:{open_.incident_id}:alerts") == {b"u1"}
    assert await redis.hget(f"ba:incident:{fire.incident_id}", "topic") == b"fire"
    again = await book.correlate("f1", *HERE, "Rook uit de kerk", now=t0 + 11)
    assert (again.incident_id, again.count) == (fire.incident_id, 1)  # redelivery: the same
    await redis.aclose()


def test_members_get_the_first_report_then_an_update_not_one_per_reporter(
    system: System,
) -> None:
    system.extra_env.update(
        {"BUURTALERT_INCIDENT_RADIUS_M": "300", "BUURTALERT_INCIDENT_UPDATE_EVERY_S": "3"}
    )
    system.start_all()
    with system.client() as client:
        admin = system.admin_headers()
        assert (
            client.post(
                "/v1/groups", headers=admin, json={"id": "g", "name": "g", "geometry": SQUARE}
            ).status_code
            == 201
        )
        assert (
            client.post(
                "/v1/groups/g/members",
                headers=admin,
                json={"channel": "sms", "address": "0612345678"},
            ).status_code
            == 201
        )
        ids = []
        for i in range(3):  # three neighbours report the same thing within a second
            ids.append(
                client.post(
                    "/v1/reports",
                    json={
                        "text": f"Rookwolk boven de loods ({i})",
                        "location": STEIN,
                        "called_112": True,
                    },
                ).json()["alert_id"]
            )
        wait_for(
            lambda: [client.get(f"/v1/alerts/{a}/outcomes", headers=admin).json() for a in ids],
            lambda os_: all(os_),
        )
        outcomes = [
            client.get(f"/v1/alerts/{a}/outcomes", headers=admin).json()[0]["outcome"] for a in ids
        ]
        assert outcomes == ["delivered", "merged", "merged"]
        time.sleep(3.5)
        fourth = client.post(
            "/v1/reports",
            json={"text": "Brandweer is er nu", "location": STEIN, "called_112": True},
        ).json()
        entries = wait_for(
            lambda: outbox(client, system),
            lambda es: any(e["alert_id"] == fourth["alert_id"] for e in es),
        )
        texts = [e["text"] for e in entries]
        assert len(texts) == 2
        assert texts[0].startswith("Update (4 meldingen): Brandweer is er nu")
        assert texts[1].startswith("Melding uit de buurt: Rookwolk boven de loods (0)")


def test_a_fire_and_a_burglary_next_door_are_two_incidents(system: System) -> None:
    system.extra_env.update(
        {"BUURTALERT_INCIDENT_RADIUS_M": "300", "BUURTALERT_INCIDENT_UPDATE_EVERY_S": "6"}
    )
    system.start_all()
    with system.client() as client:
        admin = system.admin_headers()
        assert (
            client.post(
                "/v1/groups", headers=admin, json={"id": "g", "name": "g", "geometry": SQUARE}
            ).status_code
            == 201
        )
        assert (
            client.post(
                "/v1/groups/g/members",
                headers=admin,
                json={"channel": "sms", "address": "0612345678"},
            ).status_code
            == 201
        )

        def report(text: str, lon: float) -> str:
            resp = client.post(
                "/v1/reports",
                json={
                    "text": text,
                    "location": {"lat": STEIN["lat"], "lon": lon},
                    "called_112": True,
                },
            )
            assert resp.status_code == 202, resp.text
            alert_id: str = resp.json()["alert_id"]
            return alert_id

        def outcomes(ids: list[str]) -> list[str]:
            found = [client.get(f"/v1/alerts/{a}/outcomes", headers=admin).json() for a in ids]
            return [o[0]["outcome"] if o else "" for o in found]

        started = time.monotonic()
        fire = report("Brand in de schuur achter de school, veel rook", STEIN["lon"])
        wait_for(lambda: outcomes([fire]), all)  # the fire incident is open before the rest
        # 100 m east: a burglary (another incident), and more smoke (the fire incident).
        burglary = report("Inbraak bij nummer 14, deur geforceerd", STEIN["lon"] + 0.00143)
        smoke = report("zie nu ook rook bij nummer 12", STEIN["lon"] + 0.00143)
        assert wait_for(lambda: outcomes([fire, burglary, smoke]), all) == [
            "delivered",
            "delivered",
            "merged",
        ]
        texts = [e["text"] for e in outbox(client, system)]
        assert len(texts) == 2  # two incidents, two messages
        assert any(t.startswith("Melding uit de buurt: Brand in de schuur") for t in texts)
        assert any(t.startswith("Melding uit de buurt: Inbraak bij nummer 14") for t in texts)
        # Past the update interval, more news of the fire: three reports of it, not four.
        time.sleep(max(0.0, 6.5 - (time.monotonic() - started)))
        later = report("Vlammen slaan nu uit het dak", STEIN["lon"])
        entries = wait_for(
            lambda: outbox(client, system), lambda es: any(e["alert_id"] == later for e in es)
        )
        assert len(entries) == 3
        assert entries[0]["text"].startswith("Update (3 meldingen): Vlammen slaan nu uit het dak")
