"""Outbound adapters: request building and answer classification per provider, no network.

HTTP adapters run against httpx.MockTransport (no sockets); the e-mail adapter's one real send
goes to an aiosmtpd server on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import math
import string
from collections.abc import Callable, Iterator
from email import message_from_bytes
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiosmtplib
import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from hypothesis import given, settings
from hypothesis import strategies as st

from buurtalert.embedded import free_port
from services.notifier.channels import email, telegram, twilio, whatsapp
from services.notifier.channels.base import (
    ChannelSender,
    OutboundMessage,
    SendAbandoned,
    SendPermanent,
    SendTransient,
    Sent,
    request_failure,
)
from services.notifier.channels.registry import build_senders, configured_channels
from shared.settings import NotifierSettings

pytestmark = pytest.mark.unit

Result = Sent | SendTransient | SendPermanent
Classifier = Callable[[int, Any, str | None], Result]
IA = "permanent invalid_address"
RL = "transient rate_limited"
SE = "transient server_error"

_NO_PROVIDERS: dict[str, object] = {
    "twilio_api_base": "https://twilio.invalid",
    "twilio_account_sid": "",
    "twilio_auth_token": "",
    "twilio_from_number": "",
    "telegram_api_base": "https://telegram.invalid",
    "telegram_bot_token": "",
    "whatsapp_api_base": "https://graph.invalid",
    "whatsapp_api_version": "v21.0",
    "whatsapp_phone_number_id": "",
    "whatsapp_token": "",
    "whatsapp_template_name": "buurtalert_melding",
    "whatsapp_template_language": "nl",
    "smtp_host": "",
    "smtp_port": 587,
    "smtp_username": "",
    "smtp_password": "",
    "smtp_starttls": False,
    "smtp_from": "Buurtalert <alerts@buurtalert.test>",
    "public_url": "https://edge.buurtalert.test/",
    "provider_timeout_s": 2.0,
    "send_concurrency": 4,
}
_ALL_PROVIDERS: dict[str, object] = {
    **_NO_PROVIDERS,
    "twilio_account_sid": "AC123",
    "twilio_auth_token": "tw-secret",
    "twilio_from_number": "+3197010000000",
    "telegram_bot_token": "123:tg-secret",
    "whatsapp_phone_number_id": "1055",
    "whatsapp_token": "wa-secret",
    "smtp_host": "127.0.0.1",
}


def make_settings(**overrides: object) -> NotifierSettings:
    """Settings with every provider value explicit, so the runner's environment cannot leak in."""
    return NotifierSettings.model_validate({**_ALL_PROVIDERS, **overrides})


def msg(**kw: Any) -> OutboundMessage:
    base: dict[str, Any] = {
        "delivery_id": "a1.sms.r9",
        "channel": "sms",
        "address": "+31612345678",
        "text": "Melding uit de buurt: Inbraak\n112 is gebeld.",
    }
    base.update(kw)
    return OutboundMessage(**base)


def describe(result: Result) -> str:
    """An outcome as a short string, so a classification table fits one row per answer."""
    if isinstance(result, Sent):
        return f"sent {result.provider_message_id}".strip()
    if isinstance(result, SendTransient):
        after = "" if result.retry_after_s is None else f" {result.retry_after_s:g}"
        return f"transient {result.reason}{after}"
    return f"permanent {result.reason}"


# --- Twilio ---------------------------------------------------------------------------------


def test_twilio_request_shape() -> None:
    s = make_settings()
    req = twilio.build_request(s, msg(delivery_id="a1:sms/r9"))
    assert req.url == "https://twilio.invalid/2010-04-01/Accounts/AC123/Messages.json"
    assert req.auth == ("AC123", "tw-secret")
    assert req.form["To"] == "+31612345678"
    assert req.form["From"] == "+3197010000000"
    assert req.form["Body"] == "Melding uit de buurt: Inbraak\n112 is gebeld."
    callback = urlsplit(req.form["StatusCallback"])
    assert (callback.scheme, callback.netloc, callback.path) == (
        "https",
        "edge.buurtalert.test",
        "/webhooks/twilio/status",
    )
    assert parse_qs(callback.query) == {"d": ["a1:sms/r9"]}


