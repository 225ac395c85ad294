"""The provider stubs speak each provider's format, enforce its limits and record deliveries."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import aiosmtplib
import httpx
import pytest

from services.ingest.adapters import twilio as edge_twilio
from services.ingest.adapters import whatsapp as edge_whatsapp
from tests.providers import (
    SMTP_LIMIT_RATE,
    TELEGRAM_LIMIT_BOT,
    TELEGRAM_LIMIT_CHAT,
    TELEGRAM_LIMIT_GROUP,
    TWILIO_LIMIT_SENDER,
    WHATSAPP_LIMIT_PAIR,
    WHATSAPP_LIMIT_THROUGHPUT,
    Delivered,
    Ledger,
    Limit,
    ProviderStubs,
    SmtpConfig,
    StubsConfig,
    TelegramConfig,
    TwilioConfig,
    WhatsAppConfig,
    spawn_stubs,
    twilio_signature,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

MEMBER = "+31612345678"
MEMBER_WA = "31612345678"
OTHER_WA = "31687654321"

MakeStubs = Callable[..., ProviderStubs]


@pytest.fixture
def make_stubs() -> Iterator[MakeStubs]:
    """Start ProviderStubs with a config; every one started is stopped after the test."""
    started: list[ProviderStubs] = []

    def make(config: StubsConfig | None = None, clock: FakeClock | None = None) -> ProviderStubs:
        stubs = ProviderStubs(config, clock=clock or time.monotonic).start()
        started.append(stubs)
        return stubs

    yield make
    for stubs in started:
        stubs.stop()


@pytest.fixture
def stubs(make_stubs: MakeStubs) -> ProviderStubs:
    """Stubs with the default (provider-documented) limits."""
    return make_stubs()


@pytest.fixture
def clock() -> FakeClock:
    """A frozen clock that a test moves by hand: windows independent of machine speed."""
    return FakeClock()


@pytest.fixture
def frozen(make_stubs: MakeStubs, clock: FakeClock) -> ProviderStubs:
    """Stubs with default limits on the frozen clock."""
    return make_stubs(clock=clock)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """One keep-alive client, no proxies from the environment."""
    with httpx.Client(trust_env=False, timeout=10.0) as c:
        yield c


# --- a loopback receiver for status callbacks --------------------------------------------


@dataclass
class Captured:
    """One callback the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Records every POST it receives."""

    url: str
    requests: list[Captured] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait(self, n: int, timeout: float = 5.0) -> list[Captured]:
        """Wait for n callbacks."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            if time.monotonic() > deadline:
                raise TimeoutError(f"got {len(self.requests)} callbacks, wanted {n}")
            time.sleep(0.01)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An HTTP server on 127.0.0.1 that records callbacks (stands in for the edge)."""
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            rec = holder[0]
            with rec.lock:
                rec.requests.append(Captured(self.path, dict(self.headers.items()), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return  # keep test output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Receiver(f"http://127.0.0.1:{server.server_address[1]}"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield holder[0]
    server.shutdown()
    server.server_close()


# --- helpers ---------------------------------------------------------------------------


class FakeClock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        """The current time, as set by the test."""
        return self.now


def twilio_send(
    client: httpx.Client, env: dict[str, str], form: dict[str, str], auth: tuple[str, str] | None
) -> httpx.Response:
    """POST a Messages.json form, with basic auth unless auth is None."""
    url = f"{env['TWILIO_API_BASE']}/2010-04-01/Accounts/{env['TWILIO_ACCOUNT_SID']}/Messages.json"
    if auth is None:
        return client.post(url, data=form)
    return client.post(url, data=form, auth=auth)


def twilio_auth(env: dict[str, str]) -> tuple[str, str]:
    """The stub account's basic-auth pair."""
    return env["TWILIO_ACCOUNT_SID"], env["TWILIO_AUTH_TOKEN"]


def sms(env: dict[str, str], to: str = MEMBER, body: str = "Verdachte situatie") -> dict[str, str]:
    """A Messages.json form from the configured sender."""
    return {"To": to, "From": env["TWILIO_FROM_NUMBER"], "Body": body}


def tg_send(client: httpx.Client, env: dict[str, str], chat_id: int, text: str) -> httpx.Response:
    """sendMessage with a JSON body."""
    url = f"{env['TELEGRAM_API_BASE']}/bot{env['TELEGRAM_BOT_TOKEN']}/sendMessage"
    return client.post(url, json={"chat_id": chat_id, "text": text})


def wa_send(
    client: httpx.Client, env: dict[str, str], body: dict[str, Any], token: str | None = None
) -> httpx.Response:
    """POST /{version}/{phone_number_id}/messages with a bearer token."""
    url = (
        f"{env['WHATSAPP_API_BASE']}/{env['WHATSAPP_API_VERSION']}/"
        f"{env['WHATSAPP_PHONE_NUMBER_ID']}/messages"
    )
    headers = {"Authorization": f"Bearer {token or env['WHATSAPP_TOKEN']}"}
    return client.post(url, json=body, headers=headers)


