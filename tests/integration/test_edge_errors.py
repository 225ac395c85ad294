"""The edge's answers to bad input, missing keys and a missing JetStream: 4xx/503, never 500."""

from __future__ import annotations

import pytest

from tests.servers import System

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_bad_input_is_named_and_counted(system: System) -> None:
    system.start("ingest")
    with system.client() as client:
        admin = system.admin_headers()
        cases = [
            (client.post("/v1/reports", content=b"{not json",
                         headers={"Content-Type": "application/json"}), 422),
            (client.post("/v1/reports", json={"text": "x", "location": {"lat": 95, "lon": 5},
                                              "called_112": True}), 422),
            (client.post("/v1/reports", json={"text": "x", "location": {"lat": 51, "lon": 5}}),
             422),
            (client.post("/v1/groups", json={"id": "g", "name": "g", "area_ids": ["x"]}), 401),
            (client.post("/v1/groups", headers={"Authorization": "Bearer wrong"},
                         json={"id": "g", "name": "g", "area_ids": ["x"]}), 401),
            (client.post("/v1/groups",
                         headers={"Authorization": f"Bearer {system.dispatch_key}"},
                         json={"id": "g", "name": "g", "area_ids": ["x"]}), 403),
            (client.post("/v1/groups", headers=admin,
                         json={"id": "g", "name": "g", "area_ids": ["BU-nope"]}), 422),
            (client.post("/v1/groups", headers=admin, json={"id": "g", "name": "g"}), 422),
            (client.post("/v1/groups", headers=admin, json={
                "id": "g", "name": "g", "geometry": {"type": "Point", "coordinates": [5, 51]}}),
             422),
            (client.post("/v1/groups/none/members", headers=admin,
                         json={"channel": "sms", "address": "0612345678"}), 404),
            (client.get("/v1/areas/BU-unknown"), 404),
        ]
        for resp, expected in cases:
            assert resp.status_code == expected, (resp.request.url, resp.text)
            assert "detail" in resp.json()
        assert "BU-nope" in cases[6][0].json()["detail"]
        assert client.post("/v1/groups", headers=admin, json={
            "id": "g", "name": "g", "geometry": {"type": "Polygon", "coordinates": [
                [[5, 51], [5.1, 51], [5.1, 51.1], [5, 51.1], [5, 51]]]}}).status_code == 201
        bad_phone = client.post("/v1/groups/g/members", headers=admin,
                                json={"channel": "sms", "address": "bel me"})
        assert bad_phone.status_code == 422
        assert "phone" in bad_phone.json()["detail"]
        metrics = client.get("/metrics").text
        assert 'ingest_rejected_total{endpoint="/v1/reports",reason="invalid"} 3.0' in metrics


def test_no_jetstream_means_503_not_202(system: System) -> None:
    system.start("ingest")
    system.nats.stop()
    with system.client() as client:
        resp = client.post("/v1/reports", json={
            "text": "x", "location": {"lat": 51, "lon": 5}, "called_112": True})
        assert resp.status_code == 503
        assert "retry" in resp.json()["detail"]
    system.nats.start()


def test_abusive_source_and_sender_get_429_with_retry_after(system: System) -> None:
    system.extra_env.update({
        "BUURTALERT_SOURCE_REQUESTS_PER_MINUTE": "3", "BUURTALERT_SOURCE_BURST": "3",
    })
    system.start("ingest")
    with system.client() as client:
        report = {"text": "x", "location": {"lat": 51, "lon": 5}, "called_112": True}
        codes = [client.post("/v1/reports", json=report).status_code for _ in range(5)]
        assert codes[:3] == [202, 202, 202]
        assert codes[3:] == [429, 429]
        last = client.post("/v1/reports", json=report)
        assert int(last.headers["Retry-After"]) >= 1
        assert "112" in last.json()["detail"]
        assert ('ingest_rejected_total{endpoint="/v1/reports",reason="rate_limited"} 3.0'
                in client.get("/metrics").text)


async def test_a_burst_of_reports_is_all_accepted_never_500(system: System) -> None:
    import asyncio

    import httpx

    system.start("ingest")
    report = {"text": "drukte", "location": {"lat": 51, "lon": 5}, "called_112": True}
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
    async with httpx.AsyncClient(base_url=system.url("ingest"), timeout=30,
                                 limits=limits) as client:
        answers = await asyncio.gather(*(client.post("/v1/reports", json=report)
                                         for _ in range(300)))
    codes = sorted({a.status_code for a in answers})
    assert codes == [202], [a.text for a in answers if a.status_code != 202][:3]