def test_twilio_body_is_cut_to_the_api_limit() -> None:
    req = twilio.build_request(make_settings(), msg(text="x" * 5000))
    assert len(req.form["Body"]) == twilio.BODY_MAX
    assert req.form["Body"].endswith("...")


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "expected"),
    [
        (201, {"sid": "SM1", "status": "queued"}, None, "sent SM1"),
        (200, {"sid": "SM2"}, None, "sent SM2"),
        (201, None, None, "sent"),  # accepted without a SID: never retried (would duplicate)
        (429, {"code": 20429, "message": "Too Many Requests"}, "7", "transient rate_limited 7"),
        (400, {"code": 20429}, None, "transient rate_limited"),
        (429, None, "Wed, 21 Oct 2015 07:28:00 GMT", "transient rate_limited"),
        (429, None, "-3", "transient rate_limited"),
        (500, None, None, "transient server_error"),
        (503, {"code": 20500}, "30", "transient server_error 30"),
        (400, {"code": 21211, "message": "Invalid 'To' Phone Number"}, None, IA),
        (400, {"code": 21614, "message": "'To' number is not a valid mobile number"}, None, IA),
        (400, {"code": 21612, "message": "'To' number is not currently reachable"}, None, IA),
        (
            400,
            {"code": 21610, "message": "Attempt to send to unsubscribed recipient"},
            None,
            "permanent opted_out",
        ),
        (401, {"code": 20003, "message": "Authenticate"}, None, "permanent auth"),
        (401, None, None, "permanent auth"),
        (403, {"code": 20003}, None, "permanent auth"),
        (400, {"code": 21606}, None, "permanent rejected"),
        (404, {"code": 20404}, None, "permanent rejected"),
        (400, {"code": True}, None, "permanent rejected"),
        (302, None, None, "transient server_error"),
    ],
)
def test_twilio_classification(
    status: int, body: Any, retry_after: str | None, expected: str
) -> None:
    assert describe(twilio.classify(status, body, retry_after)) == expected


# --- Telegram -------------------------------------------------------------------------------


def test_telegram_request_shape() -> None:
    req = telegram.build_request(make_settings(), msg(channel="telegram", address="-100123"))
    assert req.url == "https://telegram.invalid/bot123:tg-secret/sendMessage"
    assert req.json == {
        "chat_id": -100123,
        "text": "Melding uit de buurt: Inbraak\n112 is gebeld.",
        "disable_web_page_preview": True,
    }
    named = telegram.build_request(make_settings(), msg(channel="telegram", address="@buurt"))
    assert named.json["chat_id"] == "@buurt"
    long = telegram.build_request(make_settings(), msg(channel="telegram", text="y" * 5000))
    assert len(long.json["text"]) == telegram.TEXT_MAX


def _tg_error(code: int, description: str, **parameters: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return body


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "expected"),
    [
        (200, {"ok": True, "result": {"message_id": 42}}, None, "sent 42"),
        (
            429,
            _tg_error(429, "Too Many Requests: retry after 34", retry_after=34),
            None,
            "transient rate_limited 34",
        ),
        (429, _tg_error(429, "Too Many Requests"), "5", "transient rate_limited 5"),
        (429, _tg_error(429, "Too Many Requests: retry after 8"), None, "transient rate_limited 8"),
        (429, _tg_error(429, "Too Many Requests", retry_after=10**400), None, RL),
        (502, None, None, "transient server_error"),
        (500, _tg_error(500, "Internal Server Error"), None, "transient server_error"),
        (403, _tg_error(403, "Forbidden: bot was blocked by the user"), None, "permanent blocked"),
        (403, _tg_error(403, "Forbidden: user is deactivated"), None, "permanent blocked"),
        (400, _tg_error(400, "Bad Request: chat not found"), None, IA),
        (200, _tg_error(400, "Bad Request: chat not found"), None, IA),  # error_code wins
        (401, _tg_error(401, "Unauthorized"), None, "permanent auth"),
        (404, _tg_error(404, "Not Found"), None, "permanent auth"),  # malformed token in path
        (400, _tg_error(400, "Bad Request: message text is empty"), None, "permanent rejected"),
        (409, _tg_error(409, "Conflict"), None, "permanent rejected"),
        (
            403,
            _tg_error(403, "Forbidden: bot can't send messages to bots"),
            None,
            "permanent rejected",
        ),
    ],
)
def test_telegram_classification(
    status: int, body: Any, retry_after: str | None, expected: str
) -> None:
    assert describe(telegram.classify(status, body, retry_after)) == expected