def wa_text(to: str, text: str) -> dict[str, Any]:
    """A free-form text message body."""
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"body": text},
    }


def wa_template(to: str, params: list[str], opaque: str | None = None) -> dict[str, Any]:
    """A template message body whose body parameters carry the alert."""
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "template",
        "template": {
            "name": "buurtalert_melding",
            "language": {"code": "nl"},
            "components": [
                {"type": "body", "parameters": [{"type": "text", "text": p} for p in params]}
            ],
        },
    }
    if opaque is not None:
        body["biz_opaque_callback_data"] = opaque
    return body


def email(to: str, subject: str = "Melding", text: str = "Let op: verdachte auto") -> EmailMessage:
    """An alert e-mail as the notifier would build it."""
    message = EmailMessage()
    message["From"] = "buurtalert@localhost"
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = "<d-1@buurtalert.test>"
    message["X-Delivery-Id"] = "d-1"
    message.set_content(text)
    return message


# --- runner ----------------------------------------------------------------------------


def test_env_points_every_setting_at_loopback(stubs: ProviderStubs) -> None:
    env = stubs.env()
    assert set(env) == {
        "TWILIO_API_BASE",
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_FROM_NUMBER",
        "TELEGRAM_API_BASE",
        "TELEGRAM_BOT_TOKEN",
        "WHATSAPP_API_BASE",
        "WHATSAPP_API_VERSION",
        "WHATSAPP_PHONE_NUMBER_ID",
        "WHATSAPP_TOKEN",
        "SMTP_HOST",
        "SMTP_PORT",
        "SMTP_FROM",
    }
    for key in ("TWILIO_API_BASE", "TELEGRAM_API_BASE", "WHATSAPP_API_BASE"):
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", env[key])
    assert env["SMTP_HOST"] == "127.0.0.1"
    assert int(env["SMTP_PORT"]) > 0
    assert re.fullmatch(r"AC[0-9a-f]{32}", env["TWILIO_ACCOUNT_SID"])


def test_only_loopback_hosts_are_accepted() -> None:
    with pytest.raises(ValueError, match="loopback"):
        StubsConfig(host="0.0.0.0")


# --- Twilio ----------------------------------------------------------------------------


def test_twilio_signature_matches_twilios_documented_example() -> None:
    # The worked example from twilio.com/docs/usage/security (auth token 12345).
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio_signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_twilio_accepts_a_message_with_twilios_resource(
    stubs: ProviderStubs, client: httpx.Client
) -> None:
    env = stubs.env()
    form = sms(env) | {"StatusCallback": "http://127.0.0.1:9/receipts?delivery_id=d-42"}
    response = twilio_send(client, env, form, twilio_auth(env))
    assert response.status_code == 201
    body = response.json()
    assert re.fullmatch(r"SM[0-9a-f]{32}", body["sid"])
    assert body["status"] == "queued"
    assert body["to"] == MEMBER
    assert body["from"] == env["TWILIO_FROM_NUMBER"]
    assert body["body"] == "Verdachte situatie"
    assert body["account_sid"] == env["TWILIO_ACCOUNT_SID"]
    assert body["num_segments"] == "1"
    assert parsedate_to_datetime(body["date_created"]).tzinfo is not None
    assert body["uri"] == (
        f"/2010-04-01/Accounts/{env['TWILIO_ACCOUNT_SID']}/Messages/{body['sid']}.json"
    )
    [delivered] = stubs.received("sms")
    assert delivered.recipient == MEMBER
    assert delivered.text == "Verdachte situatie"
    assert delivered.provider_id == body["sid"]
    assert delivered.delivery_id == "d-42"


def test_twilio_refuses_wrong_or_missing_credentials(
    stubs: ProviderStubs, client: httpx.Client
) -> None:
    env = stubs.env()
    for auth in [(env["TWILIO_ACCOUNT_SID"], "wrong"), None]:
        response = twilio_send(client, env, sms(env), auth)
        assert response.status_code == 401
        assert response.json() == {
            "code": 20003,
            "message": "Authenticate",
            "more_info": "https://www.twilio.com/docs/errors/20003",
            "status": 401,
        }
    assert stubs.received() == []
    assert stubs.requests_total == 2


