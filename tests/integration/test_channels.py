"""Every inbound channel end to end on real servers: one signed request, one routed alert."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from services.ingest.adapters.twilio import compute_signature
from shared import gazetteer
from tests.integration.test_end_to_end import SQUARE, STEIN, outbox, wait_for
from tests.servers import System

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TWILIO_TOKEN = "twilio-test-token-0123456789"
TG_SECRET = "telegram-secret-token-0123456789"
WA_SECRET = "whatsapp-app-secret-0123456789"
WA_VERIFY = "whatsapp-verify-token"
MEMBER_PHONE = "+31612345678"
REPORTER_PHONE = "+31687654321"


@pytest.fixture
def channels(system: System) -> Iterator[tuple[System, httpx.Client]]:
    """The system with every provider secret set, one group over Stein with one member."""
    system.extra_env.update({
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "TELEGRAM_WEBHOOK_SECRET": TG_SECRET,
        "WHATSAPP_APP_SECRET": WA_SECRET,
        "WHATSAPP_VERIFY_TOKEN": WA_VERIFY,
        "BUURTALERT_SAAR_HOLD_S": "20",
    })
    system.start_all()
    system.extra_env["BUURTALERT_PUBLIC_URL"] = system.url("ingest")
    system.stop_all()
    system.start_all()

    async def load_postcode() -> None:
        redis = Redis.from_url(system.redis_url)
        await gazetteer.load(redis, [("6171AB", STEIN["lat"], STEIN["lon"])])
        await redis.aclose()

    asyncio.run(load_postcode())
    client = system.client()
    admin = system.admin_headers()
    assert client.post("/v1/groups", headers=admin, json={
        "id": "stein", "name": "Stein", "geometry": SQUARE}).status_code == 201
    assert client.post("/v1/groups/stein/members", headers=admin, json={
        "channel": "sms", "address": MEMBER_PHONE, "drills": True}).status_code == 201
    yield system, client
    client.close()


def entries_for(client: httpx.Client, system: System, alert_text: str) -> list[dict[str, Any]]:
    return [e for e in outbox(client, system) if alert_text in e.get("text", "")]


def delivered_once(client: httpx.Client, system: System, needle: str) -> dict[str, Any]:
    found = wait_for(lambda: entries_for(client, system, needle), lambda es: len(es) >= 1)
    time.sleep(1.0)  # a duplicate, if any, would arrive within the same second
    again = entries_for(client, system, needle)
    assert len(again) == 1, again
    first: dict[str, Any] = found[0]
    return first


def twilio_post(client: httpx.Client, system: System, form: dict[str, str],
                signature: str | None = "compute") -> httpx.Response:
    url = system.url("ingest") + "/webhooks/twilio/sms"
    headers = {}
    if signature == "compute":
        headers["X-Twilio-Signature"] = compute_signature(TWILIO_TOKEN, url, form)
    elif signature is not None:
        headers["X-Twilio-Signature"] = signature
    return client.post("/webhooks/twilio/sms", data=form, headers=headers)


def sms_form(sid: str, body: str) -> dict[str, str]:
    return {"MessageSid": sid, "SmsSid": sid, "AccountSid": "AC" + "0" * 32,
            "From": REPORTER_PHONE, "To": "+3197010000000", "Body": body, "NumMedia": "0",
            "NumSegments": "1", "SmsStatus": "received", "ApiVersion": "2010-04-01",
            "FromCountry": "NL", "ToCountry": "NL"}


def test_twilio_sms_signed_retried_once_forged_refused(
    channels: tuple[System, httpx.Client],
) -> None:
    system, client = channels
    form = sms_form("SM" + "a" * 32, "Inbraak bezig bij 6171 AB, 112 is gebeld")
    first = twilio_post(client, system, form)
    assert first.status_code == 200, first.text
    assert first.headers["content-type"].startswith("application/xml")
    assert "<Message>" in first.text
    assert "112" in first.text
    assert twilio_post(client, system, form).status_code == 200  # Twilio retries
    entry = delivered_once(client, system, "Inbraak bezig bij 6171 AB")
    assert entry["address"] == MEMBER_PHONE
    assert "112 is gebeld" in entry["text"]

    forged = twilio_post(client, system, sms_form("SM" + "b" * 32, "nep"), signature="AAAA")
    assert forged.status_code == 403
    assert "X-Twilio-Signature" in forged.json()["detail"]
    missing = twilio_post(client, system, sms_form("SM" + "c" * 32, "nep"), signature=None)
    assert missing.status_code == 403
    malformed = client.post("/webhooks/twilio/sms", content=b"\xff\x00garbage",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert malformed.status_code in (400, 403)
    metrics = client.get("/metrics").text
    assert ('ingest_rejected_total{endpoint="/webhooks/twilio/sms",reason="bad_signature"} 1.0'
            in metrics)


def test_sms_reporter_is_told_when_nobody_covers_the_place_or_it_is_unknown(
    channels: tuple[System, httpx.Client],
) -> None:
    system, client = channels
    unknown = twilio_post(client, system, sms_form("SM" + "u" * 32, "Rook gezien, 112 is gebeld"))
    assert "Waar is het?" in unknown.text
    # A shared location far outside Stein, then the report.
    headers = {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET}
    client.post("/webhooks/telegram", headers=headers, json=telegram_update(
        9101, {"location": {"latitude": 53.2, "longitude": 6.56}}))
    far = client.post("/webhooks/telegram", headers=headers, json=telegram_update(
        9102, {"text": "Inbraak in Groningen, 112 is gebeld"}))
    assert "buiten de buurten" in far.json()["text"]


def test_sms_join_and_opt_out(channels: tuple[System, httpx.Client]) -> None:
    system, client = channels
    joined = twilio_post(client, system, sms_form("SM" + "f" * 32, "AANMELDEN 6171 AB"))
    assert "aanmelding" in joined.text
    requests = client.get("/v1/join-requests", headers=system.admin_headers()).json()
    assert [(r["channel"], r["address"], r["place"]) for r in requests] == [
        ("sms", REPORTER_PHONE, "6171 AB")]
    stop = twilio_post(client, system, sms_form("SM" + "9" * 32, "AFMELDEN"))
    assert "afgemeld" in stop.text
    # Opting out erases the person: their join request is gone too.
    assert client.get("/v1/join-requests", headers=system.admin_headers()).json() == []
    twilio_stop = twilio_post(client, system, sms_form("SM" + "8" * 32, "STOP"))
    assert "<Message>" not in twilio_stop.text  # Twilio answers its own STOP
    # The member who says STOP gets nothing more; their outcome says why.
    member_stop = sms_form("SM" + "7" * 32, "STOP")
    member_stop["From"] = MEMBER_PHONE
    assert twilio_post(client, system, member_stop).status_code == 200
    # ...and is no longer a member: the group has nobody left to reach.
    assert outcomes_of(client, system, "Na afmelden") == ["no_recipients"]
    # An admin who adds the number again does not undo the STOP: the marker stays.
    assert client.post("/v1/groups/stein/members", headers=system.admin_headers(), json={
        "channel": "sms", "address": MEMBER_PHONE}).status_code == 201
    assert outcomes_of(client, system, "Na toevoegen") == ["opted_out"]
    assert entries_for(client, system, "Na afmelden") == []
    assert entries_for(client, system, "Na toevoegen") == []


def outcomes_of(client: httpx.Client, system: System, text: str) -> list[str]:
    """Post a report at Stein; the outcomes its recipients end with."""
    alert_id = client.post("/v1/reports", json={
        "text": text, "location": STEIN, "called_112": True}).json()["alert_id"]
    outcomes = wait_for(
        lambda: client.get(f"/v1/alerts/{alert_id}/outcomes", headers=system.admin_headers()
                           ).json(), lambda os_: len(os_) == 1)
    return [o["outcome"] for o in outcomes]


def test_sms_without_112_asks_and_the_answer_travels_with_the_report(
    channels: tuple[System, httpx.Client],
) -> None:
    system, client = channels
    reply = twilio_post(client, system, sms_form("SM" + "d" * 32,
                                                 "Verdachte man bij de auto's 6171AB"))
    assert "Is 112 al gebeld" in reply.text
    answer = twilio_post(client, system, sms_form("SM" + "e" * 32, "JA"))
    assert answer.status_code == 200
    entry = delivered_once(client, system, "Verdachte man bij de auto's")
    assert "112 is gebeld" in entry["text"]


def telegram_update(update_id: int, message: dict[str, Any]) -> dict[str, Any]:
    base = {"message_id": update_id, "date": int(time.time()),
            "from": {"id": 5550001, "is_bot": False, "first_name": "Anna"},
            "chat": {"id": 5550001, "type": "private"}}
    base.update(message)
    return {"update_id": update_id, "message": base}


def test_telegram_location_then_report_once_and_secret_checked(
    channels: tuple[System, httpx.Client],
) -> None:
    system, client = channels
    headers = {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET}
    loc = client.post("/webhooks/telegram", headers=headers, json=telegram_update(
        9001, {"location": {"latitude": STEIN["lat"], "longitude": STEIN["lon"]}}))
    assert loc.status_code == 200
    assert loc.json()["method"] == "sendMessage"
    report = telegram_update(9002, {"text": "Rook uit schuur achter de school, 112 is gebeld"})
    first = client.post("/webhooks/telegram", headers=headers, json=report)
    assert first.json()["chat_id"] == 5550001
    assert "112" in first.json()["text"]
    assert client.post("/webhooks/telegram", headers=headers, json=report).json() == {}
    entry = delivered_once(client, system, "Rook uit schuur")
    outcomes = client.get(f"/v1/alerts/{entry['alert_id']}/outcomes",
                          headers=system.admin_headers()).json()
    assert len(outcomes) == 1
    wrong = client.post("/webhooks/telegram", headers={"X-Telegram-Bot-Api-Secret-Token": "x"},
                        json=report)
    assert wrong.status_code == 403


def wa_payload(messages: list[dict[str, Any]]) -> bytes:
    return json.dumps({"object": "whatsapp_business_account", "entry": [{
        "id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881",
                         "phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": "Kerry"}, "wa_id": "31687654321"}],
            "messages": messages}}]}]}).encode()


def wa_post(client: httpx.Client, body: bytes, secret: str = WA_SECRET) -> httpx.Response:
    sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return client.post("/webhooks/whatsapp", content=body, headers={
        "X-Hub-Signature-256": sig, "Content-Type": "application/json"})


def test_whatsapp_challenge_location_report_and_forgery(
    channels: tuple[System, httpx.Client],
) -> None:
    system, client = channels
    challenge = client.get("/webhooks/whatsapp", params={
        "hub.mode": "subscribe", "hub.verify_token": WA_VERIFY, "hub.challenge": "1158201444"})
    assert challenge.status_code == 200
    assert challenge.text == "1158201444"
    assert client.get("/webhooks/whatsapp", params={
        "hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"}
    ).status_code == 403
    now = str(int(time.time()))
    body = wa_payload([{"from": "31687654321", "id": "wamid.HBgLMzE2ODc2NTQzMjEVAgASGBQzQTc",
                        "timestamp": now, "type": "location",
                        "location": {"latitude": STEIN["lat"], "longitude": STEIN["lon"]}},
                       {"from": "31687654321", "id": "wamid.HBgLMzE2ODc2NTQzMjEVAgASGBQzQTg",
                        "timestamp": now, "type": "text",
                        "text": {"body": "Auto rijdt rondjes zonder licht. 112 is gebeld"}}])
    assert wa_post(client, body).status_code == 200
    assert wa_post(client, body).status_code == 200  # Meta redelivers
    entry = delivered_once(client, system, "Auto rijdt rondjes")
    assert entry["address"] == MEMBER_PHONE
    replies = wait_for(lambda: [e for e in outbox(client, system) if e.get("kind") == "reply"],
                       lambda rs: len(rs) >= 2)
    assert {r["address"] for r in replies} == {"+31687654321"}
    assert wa_post(client, body, secret="forged").status_code == 403
    status = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp", "metadata": {
            "display_phone_number": "1", "phone_number_id": "1"}, "statuses": [{
                "id": "wamid.X", "status": "delivered", "timestamp": now,
                "recipient_id": "31612345678"}]}}]}]}).encode()
    assert wa_post(client, status).status_code == 200
    assert ('ingest_delivery_receipts_total{channel="whatsapp",status="delivered"} 1.0'
            in client.get("/metrics").text)


CAP_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{identifier}</identifier>
  <sender>meldkamer@politie.example</sender>
  <sent>2026-11-22T10:00:00+01:00</sent>
  <status>{status}</status>
  <msgType>{msg_type}</msgType>
  <scope>Public</scope>
  {references}
  <info>
    <language>nl-NL</language>
    <category>Rescue</category>
    <event>Vermiste persoon</event>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Observed</certainty>
    <headline>{headline}</headline>
    <description>Jongen van 8, blauwe jas.</description>
    <parameter><valueName>buurtalert:category</valueName><value>missing_person</value></parameter>
    <area>
      <areaDesc>Stein centrum</areaDesc>
      <circle>{lat},{lon} 0.3</circle>
    </area>
  </info>
</alert>"""