def test_telegram_group_migration_names_the_new_chat() -> None:
    body = _tg_error(
        400,
        "Bad Request: group chat was upgraded to a supergroup chat",
        migrate_to_chat_id=-1001234567890,
    )
    result = telegram.classify(400, body)
    assert isinstance(result, telegram.ChatMigrated)
    assert result.reason == "rejected"
    assert result.new_chat_id == "-1001234567890"
    assert "-1001234567890" in result.detail


# --- WhatsApp -------------------------------------------------------------------------------


def test_whatsapp_text_inside_the_window() -> None:
    req = whatsapp.build_request(
        make_settings(), msg(channel="whatsapp", delivery_id="d-7", in_session=True)
    )
    assert req.url == "https://graph.invalid/v21.0/1055/messages"
    assert req.headers == {"Authorization": "Bearer wa-secret"}
    assert req.json == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "31612345678",
        "biz_opaque_callback_data": "d-7",
        "type": "text",
        "text": {"preview_url": False, "body": "Melding uit de buurt: Inbraak\n112 is gebeld."},
    }


def test_whatsapp_template_outside_the_window() -> None:
    req = whatsapp.build_request(make_settings(), msg(channel="whatsapp", delivery_id="d-8"))
    assert req.json["type"] == "template"
    assert "text" not in req.json
    assert req.json["biz_opaque_callback_data"] == "d-8"
    assert req.json["template"] == {
        "name": "buurtalert_melding",
        "language": {"code": "nl"},
        "components": [
            {
                "type": "body",
                "parameters": [
                    {"type": "text", "text": "Melding uit de buurt: Inbraak | 112 is gebeld."}
                ],
            }
        ],
    }


@given(st.text(max_size=3000))
def test_whatsapp_template_parameter_obeys_meta_rules(text: str) -> None:
    param = whatsapp.template_parameter(text)
    assert len(param) <= whatsapp.TEMPLATE_PARAM_MAX
    assert "\n" not in param
    assert "\t" not in param
    assert "     " not in param


def _graph_error(code: int, details: str = "", message: str = "") -> dict[str, Any]:
    return {
        "error": {
            "message": message or f"(#{code}) error",
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details},
            "fbtrace_id": "A1",
        }
    }


_WA_OK = {"messaging_product": "whatsapp", "messages": [{"id": "wamid.HBg1"}]}
_WINDOW = "More than 24 hours have passed since the recipient last replied to the sender number."


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "expected"),
    [
        (200, _WA_OK, None, "sent wamid.HBg1"),
        (400, _graph_error(130429, "too many messages sent from this phone number"), None, RL),
        (
            400,
            _graph_error(131056, "(Business Account, Consumer Account) pair rate limit"),
            None,
            RL,
        ),
        (400, _graph_error(80007), None, RL),
        (400, _graph_error(4), "12", "transient rate_limited 12"),
        (429, None, None, RL),
        (400, _graph_error(131047, _WINDOW), None, "permanent outside_window"),
        (400, _graph_error(131026, "Message Undeliverable."), None, IA),
        (400, _graph_error(131030, "Recipient phone number not in allowed list"), None, IA),
        (
            400,
            _graph_error(131009, "Recipient phone number is not a valid WhatsApp number"),
            None,
            IA,
        ),
        (400, _graph_error(131009, "Parameter components is invalid"), None, "permanent rejected"),
        (400, _graph_error(131050), None, "permanent opted_out"),
        (401, _graph_error(190, "Error validating access token"), None, "permanent auth"),
        (401, None, None, "permanent auth"),
        (403, _graph_error(10, "Application does not have permission"), None, "permanent auth"),
        (500, None, None, SE),
        (400, _graph_error(131000, "Something went wrong"), None, SE),
        (503, _graph_error(131016), None, SE),
        (500, _graph_error(1), None, SE),
        (400, _graph_error(2), None, SE),
        (400, _graph_error(100, "Invalid parameter"), None, "permanent rejected"),
        (400, _graph_error(132001, "Template name does not exist"), None, "permanent rejected"),
    ],
)
def test_whatsapp_classification(
    status: int, body: Any, retry_after: str | None, expected: str
) -> None:
    assert describe(whatsapp.classify(status, body, retry_after)) == expected