def test_twilio_invalid_and_unsubscribed_numbers(
    make_stubs: MakeStubs, client: httpx.Client
) -> None:
    stubs = make_stubs(StubsConfig(twilio=TwilioConfig(unsubscribed_numbers={MEMBER})))
    env = stubs.env()
    for bad in ["0612345678", "+3100000"]:
        response = twilio_send(client, env, sms(env, to=bad), twilio_auth(env))
        assert response.status_code == 400
        assert response.json() == {
            "code": 21211,
            "message": f"The 'To' number {bad} is not a valid phone number.",
            "more_info": "https://www.twilio.com/docs/errors/21211",
            "status": 400,
        }
    response = twilio_send(client, env, sms(env), twilio_auth(env))
    assert response.status_code == 400
    assert response.json()["code"] == 21610
    assert response.json()["more_info"] == "https://www.twilio.com/docs/errors/21610"
    assert stubs.received() == []


def test_twilio_rate_limit_answers_20429_and_counts_a_violation(
    make_stubs: MakeStubs, client: httpx.Client
) -> None:
    stubs = make_stubs(StubsConfig(twilio=TwilioConfig(per_second=2)))
    env = stubs.env()
    statuses = [
        twilio_send(client, env, sms(env, body=f"melding {i}"), twilio_auth(env)) for i in range(3)
    ]
    assert [r.status_code for r in statuses] == [201, 201, 429]
    assert statuses[2].json() == {
        "code": 20429,
        "message": "Too Many Requests",
        "more_info": "https://www.twilio.com/docs/errors/20429",
        "status": 429,
    }
    assert stubs.violations()[TWILIO_LIMIT_SENDER] == 1
    assert len(stubs.received("sms")) == 2
    assert stubs.max_in_window(TWILIO_LIMIT_SENDER) == 2


def test_twilio_status_callbacks_are_signed_as_twilio_signs(
    stubs: ProviderStubs, client: httpx.Client, receiver: Receiver
) -> None:
    env = stubs.env()
    callback = f"{receiver.url}/webhooks/twilio/status?delivery_id=d-7"
    response = twilio_send(client, env, sms(env) | {"StatusCallback": callback}, twilio_auth(env))
    assert response.status_code == 201
    sid = response.json()["sid"]
    first, second = receiver.wait(2)
    for captured, status in [(first, "sent"), (second, "delivered")]:
        assert captured.path == "/webhooks/twilio/status?delivery_id=d-7"
        assert captured.headers["Content-Type"] == "application/x-www-form-urlencoded"
        params = dict(parse_qsl(captured.body.decode()))
        assert params["MessageStatus"] == status
        assert params["SmsStatus"] == status
        assert params["MessageSid"] == sid
        assert params["AccountSid"] == env["TWILIO_ACCOUNT_SID"]
        assert params["To"] == MEMBER
        assert params["From"] == env["TWILIO_FROM_NUMBER"]
        assert params["ApiVersion"] == "2010-04-01"
        # Twilio's algorithm, written out independently: URL + sorted name+value, HMAC-SHA1.
        data = callback + "".join(k + params[k] for k in sorted(params))
        mac = hmac.new(env["TWILIO_AUTH_TOKEN"].encode(), data.encode(), hashlib.sha1)
        assert captured.headers["X-Twilio-Signature"] == base64.b64encode(mac.digest()).decode()
        # And the edge's own verifier accepts it.
        edge_twilio.verify_signature(
            env["TWILIO_AUTH_TOKEN"], callback, params, captured.headers["X-Twilio-Signature"]
        )
    stubs.wait_for(lambda: stubs.ledger.callbacks().get("sms.sent") == 2, what="callbacks")


def test_twilio_callbacks_can_be_disabled_and_never_leave_loopback(
    make_stubs: MakeStubs, client: httpx.Client, receiver: Receiver
) -> None:
    stubs = make_stubs(StubsConfig(twilio=TwilioConfig(status_callbacks=False)))
    env = stubs.env()
    form = sms(env) | {"StatusCallback": f"{receiver.url}/status"}
    assert twilio_send(client, env, form, twilio_auth(env)).status_code == 201
    stubs.twilio.config.status_callbacks = True
    form = sms(env, body="tweede") | {"StatusCallback": "https://example.com/status"}
    assert twilio_send(client, env, form, twilio_auth(env)).status_code == 201
    stubs.wait_for(lambda: stubs.ledger.callbacks().get("sms.refused") == 2, what="refusals")
    assert receiver.requests == []


def test_twilio_injected_faults_are_answered_then_cleared(
    stubs: ProviderStubs, client: httpx.Client
) -> None:
    env = stubs.env()
    stubs.twilio.fail_next(1, status=503)
    stubs.twilio.fail_next(1, status=429, retry_after=2)
    first = twilio_send(client, env, sms(env), twilio_auth(env))
    assert first.status_code == 503
    assert first.json()["code"] == 20503
    second = twilio_send(client, env, sms(env), twilio_auth(env))
    assert second.status_code == 429
    assert second.json()["code"] == 20429
    assert second.headers["Retry-After"] == "2"
    assert twilio_send(client, env, sms(env), twilio_auth(env)).status_code == 201
    # Injected faults are not the caller's fault: they are no violations.
    assert stubs.violations()[TWILIO_LIMIT_SENDER] == 0
    assert len(stubs.received()) == 1


