"""Group admins: keys scoped to one group, held messages per group, member rules enforced."""

from __future__ import annotations

import json

import httpx
import pytest
import redis

from tests.integration.test_end_to_end import SQUARE, STEIN, wait_for
from tests.servers import System

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ELSEWHERE = {  # a square in Eersel, far from Stein
    "type": "Polygon",
    "coordinates": [[[5.30, 51.35], [5.33, 51.35], [5.33, 51.37], [5.30, 51.37], [5.30, 51.35]]],
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def two_groups(system: System) -> httpx.Client:
    system.start_all()
    client = system.client()
    admin = system.admin_headers()
    for gid, shape in (("stein", SQUARE), ("eersel", ELSEWHERE)):
        assert client.post("/v1/groups", headers=admin, json={
            "id": gid, "name": gid, "geometry": shape}).status_code == 201
    return client


def test_group_admin_sees_and_moderates_only_their_own_group(
    system: System, two_groups: httpx.Client
) -> None:
    client, admin = two_groups, system.admin_headers()
    stein_key = client.post("/v1/groups/stein/admin-keys", headers=admin).json()["key"]
    eersel_key = client.post("/v1/groups/eersel/admin-keys", headers=admin).json()["key"]
    assert client.post("/v1/groups/stein/admin-keys",
                       headers=bearer(stein_key)).status_code == 403  # only admins issue keys

    report = client.post("/v1/reports", json={
        "text": "Goedemorgen allemaal", "location": {"lat": STEIN["lat"], "lon": STEIN["lon"]},
        "called_112": False})
    assert report.status_code == 202
    alert_id = report.json()["alert_id"]
    held = wait_for(lambda: client.get("/v1/held", headers=bearer(stein_key)).json(),
                    lambda hs: len(hs) == 1)
    assert held[0]["alert_id"] == alert_id
    assert held[0]["group_ids"] == ["stein"]
    assert client.get("/v1/held", headers=bearer(eersel_key)).json() == []
    assert len(client.get("/v1/held", headers=admin).json()) == 1
    assert client.get("/v1/held", headers=admin, params={"group_id": "eersel"}).json() == []

    # Another group's admin cannot release or reject it, nor manage this group's members.
    assert client.post(f"/v1/held/{alert_id}/release",
                       headers=bearer(eersel_key)).status_code == 404
    assert client.delete(f"/v1/held/{alert_id}", headers=bearer(eersel_key)).status_code == 404
    assert client.post("/v1/groups/stein/members", headers=bearer(eersel_key), json={
        "channel": "sms", "address": "+31612345678"}).status_code == 403
    added = client.post("/v1/groups/stein/members", headers=bearer(stein_key), json={
        "channel": "sms", "address": "+31612345678"})
    assert added.status_code == 201
    assert client.post(f"/v1/held/{alert_id}/release",
                       headers=bearer(stein_key)).status_code == 202
    assert client.get("/v1/held", headers=bearer(stein_key)).json() == []

    # Revoked keys stop working at once; an unknown key is 401, a dispatch key 403.
    assert client.request("DELETE", "/v1/groups/stein/admin-keys",
                          headers=admin).json() == {"revoked": 1}
    assert client.get("/v1/held", headers=bearer(stein_key)).status_code == 401
    dispatch = {"Authorization": f"Bearer {system.dispatch_key}"}
    assert client.get("/v1/held", headers=dispatch).status_code == 403


def test_member_rules_age_and_residency(system: System, two_groups: httpx.Client) -> None:
    client, admin = two_groups, system.admin_headers()
    assert client.post("/v1/groups", headers=admin, json={
        "id": "stein21", "name": "Stein 21+", "geometry": SQUARE, "min_age": 21,
        "residency_required": True}).status_code == 201
    member = {"channel": "sms", "address": "+31612345679"}
    home_in = {"lat": STEIN["lat"], "lon": STEIN["lon"]}

    def add(**extra: object) -> httpx.Response:
        return client.post("/v1/groups/stein21/members", headers=admin, json=member | extra)

    assert "birth_date is required" in add(home=home_in).json()["detail"]
    too_young = add(birth_date="2010-01-01", home=home_in)
    assert too_young.status_code == 422
    assert "aged 21 and over" in too_young.json()["detail"]
    assert "home or postcode" in add(birth_date="1980-01-01").json()["detail"]
    outside = add(birth_date="1980-01-01", home={"lat": 51.36, "lon": 5.31})
    assert outside.status_code == 422
    assert "outside the area" in outside.json()["detail"]
    unknown_pc = add(birth_date="1980-01-01", postcode="9999ZZ")
    assert unknown_pc.status_code == 422
    assert "gazetteer" in unknown_pc.json()["detail"]
    ok = add(birth_date="1980-01-01", home=home_in)
    assert ok.status_code == 201, ok.text
    assert ok.json()["checked"] == ["min_age:21", "residency"]
    # The birth date and home were checked, not stored.
    stored = redis.Redis.from_url(system.redis_url).hgetall("ba:group:stein21:members")
    assert len(stored) == 1
    raw = next(iter(stored.values()))
    body = raw.decode() if isinstance(raw, bytes) else str(raw)
    stored_member = json.loads(body)
    # Not the date in any field (a random member id may well contain "1980" as hex digits).
    assert "1980-01-01" not in body
    assert "birth_date" not in stored_member
    assert "home" not in stored_member
    assert str(home_in["lat"]) not in body
    assert '"checked":["min_age:21","residency"]' in body