def test_whatsapp_outside_window_is_retried_as_template_only_once() -> None:
    outside = whatsapp.classify(400, _graph_error(131047))
    assert isinstance(outside, SendPermanent)
    free_text = msg(channel="whatsapp", in_session=True)
    assert whatsapp.needs_template(outside, free_text)
    template = whatsapp.as_template(free_text)
    assert not template.in_session
    assert template.delivery_id == free_text.delivery_id
    # A template that itself fails is final: no loop.
    assert not whatsapp.needs_template(outside, template)
    assert not whatsapp.needs_template(SendPermanent("rejected"), free_text)


# --- Adapters over httpx.MockTransport ------------------------------------------------------

Handler = Callable[[httpx.Request], httpx.Response]


def _sender(channel: str, handler: Handler) -> ChannelSender:
    transport = httpx.MockTransport(handler)
    s = make_settings()
    if channel == "sms":
        return twilio.TwilioSmsSender(s, transport=transport)
    if channel == "telegram":
        return telegram.TelegramSender(s, transport=transport)
    return whatsapp.WhatsAppSender(s, transport=transport)


_OK: dict[str, tuple[int, dict[str, Any], str]] = {
    "sms": (201, {"sid": "SMok"}, "SMok"),
    "telegram": (200, {"ok": True, "result": {"message_id": 7}}, "7"),
    "whatsapp": (200, {"messages": [{"id": "wamid.ok"}]}, "wamid.ok"),
}
_RATE_LIMITED: dict[str, httpx.Response] = {
    "sms": httpx.Response(429, json={"code": 20429, "status": 429}, headers={"Retry-After": "3"}),
    "telegram": httpx.Response(429, json=_tg_error(429, "Too Many Requests", retry_after=3)),
    "whatsapp": httpx.Response(429, json=_graph_error(130429), headers={"Retry-After": "3"}),
}
CHANNELS = ["sms", "telegram", "whatsapp"]


@pytest.mark.parametrize("channel", CHANNELS)
async def test_adapter_success(channel: str) -> None:
    seen: list[httpx.Request] = []
    status, body, expected = _OK[channel]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body)

    sender = _sender(channel, handler)
    assert sender.name == channel
    try:
        sent = await sender.send(msg(channel=channel, address="+31612345678"))
    finally:
        await sender.aclose()
    assert sent == Sent(expected)
    (request,) = seen
    assert request.method == "POST"
    if channel == "sms":
        assert request.url.path == "/2010-04-01/Accounts/AC123/Messages.json"
        basic = base64.b64encode(b"AC123:tw-secret").decode()
        assert request.headers["Authorization"] == f"Basic {basic}"
        form = parse_qs(request.content.decode())
        assert form["To"] == ["+31612345678"]
        assert form["StatusCallback"] == [
            "https://edge.buurtalert.test/webhooks/twilio/status?d=a1.sms.r9"
        ]
    elif channel == "telegram":
        assert request.url.path == "/bot123:tg-secret/sendMessage"
        assert json.loads(request.content)["text"].startswith("Melding uit de buurt")
    else:
        assert request.url.path == "/v21.0/1055/messages"
        assert request.headers["Authorization"] == "Bearer wa-secret"
        assert json.loads(request.content)["to"] == "31612345678"


@pytest.mark.parametrize("channel", CHANNELS)
async def test_adapter_rate_limited_carries_retry_after(channel: str) -> None:
    sender = _sender(channel, lambda _request: _RATE_LIMITED[channel])
    try:
        with pytest.raises(SendTransient) as caught:
            await sender.send(msg(channel=channel))
    finally:
        await sender.aclose()
    assert caught.value.reason == "rate_limited"
    assert caught.value.retry_after_s == 3.0