# --- Telegram --------------------------------------------------------------------------


def test_telegram_send_message_answers_a_message(
    stubs: ProviderStubs, client: httpx.Client
) -> None:
    env = stubs.env()
    response = tg_send(client, env, 4242, "Inbraak Dorpsstraat")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    result = body["result"]
    assert result["message_id"] == 1
    assert result["chat"] == {"id": 4242, "type": "private", "first_name": "Resident 4242"}
    assert result["text"] == "Inbraak Dorpsstraat"
    assert isinstance(result["date"], int)
    [delivered] = stubs.received("telegram")
    assert (delivered.recipient, delivered.text) == ("4242", "Inbraak Dorpsstraat")


def test_telegram_wrong_token_is_unauthorized(stubs: ProviderStubs, client: httpx.Client) -> None:
    env = stubs.env()
    url = f"{env['TELEGRAM_API_BASE']}/bot123:wrong/sendMessage"
    response = client.post(url, json={"chat_id": 1, "text": "x"})
    assert response.status_code == 401
    assert response.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}


def test_telegram_burst_over_30_per_second_gets_429_with_retry_after(
    frozen: ProviderStubs, client: httpx.Client
) -> None:
    # On the frozen clock the whole burst arrives in one instant, however slow the machine.
    stubs = frozen
    env = stubs.env()
    # 40 different private chats, so only the bot-wide limit (30/s) can refuse.
    responses = [tg_send(client, env, 1000 + i, "Let op") for i in range(40)]
    refused = [r for r in responses if r.status_code == 429]
    assert len(refused) == 10
    assert all(r.status_code == 200 for r in responses[:30])
    for response in refused:
        body = response.json()
        retry_after = body["parameters"]["retry_after"]
        assert body == {
            "ok": False,
            "error_code": 429,
            "description": f"Too Many Requests: retry after {retry_after}",
            "parameters": {"retry_after": retry_after},
        }
        assert retry_after == 1  # the oldest of the 30 leaves within the second
    assert stubs.violations()[TELEGRAM_LIMIT_BOT] == 10
    assert stubs.max_in_window(TELEGRAM_LIMIT_BOT) == 30
    assert len(stubs.received("telegram")) == 30
    usage = stubs.usage(TELEGRAM_LIMIT_BOT)
    assert usage.peak_share == 1.0
    assert usage.admitted == 30


def test_telegram_private_chat_one_per_second(stubs: ProviderStubs, client: httpx.Client) -> None:
    env = stubs.env()
    assert tg_send(client, env, 7, "een").status_code == 200
    second = tg_send(client, env, 7, "twee")
    assert second.status_code == 429
    assert second.json()["parameters"]["retry_after"] == 1
    assert tg_send(client, env, 8, "ander gesprek").status_code == 200
    # The window is (now - 1 s, now]: after a second the chat is free again.
    stubs.wait_for(lambda: stubs.ledger.now() - stubs.received()[0].arrived_at >= 1.0)
    assert tg_send(client, env, 7, "twee").status_code == 200
    assert stubs.violations()[TELEGRAM_LIMIT_CHAT] == 1
    assert stubs.violations()[TELEGRAM_LIMIT_BOT] == 0
    assert [m.text for m in stubs.received() if m.recipient == "7"] == ["een", "twee"]


def test_telegram_group_twenty_per_minute(
    frozen: ProviderStubs, clock: FakeClock, client: httpx.Client
) -> None:
    stubs = frozen
    env = stubs.env()
    group = -1001234567890
    responses = []
    for i in range(21):  # one every 2 s: never over 30/s, but 21 within a minute
        responses.append(tg_send(client, env, group, f"melding {i}"))
        clock.now += 2.0
    assert [r.status_code for r in responses[:20]] == [200] * 20
    assert responses[20].status_code == 429
    # The first message (at t=100) leaves the window at t=160; the 21st came at t=140.
    assert responses[20].json()["parameters"]["retry_after"] == 20
    clock.now = 160.0
    assert tg_send(client, env, group, "melding 21").status_code == 200
    assert responses[0].json()["result"]["chat"]["type"] == "supergroup"
    assert stubs.violations()[TELEGRAM_LIMIT_GROUP] == 1
    assert stubs.max_in_window(TELEGRAM_LIMIT_GROUP) == 20