def cap(identifier: str, msg_type: str, headline: str, references: str = "",
        status: str = "Actual") -> bytes:
    refs = f"<references>{references}</references>" if references else ""
    return CAP_TEMPLATE.format(identifier=identifier, msg_type=msg_type, headline=headline,
                               references=refs, status=status, lat=STEIN["lat"],
                               lon=STEIN["lon"]).encode()


def test_dispatch_json_and_cap_thread_update_and_cancel(
    channels: tuple[System, httpx.Client],
) -> None:
    system, client = channels
    dispatch = {"Authorization": f"Bearer {system.dispatch_key}"}
    assert client.post("/v1/notices", json={"category": "other", "headline": "x",
                       "area": {"circle": {"lat": 51, "lon": 5, "radius_m": 100}}},
                       headers=system.admin_headers()).status_code == 403
    json_notice = client.post("/v1/notices", headers=dispatch, json={
        "category": "burglary", "headline": "Inbrekers actief in Stein centrum",
        "text": "Let op open ramen.",
        "area": {"circle": {"lat": STEIN["lat"], "lon": STEIN["lon"], "radius_m": 250}}})
    assert json_notice.status_code == 202, json_notice.text
    delivered_once(client, system, "Inbrekers actief in Stein centrum")

    xml = {**dispatch, "Content-Type": "application/cap+xml"}
    alert = client.post("/v1/notices", headers=xml,
                        content=cap("NL-2026-0001", "Alert", "Vermist: jongen van 8"))
    assert alert.status_code == 202, alert.text
    delivered_once(client, system, "Vermist: jongen van 8")
    ref = "meldkamer@politie.example,NL-2026-0001,2026-11-22T10:00:00+01:00"
    update = client.post("/v1/notices", headers=xml, content=cap(
        "NL-2026-0002", "Update", "Update: jongen gezien bij station", ref))
    assert update.status_code == 202, update.text
    upd = delivered_once(client, system, "jongen gezien bij station")
    assert upd["text"].startswith("Update")
    cancel_doc = cap("NL-2026-0003", "Cancel", "Jongen is terecht", ref).replace(
        b"<circle>", b"<!-- no area needed --><circle>")
    cancel = client.post("/v1/notices", headers=xml, content=cancel_doc)
    assert cancel.status_code == 202, cancel.text
    assert delivered_once(client, system, "Jongen is terecht")["text"].startswith("Ingetrokken")

    drill = client.post("/v1/notices", headers=xml, content=cap(
        "NL-2026-0004", "Alert", "Oefening vermissing", status="Exercise"))
    assert drill.status_code == 202
    assert delivered_once(client, system, "Oefening vermissing")["text"].startswith("[OEFENING]")

    bad = client.post("/v1/notices", headers=xml,
                      content=cap("NL-2026-0005", "Alert", "x", status="Echt"))
    assert bad.status_code == 422
    assert "<status>" in bad.json()["detail"]