@pytest.mark.parametrize("channel", CHANNELS)
async def test_adapter_server_error_is_transient(channel: str) -> None:
    sender = _sender(channel, lambda _request: httpx.Response(500, text="<html>oops</html>"))
    try:
        with pytest.raises(SendTransient) as caught:
            await sender.send(msg(channel=channel))
    finally:
        await sender.aclose()
    assert caught.value.reason == "server_error"


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (httpx.ReadTimeout("slow"), "timeout"),
        (httpx.ConnectTimeout("slow"), "timeout"),
        (httpx.ConnectError("refused"), "network"),
        (httpx.RemoteProtocolError("eof"), "network"),
    ],
)
async def test_adapter_network_failures_are_transient(
    channel: str, error: httpx.RequestError, reason: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    sender = _sender(channel, handler)
    try:
        with pytest.raises(SendTransient) as caught:
            await sender.send(msg(channel=channel))
    finally:
        await sender.aclose()
    assert caught.value.reason == reason
    # The detail names the error type only: never a URL (with its token) or an address.
    assert "secret" not in str(caught.value)
    assert "3161" not in str(caught.value)


@pytest.mark.parametrize(
    ("error", "may_have_arrived"),
    [
        (httpx.ConnectError("refused"), False),
        (httpx.ConnectTimeout("slow"), False),
        (httpx.PoolTimeout("busy"), False),
        (httpx.ReadTimeout("slow"), True),
        (httpx.WriteTimeout("slow"), True),
        (httpx.RemoteProtocolError("eof"), True),
        (httpx.ReadError("reset"), True),
    ],
)
def test_only_a_request_never_written_is_certainly_not_with_the_provider(
    error: httpx.RequestError, may_have_arrived: bool
) -> None:
    failure = request_failure(error)
    assert failure.may_have_arrived is may_have_arrived
    assert failure.reason == ("timeout" if isinstance(error, httpx.TimeoutException) else "network")


async def test_adapter_permanent_failure_is_raised() -> None:
    body = {"code": 21610, "message": "Attempt to send to unsubscribed recipient"}
    sender = _sender("sms", lambda _request: httpx.Response(400, json=body))
    try:
        with pytest.raises(SendPermanent) as caught:
            await sender.send(msg())
    finally:
        await sender.aclose()
    assert caught.value.reason == "opted_out"


async def test_whatsapp_falls_back_to_template_when_the_window_closed() -> None:
    kinds: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        kind = json.loads(request.content)["type"]
        kinds.append(kind)
        if kind == "text":
            return httpx.Response(400, json=_graph_error(131047))
        return httpx.Response(200, json={"messages": [{"id": "wamid.tpl"}]})

    sender = _sender("whatsapp", handler)
    try:
        sent = await whatsapp.send_with_template_fallback(
            sender, msg(channel="whatsapp", in_session=True)
        )
    finally:
        await sender.aclose()
    assert kinds == ["text", "template"]
    assert sent == Sent("wamid.tpl")


async def test_whatsapp_template_refusal_is_final() -> None:
    kinds: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        kinds.append(json.loads(request.content)["type"])
        return httpx.Response(400, json=_graph_error(131047))

    sender = _sender("whatsapp", handler)
    try:
        with pytest.raises(SendPermanent) as caught:
            await whatsapp.send_with_template_fallback(sender, msg(channel="whatsapp"))
    finally:
        await sender.aclose()
    assert caught.value.reason == "outside_window"
    assert kinds == ["template"]  # no loop: a template was already the fallback


# --- Classification never escapes its three outcomes ----------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
# Provider-shaped bodies reach the deeper branches that random dictionaries rarely hit.
provider_bodies = json_values | st.fixed_dictionaries(
    {},
    optional={
        "sid": json_values,
        "code": st.integers() | json_values,
        "ok": json_values,
        "error_code": st.integers() | json_values,
        "description": json_values,
        "result": st.fixed_dictionaries({}, optional={"message_id": json_values}),
        "parameters": st.fixed_dictionaries(
            {}, optional={"retry_after": json_values, "migrate_to_chat_id": json_values}
        ),
        "messages": st.lists(st.fixed_dictionaries({}, optional={"id": json_values})),
        "error": st.fixed_dictionaries(
            {},
            optional={
                "code": st.sampled_from([4, 190, 131009, 131047, 130429]) | json_values,
                "message": json_values,
                "error_data": st.fixed_dictionaries({}, optional={"details": json_values}),
            },
        ),
    },
)
CLASSIFIERS: list[Classifier] = [twilio.classify, telegram.classify, whatsapp.classify]


@pytest.mark.parametrize("classify", CLASSIFIERS)
@settings(max_examples=300, deadline=None)
@given(
    status=st.integers(min_value=100, max_value=599),
    body=provider_bodies,
    retry_after=st.none() | st.text(max_size=12) | st.integers().map(str),
)
def test_classification_is_total(
    classify: Classifier, status: int, body: Any, retry_after: str | None
) -> None:
    result = classify(status, body, retry_after)
    assert isinstance(result, Sent | SendTransient | SendPermanent)
    if isinstance(result, SendTransient) and result.retry_after_s is not None:
        assert math.isfinite(result.retry_after_s)
        assert result.retry_after_s >= 0


@given(code=st.integers(), stage=st.sampled_from(["sender", "recipient", "data", "other"]))
def test_smtp_reply_classification_is_total(code: int, stage: email.SmtpStage) -> None:
    assert isinstance(email.classify_reply(code, stage), SendTransient | SendPermanent)


# --- E-mail ---------------------------------------------------------------------------------


def _email_msg(**kw: Any) -> OutboundMessage:
    base: dict[str, Any] = {
        "delivery_id": "a1.email.r3",
        "channel": "email",
        "address": "bewoner@example.org",
        "text": "Politiebericht: Vermist meisje, 12 jaar\nReageer niet; bel bij spoed 112.",
        "subject": "Politiebericht: Vermist meisje",
    }
    base.update(kw)
    return OutboundMessage(**base)


def test_email_message_is_deterministic_and_utf8() -> None:
    mail = email.build_email(make_settings(), _email_msg())
    assert mail["From"] == "Buurtalert <alerts@buurtalert.test>"
    assert mail["To"] == "bewoner@example.org"
    assert mail["Subject"] == "Politiebericht: Vermist meisje"
    assert mail["Message-ID"] == "<a1.email.r3@buurtalert>"
    assert mail["X-Buurtalert-Delivery-Id"] == "a1.email.r3"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["Date"]
    assert mail.get_content_charset() == "utf-8"
    assert mail.get_content().startswith("Politiebericht: Vermist meisje")
    again = email.build_email(make_settings(), _email_msg())
    assert again["Message-ID"] == mail["Message-ID"]


def test_email_subject_cannot_inject_headers() -> None:
    mail = email.build_email(
        make_settings(), _email_msg(subject="Hallo\r\nBcc: iedereen@example.org", text="é ü ß")
    )
    assert mail["Subject"] == "Hallo Bcc: iedereen@example.org"
    assert mail["Bcc"] is None
    assert mail.get_content().strip() == "é ü ß"
    assert email.build_email(make_settings(), _email_msg(subject=""))["Subject"] == "Buurtalert"


@pytest.mark.parametrize(
    "address",
    [
        "not-an-address",
        "a@b@c",
        "x@example.org, y@example.org",
        "Naam <x@y.org>",
        "x@example.org\r\nBcc: y@example.org",
        "",
    ],
)
def test_email_refuses_unusable_addresses(address: str) -> None:
    with pytest.raises(SendPermanent) as caught:
        email.build_email(make_settings(), _email_msg(address=address))
    assert caught.value.reason == "invalid_address"


@pytest.mark.parametrize(
    ("delivery_id", "expected"),
    [
        ("a1.email.r3", "<a1.email.r3@buurtalert>"),
        ("a1b2.email:0f3c", "<a1b2.email=3A0f3c@buurtalert>"),  # the real delivery id shape
        ("with space", "<with=20space@buurtalert>"),
        (".lead..trail.", "<=2Elead.=2Etrail=2E@buurtalert>"),
        ("a=b", "<a=3Db@buurtalert>"),
    ],
)
def test_message_id_is_a_valid_header_and_reversible(delivery_id: str, expected: str) -> None:
    assert email.message_id(delivery_id) == expected
    assert email.delivery_id_of(expected) == delivery_id


@given(st.text(min_size=1, max_size=80))
def test_message_id_round_trips(delivery_id: str) -> None:
    value = email.message_id(delivery_id)
    local = value[1 : -len("@buurtalert>")]
    assert local
    assert not local.startswith(".")
    assert not local.endswith(".")
    assert ".." not in local
    assert set(local) <= set(string.ascii_letters + string.digits + "-_.=")
    assert email.delivery_id_of(value) == delivery_id


def test_foreign_message_ids_are_not_ours() -> None:
    assert email.delivery_id_of("<abc@example.org>") is None
    assert email.delivery_id_of("<=ZZ@buurtalert>") is None  # "=" always starts an escape
    assert email.delivery_id_of("<=FF@buurtalert>") is None  # not UTF-8


@pytest.mark.parametrize(
    ("code", "stage", "expected"),
    [
        (421, "other", SE),
        (450, "recipient", SE),
        (451, "data", SE),
        (550, "recipient", IA),
        (551, "recipient", IA),
        (553, "other", IA),
        (552, "recipient", "permanent rejected"),  # mailbox full: not a wrong address
        (554, "data", "permanent rejected"),
        (550, "data", "permanent rejected"),  # refused content or policy, not the mailbox
        (553, "sender", "permanent rejected"),  # our From is refused, not the member's address
        (535, "other", "permanent auth"),
        (530, "sender", "permanent auth"),
        (-1, "other", "transient network"),  # aiosmtplib's code for an unparseable reply
    ],
)
def test_smtp_reply_classification(code: int, stage: email.SmtpStage, expected: str) -> None:
    assert describe(email.classify_reply(code, stage)) == expected


_REFUSED = aiosmtplib.SMTPRecipientRefused(550, "5.1.1 unknown user", "x@example.org")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (aiosmtplib.SMTPRecipientsRefused([_REFUSED]), IA),
        (aiosmtplib.SMTPRecipientRefused(452, "4.2.2 full", "x@example.org"), SE),
        (aiosmtplib.SMTPSenderRefused(553, "sender rejected", "a@b.org"), "permanent rejected"),
        (aiosmtplib.SMTPDataError(554, "spam"), "permanent rejected"),
        (aiosmtplib.SMTPAuthenticationError(535, "bad credentials"), "permanent auth"),
        (aiosmtplib.SMTPConnectTimeoutError("slow"), "transient timeout"),
        (aiosmtplib.SMTPReadTimeoutError("slow"), "transient timeout"),
        (aiosmtplib.SMTPConnectError("refused"), "transient network"),
        (aiosmtplib.SMTPServerDisconnected("gone"), "transient network"),
        (aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported"), "permanent rejected"),
        (
            aiosmtplib.SMTPException("SMTP STARTTLS extension not supported by server."),
            "permanent auth",
        ),
        (aiosmtplib.SMTPException("No suitable authentication method found."), "permanent auth"),
        (aiosmtplib.SMTPException("something else"), "transient network"),
        (ConnectionRefusedError(), "transient network"),
        (TimeoutError(), "transient timeout"),
    ],
)
def test_smtp_error_classification(error: BaseException, expected: str) -> None:
    assert describe(email.classify_smtp_error(error)) == expected