def test_telegram_blocked_and_unknown_chats(make_stubs: MakeStubs, client: httpx.Client) -> None:
    config = TelegramConfig(blocked_chats={11}, unknown_chats={12})
    stubs = make_stubs(StubsConfig(telegram=config))
    env = stubs.env()
    blocked = tg_send(client, env, 11, "x")
    assert blocked.status_code == 403
    assert blocked.json() == {
        "ok": False,
        "error_code": 403,
        "description": "Forbidden: bot was blocked by the user",
    }
    unknown = tg_send(client, env, 12, "x")
    assert unknown.status_code == 400
    assert unknown.json() == {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: chat not found",
    }
    assert stubs.received() == []


def test_telegram_injected_429_and_500(stubs: ProviderStubs, client: httpx.Client) -> None:
    env = stubs.env()
    stubs.fail_next("telegram", 1, status=429, retry_after=3)
    stubs.fail_next("telegram", 1, status=500)
    first = tg_send(client, env, 1, "x")
    assert first.status_code == 429
    assert first.json()["parameters"] == {"retry_after": 3}
    assert first.json()["description"] == "Too Many Requests: retry after 3"
    second = tg_send(client, env, 2, "x")
    assert second.status_code == 500
    assert second.json() == {
        "ok": False,
        "error_code": 500,
        "description": "Internal Server Error",
    }
    assert tg_send(client, env, 3, "x").status_code == 200
    assert sum(stubs.violations().values()) == 0


async def test_concurrent_sends_are_each_recorded_once(make_stubs: MakeStubs) -> None:
    config = TelegramConfig(per_second=None, chat_per_second=None)
    stubs = make_stubs(StubsConfig(telegram=config))
    env = stubs.env()
    url = f"{env['TELEGRAM_API_BASE']}/bot{env['TELEGRAM_BOT_TOKEN']}/sendMessage"
    limits = httpx.Limits(max_connections=8)
    async with httpx.AsyncClient(trust_env=False, limits=limits, timeout=10.0) as client:
        responses = await asyncio.gather(
            *(client.post(url, json={"chat_id": 10_000 + i, "text": "Brand"}) for i in range(200))
        )
    assert all(r.status_code == 200 for r in responses)
    assert stubs.requests_total == 200
    counts = stubs.counts_by_recipient("telegram")
    assert len(counts) == 200
    assert set(counts.values()) == {1}
    assert stubs.duplicates() == []
    arrivals = [m.arrived_at for m in stubs.received()]
    assert arrivals == sorted(arrivals)


def test_duplicates_are_same_text_to_same_recipient(
    make_stubs: MakeStubs, client: httpx.Client
) -> None:
    config = TelegramConfig(chat_per_second=None)
    stubs = make_stubs(StubsConfig(telegram=config))
    env = stubs.env()
    for text in ["Alert A", "Alert B", "Alert A"]:
        assert tg_send(client, env, 5, text).status_code == 200
    assert tg_send(client, env, 6, "Alert A").status_code == 200
    [duplicate] = stubs.duplicates()
    assert (duplicate.recipient, duplicate.text, duplicate.count) == ("5", "Alert A", 2)
    assert stubs.counts_by_recipient("telegram") == {("telegram", "5"): 3, ("telegram", "6"): 1}


# --- WhatsApp --------------------------------------------------------------------------


def test_whatsapp_free_text_outside_the_window_is_131047(
    stubs: ProviderStubs, client: httpx.Client
) -> None:
    env = stubs.env()
    response = wa_send(client, env, wa_text(MEMBER_WA, "Let op"))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 131047
    assert error["message"] == "(#131047) Re-engagement message"
    assert error["type"] == "OAuthException"
    assert error["error_data"]["messaging_product"] == "whatsapp"
    assert "24 hours" in error["error_data"]["details"]
    assert error["fbtrace_id"]
    assert stubs.received() == []


def test_whatsapp_template_is_accepted_and_recorded(
    stubs: ProviderStubs, client: httpx.Client
) -> None:
    env = stubs.env()
    response = wa_send(client, env, wa_template("+" + MEMBER_WA, ["Inbraak", "Stein"], "d-9"))
    assert response.status_code == 200
    body = response.json()
    assert body["messaging_product"] == "whatsapp"
    assert body["contacts"] == [{"input": "+" + MEMBER_WA, "wa_id": MEMBER_WA}]
    [message] = body["messages"]
    assert message["id"].startswith("wamid.")
    assert message["message_status"] == "accepted"
    [delivered] = stubs.received("whatsapp")
    assert delivered.recipient == MEMBER_WA
    assert delivered.text == "Inbraak\nStein"
    assert delivered.delivery_id == "d-9"
    assert delivered.provider_id == message["id"]
    assert delivered.meta["template"] == "buurtalert_melding"


