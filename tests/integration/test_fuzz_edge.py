"""Malformed bodies, headers and forms on every endpoint of the real edge: never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.servers import System

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ENDPOINTS = [
    ("POST", "/v1/reports"),
    ("POST", "/v1/notices"),
    ("POST", "/v1/groups"),
    ("POST", "/v1/groups/g/members"),
    ("DELETE", "/v1/groups/g/members/m"),
    ("GET", "/v1/areas/x"),
    ("GET", "/v1/outbox"),
    ("GET", "/v1/held"),
    ("POST", "/v1/held/x/release"),
    ("POST", "/v1/groups/g/admin-keys"),
    ("POST", "/webhooks/twilio/sms"),
    ("POST", "/webhooks/telegram"),
    ("GET", "/webhooks/whatsapp"),
    ("POST", "/webhooks/whatsapp"),
]
CONTENT_TYPES = ["application/json", "application/cap+xml", "application/xml",
                 "application/x-www-form-urlencoded", "text/plain", "multipart/form-data", ""]

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=5),
    max_leaves=20,
)
# Plausible keys make the fuzzer reach deeper than the first "missing field" answer.
KEYS = ["text", "location", "lat", "lon", "called_112", "category", "headline", "area",
        "circle", "radius_m", "id", "name", "area_ids", "geometry", "type", "coordinates",
        "channel", "address", "role", "update_id", "message", "chat", "entry", "object",
        "MessageSid", "AccountSid", "From", "To", "Body", "msg_type", "references", "expires",
        "birth_date", "home", "postcode", "min_age", "residency_required"]
structured = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[System, httpx.Client]]:
    from tests.servers import running_nats, running_redis

    workdir = tmp_path_factory.mktemp("fuzz")
    with running_nats(workdir) as nats, running_redis(workdir) as redis_url:
        system = System(workdir, nats, redis_url, extra_env={
            "TWILIO_AUTH_TOKEN": "t" * 32, "TELEGRAM_WEBHOOK_SECRET": "s" * 32,
            "WHATSAPP_APP_SECRET": "w" * 32, "WHATSAPP_VERIFY_TOKEN": "v" * 16,
        })
        system.start("ingest")
        with system.client() as client:
            yield system, client
        system.stop_all()


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    body=st.one_of(st.binary(max_size=300), structured.map(lambda d: _json(d)),
                   json_values.map(lambda v: _json(v))),
    content_type=st.sampled_from(CONTENT_TYPES),
    auth=st.sampled_from(["none", "admin", "dispatch", "junk"]),
    extra_headers=st.dictionaries(
        st.sampled_from(["X-Twilio-Signature", "X-Telegram-Bot-Api-Secret-Token",
                         "X-Hub-Signature-256", "Idempotency-Key"]),
        # HTTP itself forbids surrounding whitespace in a header value (the client refuses).
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(str.strip),
        max_size=3),
    query=st.dictionaries(st.sampled_from(["limit", "hub.mode", "hub.verify_token",
                                           "hub.challenge", "bbox"]),
                          st.text(max_size=20), max_size=3),
)
def test_no_input_yields_a_server_error(
    edge: tuple[System, httpx.Client], endpoint: tuple[str, str], body: bytes,
    content_type: str, auth: str, extra_headers: dict[str, str], query: dict[str, str],
) -> None:
    system, client = edge
    method, path = endpoint
    headers = dict(extra_headers)
    if content_type:
        headers["Content-Type"] = content_type
    key = {"admin": system.admin_key, "dispatch": system.dispatch_key, "junk": "junk"}.get(auth)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    resp = client.request(method, path, content=body if method != "GET" else None,
                          headers=headers, params=query)
    assert resp.status_code < 500, (method, path, resp.status_code, resp.text[:300])
    if resp.status_code >= 400:
        assert "detail" in resp.json()


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()