class _Relay:
    """An aiosmtpd handler: refuses mailboxes starting with "gone" or "later", keeps the rest."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.startswith("gone"):
            return "550 5.1.1 mailbox unavailable"
        if address.startswith("later"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        self.received.append((str(envelope.mail_from), list(envelope.rcpt_tos), content))
        return "250 OK queued"


@pytest.fixture
def relay() -> Iterator[tuple[_Relay, int]]:
    handler = _Relay()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


async def test_email_send_through_a_local_relay(relay: tuple[_Relay, int]) -> None:
    handler, port = relay
    sender = email.SmtpSender(make_settings(smtp_port=port))
    sent = await sender.send(_email_msg())
    assert sent == Sent("<a1.email.r3@buurtalert>")
    ((mail_from, rcpt_tos, content),) = handler.received
    assert mail_from == "alerts@buurtalert.test"
    assert rcpt_tos == ["bewoner@example.org"]
    parsed = message_from_bytes(content)
    assert parsed["Message-ID"] == "<a1.email.r3@buurtalert>"
    assert parsed["Subject"] == "Politiebericht: Vermist meisje"

    with pytest.raises(SendPermanent) as refused:
        await sender.send(_email_msg(address="gone@example.org"))
    assert refused.value.reason == "invalid_address"
    with pytest.raises(SendTransient) as deferred:
        await sender.send(_email_msg(address="later@example.org"))
    assert deferred.value.reason == "server_error"
    await sender.aclose()
    assert len(handler.received) == 1


async def test_email_commits_after_the_recipient_is_accepted_and_before_data(
    relay: tuple[_Relay, int],
) -> None:
    """The commit hook marks the point of no return: after RCPT, before DATA."""
    handler, port = relay
    sender = email.SmtpSender(make_settings(smtp_port=port))
    calls: list[int] = []

    async def commit() -> None:
        calls.append(len(handler.received))  # how many mails the relay had at that moment

    await sender.send(_email_msg(commit=commit))
    assert calls == [0]
    assert len(handler.received) == 1
    # A refused recipient never reaches the point of no return.
    with pytest.raises(SendPermanent):
        await sender.send(_email_msg(address="gone@example.org", commit=commit))
    assert calls == [0]

    async def taken_over() -> None:
        raise SendAbandoned()

    # Taken over by another notifier: nothing reaches the relay.
    with pytest.raises(SendAbandoned):
        await sender.send(_email_msg(commit=taken_over))
    assert len(handler.received) == 1
    await sender.aclose()


@pytest.mark.parametrize(
    "overrides", [{"smtp_starttls": True}, {"smtp_username": "user", "smtp_password": "pw"}]
)
async def test_email_relay_without_tls_or_auth_is_a_setup_error(
    relay: tuple[_Relay, int], overrides: dict[str, object]
) -> None:
    handler, port = relay
    sender = email.SmtpSender(make_settings(smtp_port=port, **overrides))
    with pytest.raises(SendPermanent) as caught:
        await sender.send(_email_msg())
    # Never falls back to plain text with the password: nothing was sent.
    assert caught.value.reason == "auth"
    assert handler.received == []


async def test_email_relay_down_is_transient() -> None:
    sender = email.SmtpSender(make_settings(smtp_port=free_port()))
    with pytest.raises(SendTransient) as caught:
        await sender.send(_email_msg())
    assert caught.value.reason == "network"


# --- Registry -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, {"sms", "telegram", "whatsapp", "email"}),
        (_NO_PROVIDERS, set()),
        ({"twilio_from_number": ""}, {"telegram", "whatsapp", "email"}),
        ({"twilio_auth_token": "  "}, {"telegram", "whatsapp", "email"}),
        ({"telegram_bot_token": ""}, {"sms", "whatsapp", "email"}),
        ({"whatsapp_token": ""}, {"sms", "telegram", "email"}),
        ({"whatsapp_phone_number_id": ""}, {"sms", "telegram", "email"}),
        ({"smtp_host": ""}, {"sms", "telegram", "whatsapp"}),
        ({"smtp_username": "relay-user"}, {"sms", "telegram", "whatsapp"}),
        (
            {"smtp_username": "relay-user", "smtp_password": "pw"},
            {"sms", "telegram", "whatsapp", "email"},
        ),
    ],
)
def test_configured_channels(overrides: dict[str, object], expected: set[str]) -> None:
    assert configured_channels(make_settings(**overrides)) == expected


async def test_build_senders_only_for_configured_channels() -> None:
    senders = build_senders(make_settings(telegram_bot_token=""))
    try:
        assert set(senders) == {"sms", "whatsapp", "email"}
        assert all(sender.name == channel for channel, sender in senders.items())
        assert isinstance(senders["sms"], twilio.TwilioSmsSender)
        assert isinstance(senders["whatsapp"], whatsapp.WhatsAppSender)
        assert isinstance(senders["email"], email.SmtpSender)
    finally:
        for sender in senders.values():
            await sender.aclose()
    assert build_senders(make_settings(**_NO_PROVIDERS)) == {}