def test_whatsapp_text_inside_the_window_is_accepted(
    make_stubs: MakeStubs, client: httpx.Client
) -> None:
    stubs = make_stubs(StubsConfig(whatsapp=WhatsAppConfig(in_session={MEMBER_WA})))
    env = stubs.env()
    response = wa_send(client, env, wa_text(MEMBER_WA, "Antwoord"))
    assert response.status_code == 200
    assert "message_status" not in response.json()["messages"][0]
    assert wa_send(client, env, wa_text(OTHER_WA, "Antwoord")).json()["error"]["code"] == 131047


def test_whatsapp_wrong_token_is_graph_oauth_error(
    stubs: ProviderStubs, client: httpx.Client
) -> None:
    env = stubs.env()
    response = wa_send(client, env, wa_template(MEMBER_WA, ["x"]), token="nope")
    assert response.status_code == 401
    error = response.json()["error"]
    assert (error["code"], error["type"]) == (190, "OAuthException")
    assert error["fbtrace_id"]


def test_whatsapp_invalid_recipient_is_131026(make_stubs: MakeStubs, client: httpx.Client) -> None:
    stubs = make_stubs(StubsConfig(whatsapp=WhatsAppConfig(invalid_numbers={OTHER_WA})))
    env = stubs.env()
    for to in [OTHER_WA, "12345"]:
        response = wa_send(client, env, wa_template(to, ["x"]))
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == 131026
        assert error["message"] == "(#131026) Message Undeliverable"
    assert stubs.received() == []


def test_whatsapp_throughput_and_pair_limits(make_stubs: MakeStubs, client: httpx.Client) -> None:
    config = WhatsAppConfig(per_second=3, pair_limit=1, pair_window_s=6.0)
    stubs = make_stubs(StubsConfig(whatsapp=config))
    env = stubs.env()
    assert wa_send(client, env, wa_template(MEMBER_WA, ["a"])).status_code == 200
    pair = wa_send(client, env, wa_template(MEMBER_WA, ["b"]))
    assert pair.status_code == 400
    assert pair.json()["error"]["code"] == 131056
    assert wa_send(client, env, wa_template(OTHER_WA, ["a"])).status_code == 200
    assert wa_send(client, env, wa_template("31612345679", ["a"])).status_code == 200
    throughput = wa_send(client, env, wa_template("31612345670", ["a"]))
    # Meta lists 130429 with HTTP 400 (not 429).
    assert throughput.status_code == 400
    assert throughput.json()["error"]["code"] == 130429
    assert throughput.json()["error"]["message"] == "(#130429) Rate limit hit"
    assert stubs.violations()[WHATSAPP_LIMIT_PAIR] == 1
    assert stubs.violations()[WHATSAPP_LIMIT_THROUGHPUT] == 1
    assert len(stubs.received()) == 3


def test_whatsapp_status_webhooks_are_signed_and_echo_the_opaque_data(
    make_stubs: MakeStubs, client: httpx.Client, receiver: Receiver
) -> None:
    secret = "the-edge-app-secret"
    config = WhatsAppConfig(webhook_url=f"{receiver.url}/webhooks/whatsapp", app_secret=secret)
    stubs = make_stubs(StubsConfig(whatsapp=config))
    env = stubs.env()
    response = wa_send(client, env, wa_template(MEMBER_WA, ["x"], opaque="d-77"))
    wamid = response.json()["messages"][0]["id"]
    captured = receiver.wait(2)
    statuses: list[edge_whatsapp.WhatsAppStatus] = []
    for item in captured:
        assert item.path == "/webhooks/whatsapp"
        expected = "sha256=" + hmac.new(secret.encode(), item.body, hashlib.sha256).hexdigest()
        assert item.headers["X-Hub-Signature-256"] == expected
        edge_whatsapp.verify_signature(secret, item.body, item.headers["X-Hub-Signature-256"])
        webhook = edge_whatsapp.parse_webhook(item.body)
        statuses.extend(edge_whatsapp.statuses(webhook))
        value = json.loads(item.body)["entry"][0]["changes"][0]["value"]
        assert value["metadata"]["phone_number_id"] == env["WHATSAPP_PHONE_NUMBER_ID"]
    assert [s.status for s in statuses] == ["sent", "delivered"]
    assert {(s.id, s.recipient_id, s.biz_opaque_callback_data) for s in statuses} == {
        (wamid, MEMBER_WA, "d-77")
    }


# --- SMTP ------------------------------------------------------------------------------


def test_smtp_records_envelope_headers_and_body(stubs: ProviderStubs) -> None:
    env = stubs.env()
    with smtplib.SMTP(env["SMTP_HOST"], int(env["SMTP_PORT"]), timeout=10) as smtp:
        refused = smtp.send_message(email("Bewoner@Example.NL"), from_addr=env["SMTP_FROM"])
    assert refused == {}
    [delivered] = stubs.received("email")
    assert delivered.recipient == "bewoner@example.nl"
    assert delivered.subject == "Melding"
    assert delivered.text == "Let op: verdachte auto"
    assert delivered.provider_id == "<d-1@buurtalert.test>"
    assert delivered.delivery_id == "d-1"
    assert delivered.meta["mail_from"] == env["SMTP_FROM"]