def test_one_sms_sender_flooding_gets_429(system: System) -> None:
    system.extra_env.update({
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN, "BUURTALERT_SENDER_REPORTS_PER_HOUR": "2",
        "BUURTALERT_SENDER_BURST": "2",
    })
    system.ports = {}
    system.env()
    system.extra_env["BUURTALERT_PUBLIC_URL"] = f"http://127.0.0.1:{system.ports['ingest']}"
    system.start("ingest")
    with system.client() as client:
        codes = [twilio_post(client, system, sms_form(f"SM{i:032d}", f"melding {i} 112 is gebeld"))
                 .status_code for i in range(4)]
        assert codes == [200, 200, 429, 429]
        other = sms_form("SM" + "z" * 32, "andere melder, 112 is gebeld")
        other["From"] = "+31611112222"
        assert twilio_post(client, system, other).status_code == 200  # per sender, not global


def test_notice_to_admins_reaches_one_admin_of_the_group(
    channels: tuple[System, httpx.Client],
) -> None:
    system, client = channels
    admin = system.admin_headers()
    admins = {"+31612340001", "+31612340002"}
    for number in sorted(admins):
        assert client.post("/v1/groups/stein/members", headers=admin, json={
            "channel": "sms", "address": number, "role": "admin"}).status_code == 201
    sent = client.post("/v1/notices", headers={"Authorization": f"Bearer {system.dispatch_key}"},
                       json={"category": "other", "headline": "Alleen voor beheerders",
                             "audience": "admins",
                             "area": {"circle": {"lat": STEIN["lat"], "lon": STEIN["lon"],
                                                 "radius_m": 100}}})
    assert sent.status_code == 202, sent.text
    entry = delivered_once(client, system, "Alleen voor beheerders")
    assert entry["address"] in admins


