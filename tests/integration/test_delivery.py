"""Delivery on real servers to provider stubs: every channel, within limits, once per person.

The stubs (tests/providers) enforce each provider's documented limits with sliding windows and
answer 429/5xx/invalid-number as the providers do; they record every accepted message. They run
as their own process, as a provider would: arrival times are then not skewed by this test
process competing for the same interpreter.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.test_end_to_end import SQUARE, wait_for
from tests.providers import (
    RemoteStubs,
    SmtpConfig,
    StubsConfig,
    TelegramConfig,
    TwilioConfig,
    WhatsAppConfig,
    spawn_stubs,
)
from tests.servers import System

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TWILIO_TOKEN = "twilio-auth-token-0123456789"
WA_SECRET = "whatsapp-app-secret-0123456789"
CIRCLE = {"circle": {"lat": 50.97, "lon": 5.7675, "radius_m": 200}}
CHANNELS = ("sms", "telegram", "whatsapp", "email")
ELSEWHERE = {  # a square in Eersel, far from Stein
    "type": "Polygon",
    "coordinates": [[[5.30, 51.35], [5.33, 51.35], [5.33, 51.37], [5.30, 51.37], [5.30, 51.35]]],
}


def address(channel: str, i: int) -> str:
    """A distinct, valid address per channel."""
    return {
        "sms": f"+3161{i:07d}",
        "whatsapp": f"+3162{i:07d}",
        "telegram": str(100_000 + i),
        "email": f"bewoner{i}@example.nl",
    }[channel]


@pytest.fixture
def stubs() -> Iterator[RemoteStubs]:
    config = StubsConfig(
        twilio=TwilioConfig(auth_token=TWILIO_TOKEN, per_second=50),
        telegram=TelegramConfig(),  # Telegram's own limits: 30/s, 1/s per chat, 20/min per group
        whatsapp=WhatsAppConfig(per_second=80, app_secret=WA_SECRET),
        smtp=SmtpConfig(per_second=100),
    )
    with spawn_stubs(config) as running:
        yield running


@pytest.fixture
def delivering(system: System, stubs: RemoteStubs) -> System:
    """The system wired to the stubs; receipts come back to the edge."""
    system.env()  # allocates the ports, so the edge's URL is known before it starts
    edge = system.url("ingest")
    stubs.configure("whatsapp", webhook_url=f"{edge}/webhooks/whatsapp")
    system.extra_env.update(stubs.env())
    system.extra_env.update(
        {
            "BUURTALERT_PUBLIC_URL": edge,
            "WHATSAPP_APP_SECRET": WA_SECRET,
            "BUURTALERT_TWILIO_PER_SECOND": "50",
            "BUURTALERT_WHATSAPP_PER_SECOND": "80",
            "BUURTALERT_EMAIL_PER_SECOND": "100",
            "BUURTALERT_ACK_WAIT_S": "5",
            "BUURTALERT_RETRY_BASE_S": "0.2",
        }
    )
    system.start_all()
    return system


def add_members(client: httpx.Client, admin: dict[str, str], per_channel: int) -> dict[str, str]:
    """A group over Stein with per_channel members on each channel; member_id -> channel."""
    assert (
        client.post(
            "/v1/groups", headers=admin, json={"id": "stein", "name": "Stein", "geometry": SQUARE}
        ).status_code
        == 201
    )
    members: dict[str, str] = {}
    for channel in CHANNELS:
        for i in range(per_channel):
            resp = client.post(
                "/v1/groups/stein/members",
                headers=admin,
                json={"channel": channel, "address": address(channel, i)},
            )
            assert resp.status_code == 201, resp.text
            members[resp.json()["member_id"]] = channel
    return members


def notice(client: httpx.Client, system: System, headline: str) -> str:
    resp = client.post(
        "/v1/notices",
        headers={"Authorization": f"Bearer {system.dispatch_key}"},
        json={"category": "missing_person", "headline": headline, "area": CIRCLE},
    )
    assert resp.status_code == 202, resp.text
    alert_id: str = resp.json()["alert_id"]
    return alert_id


def reach(client: httpx.Client, system: System, alert_id: str) -> dict[str, Any]:
    resp = client.get(f"/v1/alerts/{alert_id}/reach", headers=system.admin_headers())
    return resp.json() if resp.status_code == 200 else {"pending": -1}


def outcomes(client: httpx.Client, system: System, alert_id: str) -> list[dict[str, Any]]:
    resp = client.get(f"/v1/alerts/{alert_id}/outcomes", headers=system.admin_headers())
    resp.raise_for_status()
    data: list[dict[str, Any]] = resp.json()
    return data


def received_for(stubs: RemoteStubs, needle: str) -> Counter[tuple[str, str]]:
    return Counter((d.channel, d.recipient) for d in stubs.received() if needle in d.text)


def test_notice_reaches_1000_people_on_four_channels_once_within_limits(
    delivering: System, stubs: RemoteStubs
) -> None:
    system = delivering
    client, admin = system.client(), system.admin_headers()
    add_members(client, admin, per_channel=250)
    alert_id = notice(client, system, "Vermist: jongen (8), blauwe jas")

    done = wait_for(
        lambda: reach(client, system, alert_id),
        lambda r: r.get("pending") == 0 and r.get("planned") == 1000,
        timeout_s=120,
    )
    assert done["reached"] == 1000, done
    got = received_for(stubs, "Vermist: jongen")
    assert len(got) == 1000
    assert set(got.values()) == {1}, "someone got the notice twice"
    assert Counter(channel for channel, _ in got) == dict.fromkeys(CHANNELS, 250)
    assert stubs.summary()["duplicate_deliveries"] == {}
    assert sum(stubs.violations().values()) == 0, stubs.violations()
    # WhatsApp outside the 24-hour window: the approved template, never free text.
    assert {d.meta.get("type") for d in stubs.received("whatsapp")} <= {"template"}
    # Receipts: Twilio status callbacks and WhatsApp statuses reach the recorded outcomes.
    receipts = wait_for(
        lambda: Counter(
            o["channel"] for o in outcomes(client, system, alert_id) if o["receipt"] == "delivered"
        ),
        lambda c: c["sms"] == 250 and c["whatsapp"] == 250,
        timeout_s=60,
    )
    assert receipts["telegram"] == 0  # Telegram has no receipts; its answer is the proof
    metrics = httpx.get(system.url("notifier") + "/metrics").text
    assert 'notifier_deliveries_total{channel="telegram",outcome="delivered"} 250.0' in metrics
    assert "notifier_accept_to_provider_seconds_bucket" in metrics


def test_provider_failures_are_retried_or_recorded(delivering: System, stubs: RemoteStubs) -> None:
    system = delivering
    client, admin = system.client(), system.admin_headers()
    add_members(client, admin, per_channel=5)
    stubs.configure("sms", invalid_numbers=[address("sms", 0)])
    stubs.configure("telegram", blocked_chats=[int(address("telegram", 0))])
    stubs.configure("email", rejected_addresses=[address("email", 0)])
    stubs.fail_next("telegram", 3, status=429, retry_after=1)
    stubs.fail_next("sms", 2, status=503)
    stubs.fail_next("whatsapp", 2, status=500)
    alert_id = notice(client, system, "Vermist: oudere dame, grijze jas")

    done = wait_for(
        lambda: reach(client, system, alert_id),
        lambda r: r.get("pending") == 0 and r.get("planned") == 20,
        timeout_s=90,
    )
    assert done["outcomes"] == {"delivered": 17, "failed_permanent": 3}, done
    by_detail = Counter(
        (o["channel"], o["detail"])
        for o in outcomes(client, system, alert_id)
        if o["outcome"] == "failed_permanent"
    )
    assert by_detail == {
        ("sms", "invalid_address"): 1,
        ("telegram", "blocked"): 1,
        ("email", "invalid_address"): 1,
    }
    got = received_for(stubs, "oudere dame")
    assert len(got) == 17
    assert set(got.values()) == {1}
    assert sum(stubs.violations().values()) == 0, stubs.violations()
    metrics = httpx.get(system.url("notifier") + "/metrics").text
    assert 'notifier_provider_throttled_total{channel="telegram"} 3.0' in metrics
    assert 'notifier_send_retries_total{channel="sms",reason="server_error"} 2.0' in metrics


def test_police_notices_pre_empt_resident_reports(delivering: System, stubs: RemoteStubs) -> None:
    system = delivering
    client, admin = system.client(), system.admin_headers()
    # Residents report in one buurt, the police notice is for another: they share only the
    # bot's budget (30/s), so the order on the wire shows who goes first.
    for gid, shape, offset in (("stein", SQUARE, 0), ("eersel", ELSEWHERE, 1000)):
        assert (
            client.post(
                "/v1/groups", headers=admin, json={"id": gid, "name": gid, "geometry": shape}
            ).status_code
            == 201
        )
        for i in range(60):
            assert (
                client.post(
                    f"/v1/groups/{gid}/members",
                    headers=admin,
                    json={"channel": "telegram", "address": address("telegram", offset + i)},
                ).status_code
                == 201
            )
    # Five resident reports: 300 Telegram messages, about ten seconds of the bot's budget.
    for n in range(5):
        assert (
            client.post(
                "/v1/reports",
                json={
                    "text": f"Verdachte auto {n} rijdt rondjes",
                    "location": {"lat": 51.36, "lon": 5.31},
                    "called_112": True,
                },
            ).status_code
            == 202
        )
    wait_for(lambda: len(stubs.received("telegram")), lambda k: k >= 30, timeout_s=30)
    notice(client, system, "Vermist: meisje (6), rode jas")
    wait_for(
        lambda: len([d for d in stubs.received("telegram") if "Verdachte auto" in d.text]),
        lambda k: k == 300,
        timeout_s=90,
    )
    order = stubs.received("telegram")
    assert len([d for d in order if "meisje (6)" in d.text]) == 60
    first_police = min(i for i, d in enumerate(order) if "meisje (6)" in d.text)
    police_done_at = max(i for i, d in enumerate(order) if "meisje (6)" in d.text)
    residents_after = sum(1 for d in order[police_done_at:] if "Verdachte auto" in d.text)
    assert residents_after > 0, "the resident backlog was gone before the notice arrived"
    # Once the notice was queued its 60 messages went first: residents waited, apart from
    # the few requests already granted when the notice came in.
    interleaved = sum(1 for d in order[first_police:police_done_at] if "Verdachte auto" in d.text)
    assert interleaved <= 5, interleaved
    assert sum(stubs.violations().values()) == 0, stubs.violations()
    print(
        f"police pre-emption: {interleaved} resident messages between the first and last "
        f"of 60 police messages; {residents_after} residents after"
    )


def test_kill_notifier_mid_fan_out_sends_each_person_at_most_once(
    delivering: System, stubs: RemoteStubs
) -> None:
    """SIGKILL mid fan-out: nobody gets the notice twice, and on the channels with receipts
    (SMS, WhatsApp) nobody misses it either: "unconfirmed" is left to Telegram requests and
    e-mails that were under way (past their point of no return) at the kill."""
    system = delivering
    client, admin = system.client(), system.admin_headers()
    members = add_members(client, admin, per_channel=250)
    # Real providers take a while to answer; requests they accepted but had not answered at
    # the kill are then confirmed by their receipts (posted 50 ms after arrival) afterwards.
    stubs.configure("sms", latency_s=0.1)
    stubs.configure("whatsapp", latency_s=0.1)
    alert_id = notice(client, system, "Vermist: man (80), wandelstok")
    wait_for(lambda: len(received_for(stubs, "man (80)")), lambda k: k >= 300, timeout_s=60)
    system.kill("notifier")
    time.sleep(1.0)
    # The restarted notifier judges the dead one's markers; a short grace keeps the test quick
    # and is still far longer than the stubs take to post their receipts (50 ms).
    system.extra_env["BUURTALERT_RECEIPT_GRACE_S"] = "3"
    system.start("notifier")
    done = wait_for(
        lambda: reach(client, system, alert_id),
        lambda r: r.get("pending") == 0 and r.get("planned") == 1000,
        timeout_s=180,
    )
    got = received_for(stubs, "man (80)")
    assert set(got.values()) == {1}, "someone got the notice twice"
    assert stubs.summary()["duplicate_deliveries"] == {}
    recorded = outcomes(client, system, alert_id)
    assert len(recorded) == 1000  # exactly one outcome per person
    assert {o["member_id"] for o in recorded} == set(members)
    by_outcome = Counter(o["outcome"] for o in recorded)
    by_channel = Counter((o["channel"], o["outcome"]) for o in recorded)
    assert set(by_outcome) <= {"delivered", "unconfirmed"}, by_outcome
    # Receipts tell a sent SMS/WhatsApp from a lost one; only the channels without receipts
    # are left "unconfirmed", and only requests under way at the kill: at most the send slots.
    assert {c for c, outcome in by_channel if outcome == "unconfirmed"} <= {"telegram", "email"}
    assert by_outcome["unconfirmed"] <= 32, by_outcome
    received = Counter(channel for channel, _ in got)
    for channel in ("sms", "whatsapp"):
        assert by_channel[(channel, "delivered")] == 250, by_channel
        assert received[channel] == 250, f"{channel}: {250 - received[channel]} missed it"
    assert len(got) >= by_outcome["delivered"]
    assert len(got) <= 1000
    assert sum(stubs.violations().values()) == 0, stubs.violations()
    metrics = httpx.get(system.url("notifier") + "/metrics").text
    resent = {
        channel: _sample(metrics, f'notifier_resent_after_crash_total{{channel="{channel}"}}')
        for channel in CHANNELS
    }
    # Resent only what provably never reached the provider: a marker never committed (the
    # stopped notifier had not yet made the request, or for e-mail not begun DATA), or for
    # SMS/WhatsApp a committed one whose receipt grace passed without a receipt. Nobody got
    # a message twice (above), so none of these resends was a second message; each is on
    # record as delivered.
    again = Counter(o["channel"] for o in recorded if o["detail"].startswith("sent again"))
    assert {c: int(n) for c, n in resent.items() if n} == dict(again), (resent, again)
    assert all(
        o["outcome"] == "delivered" for o in recorded if o["detail"].startswith("sent again")
    )
    after_crash = Counter((o["channel"], o["detail"]) for o in recorded if o["detail"])
    print(
        f"kill mid fan-out: {dict(by_outcome)}; by channel {dict(sorted(by_channel.items()))}; "
        f"received {len(got)} of 1000 {dict(received)}; resent after the crash {resent}; "
        f"settled after the crash {dict(sorted(after_crash.items()))}; reach {done}"
    )


def _sample(metrics: str, name: str) -> float:
    """One sample of a Prometheus text exposition; 0 when the series is absent."""
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