def test_smtp_rejects_configured_mailbox_with_550(make_stubs: MakeStubs) -> None:
    stubs = make_stubs(StubsConfig(smtp=SmtpConfig(rejected_addresses={"Weg@Example.nl"})))
    env = stubs.env()
    with (
        smtplib.SMTP(env["SMTP_HOST"], int(env["SMTP_PORT"]), timeout=10) as smtp,
        pytest.raises(smtplib.SMTPRecipientsRefused) as caught,
    ):
        smtp.send_message(email("weg@example.nl"))
    code, reply = caught.value.recipients["weg@example.nl"]
    assert code == 550
    assert reply.startswith(b"5.1.1")
    assert stubs.received() == []


async def test_smtp_transient_failure_and_rate_limit_with_aiosmtplib(
    make_stubs: MakeStubs,
) -> None:
    stubs = make_stubs(StubsConfig(smtp=SmtpConfig(per_second=2)))
    env = stubs.env()
    stubs.smtp.fail_next(1, status=451)
    async with aiosmtplib.SMTP(hostname=env["SMTP_HOST"], port=int(env["SMTP_PORT"])) as smtp:
        with pytest.raises(aiosmtplib.SMTPDataError) as transient:
            await smtp.send_message(email("a@example.nl"))
        assert transient.value.code == 451
        assert "4.3.0" in transient.value.message
        for to in ["a@example.nl", "b@example.nl"]:
            await smtp.send_message(email(to))
        with pytest.raises(aiosmtplib.SMTPDataError) as limited:
            await smtp.send_message(email("c@example.nl"))
        assert limited.value.code == 451
        assert "4.7.1" in limited.value.message
    assert [m.recipient for m in stubs.received("email")] == ["a@example.nl", "b@example.nl"]
    assert stubs.violations()[SMTP_LIMIT_RATE] == 1


# --- the ledger on its own (a fake clock, no sockets) ----------------------------------


def test_sliding_window_counts_every_window_not_calendar_seconds() -> None:
    clock = FakeClock()
    ledger = Ledger(clock)
    limit = Limit("x", 2, 1.0)
    assert ledger.admit([(limit, "k")])[1] is None  # t=100.0
    clock.now = 100.9
    assert ledger.admit([(limit, "k")])[1] is None
    clock.now = 101.1  # a calendar-second limiter would allow this; (100.1, 101.1] holds 1
    assert ledger.admit([(limit, "k")])[1] is None
    clock.now = 101.5  # (100.5, 101.5] already holds 100.9 and 101.1
    _, refusal = ledger.admit([(limit, "k")])
    assert refusal is not None
    assert refusal.limit_names == ("x",)
    assert refusal.retry_after_s == pytest.approx(0.4)  # when 100.9 leaves the window
    clock.now = 101.9  # exactly one window after 100.9: that arrival has left
    assert ledger.admit([(limit, "k")])[1] is None
    assert ledger.violations() == {"x": 1}
    assert ledger.max_in_window("x") == 2


def test_refused_requests_charge_no_limit() -> None:
    clock = FakeClock()
    ledger = Ledger(clock)
    bot, chat = Limit("bot", 10, 1.0), Limit("chat", 1, 1.0)
    assert ledger.admit([(bot, "b"), (chat, "1")])[1] is None
    for _ in range(5):
        assert ledger.admit([(bot, "b"), (chat, "1")])[1] is not None
    assert ledger.usage("bot").admitted == 1
    assert ledger.violations() == {"bot": 0, "chat": 5}


def test_refusals_say_when_and_which_sends_filled_the_window() -> None:
    clock = FakeClock()
    ledger = Ledger(clock)
    chat = Limit("chat", 1, 1.0)
    clock.now = 100.0
    assert ledger.admit([(chat, "7")])[1] is None
    clock.now = 100.6
    assert ledger.admit([(chat, "7")])[1] is not None
    assert ledger.refusals() == [
        {"limit": "chat", "key": "7", "at": 100.6, "nearby_s": [pytest.approx(-0.6)]}
    ]
    assert ledger.summary()["refusals"] == ledger.refusals()
    ledger.reset()
    assert ledger.refusals() == []