def test_expiring_notice_sends_a_closing_message_unless_cancelled(
    channels: tuple[System, httpx.Client],
) -> None:
    from datetime import UTC, datetime, timedelta

    system, client = channels
    dispatch = {"Authorization": f"Bearer {system.dispatch_key}"}
    circle = {"circle": {"lat": STEIN["lat"], "lon": STEIN["lon"], "radius_m": 100}}

    def expires_in(seconds: int) -> str:
        return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()

    assert client.post("/v1/notices", headers=dispatch, json={
        "category": "fire", "headline": "Brand bij de sporthal, ramen dicht", "area": circle,
        "expires": expires_in(3)}).status_code == 202
    delivered_once(client, system, "Brand bij de sporthal")
    closing = wait_for(lambda: [e for e in entries_for(client, system, "Brand bij de sporthal")
                                if e["text"].startswith("Afgelopen")],
                       lambda es: len(es) >= 1, timeout_s=30)
    assert "verlopen" in closing[0]["text"]

    cancelled = client.post("/v1/notices", headers=dispatch, json={
        "category": "other", "headline": "Stroomstoring in de wijk", "area": circle,
        "expires": expires_in(4)})
    assert cancelled.status_code == 202
    delivered_once(client, system, "Stroomstoring in de wijk")
    assert client.post("/v1/notices", headers=dispatch, json={
        "msg_type": "Cancel", "headline": "Stroomstoring voorbij",
        "references": [cancelled.json()["alert_id"]]}).status_code == 202
    delivered_once(client, system, "Stroomstoring voorbij")
    time.sleep(6)
    assert not [e for e in entries_for(client, system, "Stroomstoring in de wijk")
                if e["text"].startswith("Afgelopen")]


def test_house_rules_hold_chatter_for_admins_who_release_or_reject(
    channels: tuple[System, httpx.Client],
) -> None:
    system, client = channels
    admin = system.admin_headers()
    texts = ["Goedemorgen allemaal 6171AB", "👍", "Fiets te koop bij 6171AB"]
    for i, text in enumerate(texts):
        reply = twilio_post(client, system, sms_form(f"SM{i:030d}hd", text))
        assert reply.status_code == 200
        assert "niet doorgestuurd" in reply.text
    held = wait_for(lambda: client.get("/v1/held", headers=admin).json(),
                    lambda hs: len(hs) == 3)
    assert {h["reason"] for h in held} == {"chatter", "emoji_only", "off_topic"}
    assert all(h["repeat_offender"] for h in held)  # three held messages from one sender
    assert [e for e in outbox(client, system) if e.get("kind") != "reply"] == []
    by_reason = {h["reason"]: h["alert_id"] for h in held}
    outcome = client.get(f"/v1/alerts/{by_reason['chatter']}/outcomes", headers=admin).json()
    assert [o["outcome"] for o in outcome] == ["held"]

    released = client.post(f"/v1/held/{by_reason['chatter']}/release", headers=admin)
    assert released.status_code == 202
    assert client.post(f"/v1/held/{by_reason['chatter']}/release",
                       headers=admin).status_code == 404  # released once only
    entry = delivered_once(client, system, "Goedemorgen allemaal")
    assert entry["address"] == MEMBER_PHONE
    assert client.delete(f"/v1/held/{by_reason['off_topic']}", headers=admin).status_code == 204
    assert {h["reason"] for h in client.get("/v1/held", headers=admin).json()} == {"emoji_only"}