def test_usage_reports_peak_and_mean_share() -> None:
    clock = FakeClock()
    ledger = Ledger(clock)
    limit = Limit("x", 10, 1.0)
    for i in range(21):  # 20 intervals of 0.2 s: 5 per second, half the limit
        clock.now = 100.0 + i * 0.2
        assert ledger.admit([(limit, "k")])[1] is None
    usage = ledger.usage("x")
    assert usage.max_in_window == 5
    assert usage.peak_share == pytest.approx(0.5)
    assert usage.mean_share == pytest.approx(0.5)
    assert usage.busiest_key_admitted == 21


def test_a_late_handler_is_checked_against_every_window_holding_its_arrival() -> None:
    # Arrivals are read times; a handler that ran late admits an earlier arrival after later
    # ones, and every window holding it counts, not only the one ending at it.
    ledger = Ledger(FakeClock())
    limit = Limit("x", 2, 1.0)
    assert ledger.admit([(limit, "k")], at=101.0) == (101.0, None)
    assert ledger.admit([(limit, "k")], at=101.5)[1] is None
    _, refusal = ledger.admit([(limit, "k")], at=100.6)  # (100.5, 101.5] would hold three
    assert refusal is not None
    assert refusal.retry_after_s == pytest.approx(1.4)  # at 102.0, 101.0 has left
    assert ledger.admit([(limit, "k")], at=99.9)[1] is None  # no window holds it and 101.0
    assert ledger.admit([(limit, "k")], at=100.5)[1] is None  # (100.5, 101.5] leaves it out
    assert ledger.admit([(limit, "k")], at=100.2)[1] is not None  # (99.5, 100.5] holds 99.9
    assert ledger.violations() == {"x": 2}
    assert ledger.max_in_window("x") == 2
    assert ledger.usage("x").admitted == 4


def test_arrival_is_when_the_request_was_read_not_when_its_handler_ran(
    client: httpx.Client, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    stubs = ProviderStubs(clock=clock)
    app = stubs.telegram.app

    async def busy_loop(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            clock.now += 5.0  # the handler runs 5 s after the read: the loop was busy
        await app(scope, receive, send)

    monkeypatch.setattr(stubs.telegram, "app", busy_loop)
    with stubs:
        env = stubs.env()
        assert tg_send(client, env, 77, "een").status_code == 200
        assert tg_send(client, env, 78, "twee").status_code == 200
        delivered = stubs.received("telegram")
    # Read at 100 and 105, handled at 105 and 110: the stub meters what reached its edge.
    assert [m.arrived_at for m in delivered] == [100.0, 105.0]
    assert clock.now == 110.0


def test_duplicate_deliveries_and_reset() -> None:
    ledger = Ledger()
    for text in ["A", "A"]:
        ledger.record(Delivered("sms", MEMBER, text, "SM1", 1.0, delivery_id="d-1"))
    assert ledger.duplicate_deliveries() == {"d-1": 2}
    ledger.reset()
    assert ledger.received() == []
    assert ledger.duplicate_deliveries() == {}


# --- subprocess mode -------------------------------------------------------------------


def test_stubs_run_as_a_separate_process(client: httpx.Client) -> None:
    config = StubsConfig(telegram=TelegramConfig(chat_per_second=1))
    with spawn_stubs(config) as remote:
        env = remote.env()
        assert tg_send(client, env, 77, "hallo").status_code == 200
        assert tg_send(client, env, 77, "hallo").status_code == 429
        remote.fail_next("telegram", 1, status=502)
        assert remote.faults_pending("telegram") == 1
        assert tg_send(client, env, 78, "hallo").status_code == 502
        assert remote.faults_pending("telegram") == 0
        remote.configure("telegram", blocked_chats=[79])
        assert tg_send(client, env, 79, "hallo").status_code == 403
        [delivered] = remote.received("telegram")
        assert (delivered.recipient, delivered.text) == ("77", "hallo")
        # Each provider is its own process (as each is another company's server); RemoteStubs
        # reads and steers them as one.
        assert len(set(remote.pids.values())) == 4
        assert {"TWILIO_API_BASE", "WHATSAPP_API_BASE", "SMTP_PORT"} <= set(env)
        assert twilio_send(client, env, sms(env), twilio_auth(env)).status_code == 201
        assert [m.channel for m in remote.received()] == ["telegram", "sms"]
        assert remote.summary()["received_by_channel"] == {"telegram": 1, "sms": 1}
        assert set(remote.violations()) >= {
            TELEGRAM_LIMIT_BOT,
            TWILIO_LIMIT_SENDER,
            WHATSAPP_LIMIT_THROUGHPUT,
            SMTP_LIMIT_RATE,
        }
        assert remote.violations()[TELEGRAM_LIMIT_CHAT] == 1
        assert remote.requests_total == 5
        # 77 and the blocked 79 passed the limiter; the refused and the injected did not.
        assert remote.usage(TELEGRAM_LIMIT_BOT).admitted == 2
        remote.reset()
        assert remote.received() == []
