"""Provider adapters: Twilio SMS, Telegram and WhatsApp webhooks (pure functions)."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.adapters import telegram, twilio, whatsapp
from services.ingest.adapters.errors import WebhookRejected
from services.ingest.adapters.keywords import CommandKind, classify_text, says_112
from services.ingest.adapters.texts import (
    ANSWER_112_NO,
    ANSWER_112_YES,
    ASK_112,
    HELP_TEXT,
    JOIN_ASK_LOCATION,
    JOIN_ASK_PLACE,
    OPT_IN_CONFIRMATION,
    OPT_OUT_CONFIRMATION,
    REPORT_CONFIRMATION,
    WELCOME_TEXT,
    join_confirmation,
    report_reply,
)
from shared.schemas import Location

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 22, 21, 15, tzinfo=UTC)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- samples in each provider's documented format -----------------------------------------

# Twilio's documented signature example (webhooks security page and the twilio-python tests):
# auth token 12345, this URL and these POST fields sign to RSOYDt4T1cUTdK1PDd93/VVr8B8=.
TWILIO_DOC_TOKEN = "12345"
TWILIO_DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
TWILIO_DOC_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="

AUTH_TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC_URL = "https://buurtalert.example.nl/webhooks/twilio/sms"

# Twilio's incoming-message webhook parameters (messaging/guides/webhook-request).
SMS_FORM: dict[str, str] = {
    "ToCountry": "NL",
    "ToState": "",
    "SmsMessageSid": "SM0123456789abcdef0123456789abcdef",
    "NumMedia": "0",
    "ToCity": "",
    "FromZip": "",
    "SmsSid": "SM0123456789abcdef0123456789abcdef",
    "FromState": "",
    "SmsStatus": "received",
    "FromCity": "",
    "Body": " Man probeert deuren van auto's te openen, Dorpsstraat 12. ",
    "FromCountry": "NL",
    "To": "+3197010203040",
    "MessagingServiceSid": "MG0123456789abcdef0123456789abcdef",
    "ToZip": "",
    "NumSegments": "1",
    "MessageSid": "SM0123456789abcdef0123456789abcdef",
    "AccountSid": "AC0123456789abcdef0123456789abcdef",
    "From": "+31612345678",
    "ApiVersion": "2010-04-01",
}

TG_SECRET = "buurt_alert-Secret_0123456789"


def tg_message(**message: Any) -> dict[str, Any]:
    """A Bot API Update with a private-chat message (Bot API Update/Message objects)."""
    base: dict[str, Any] = {
        "message_id": 1365,
        "from": {"id": 1111111, "is_bot": False, "first_name": "Anna", "language_code": "nl"},
        "chat": {"id": 1111111, "first_name": "Anna", "type": "private"},
        "date": 1795468500,
        "text": "Verdacht busje zonder kenteken bij de speeltuin",
    }
    base.update(message)
    return {"update_id": 10000, "message": base}


# Meta's documented example of a text message (webhooks/reference/messages).
WA_TEXT: dict[str, Any] = {
    "object": "whatsapp_business_account",
    "entry": [
        {
            "id": "102290129340398",
            "changes": [
                {
                    "value": {
                        "messaging_product": "whatsapp",
                        "metadata": {
                            "display_phone_number": "15550783881",
                            "phone_number_id": "106540352242922",
                        },
                        "contacts": [
                            {"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}
                        ],
                        "messages": [
                            {
                                "from": "16505551234",
                                "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAz"
                                "ODEwMTQ0RgA=",
                                "timestamp": "1749416383",
                                "type": "text",
                                "text": {"body": "Does it come in another color?"},
                            }
                        ],
                    },
                    "field": "messages",
                }
            ],
        }
    ],
}


def wa_value(**value: Any) -> dict[str, Any]:
    """A notification with one change of field "messages" and the given value keys."""
    body = copy.deepcopy(WA_TEXT)
    change = body["entry"][0]["changes"][0]
    change["value"] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "31970102030", "phone_number_id": "106540352242922"},
        **value,
    }
    return body


WA_LOCATION = wa_value(
    contacts=[{"profile": {"name": "Piet"}, "wa_id": "31612345678"}],
    messages=[
        {
            "from": "31612345678",
            "id": "wamid.LOCATION0001",
            "timestamp": "1795468500",
            "location": {
                "address": "Dorpsstraat 12, Bunnik",
                "latitude": 52.0668,
                "longitude": 5.1980,
                "name": "Speeltuin",
            },
            "type": "location",
        }
    ],
)

WA_STATUSES = wa_value(
    statuses=[
        {
            "id": "wamid.OUT0001",
            "status": "delivered",
            "timestamp": "1795468510",
            "recipient_id": "31612345678",
            "conversation": {"id": "CONV1", "origin": {"type": "utility"}},
            "pricing": {"billable": True, "pricing_model": "PMP", "category": "utility"},
        },
        {
            "id": "wamid.OUT0002",
            "status": "failed",
            "timestamp": "1795468511",
            "recipient_id": "31687654321",
            "errors": [
                {
                    "code": 131047,
                    "title": "Re-engagement message",
                    "message": "Re-engagement message",
                    "error_data": {"details": "More than 24 hours have passed"},
                    "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
                }
            ],
        },
        {"id": "wamid.OUT0003", "status": "read", "timestamp": "1795468512"},
        {"id": "wamid.OUT0004", "status": "sent", "timestamp": "1795468513"},
    ]
)

WA_SECRET = "6f1c2b3a4d5e6f708192a3b4c5d6e7f8"


def meta_signature(secret: str, body: bytes) -> str:
    """X-Hub-Signature-256 as Meta computes it."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- Twilio: signature --------------------------------------------------------------------


def test_twilio_signature_matches_documented_example() -> None:
    assert (
        twilio.compute_signature(TWILIO_DOC_TOKEN, TWILIO_DOC_URL, TWILIO_DOC_PARAMS)
        == TWILIO_DOC_SIGNATURE
    )
    twilio.verify_signature(
        TWILIO_DOC_TOKEN, TWILIO_DOC_URL, TWILIO_DOC_PARAMS, TWILIO_DOC_SIGNATURE
    )


def test_twilio_signature_of_repeated_fields_sorts_values() -> None:
    # twilio-python's own vector for a field sent twice.
    params = {"Sid": "CA123", "SidAccount": "AC123", "Digits": ["5678", "1234"]}
    assert (
        twilio.compute_signature(TWILIO_DOC_TOKEN, TWILIO_DOC_URL, params)
        == "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    )


@pytest.mark.parametrize(
    ("url", "signature"),
    [
        # Signed without the port that the URL shows, and with the default port it does not.
        (TWILIO_DOC_URL.replace(".com", ".com:1234"), TWILIO_DOC_SIGNATURE),
        (TWILIO_DOC_URL, "kvajT1Ptam85bY51eRf/AJRuM3w="),
        (TWILIO_DOC_URL.replace("https", "http"), "0ZXoZLH/DfblKGATFgpif+LLRf4="),
        (
            TWILIO_DOC_URL.replace(".com", ".com:1234").replace("https", "http"),
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",
        ),
    ],
)
def test_twilio_signature_with_or_without_port(url: str, signature: str) -> None:
    twilio.verify_signature(TWILIO_DOC_TOKEN, url, TWILIO_DOC_PARAMS, signature)


def test_twilio_signed_inbound_sms_verifies() -> None:
    signature = twilio.compute_signature(AUTH_TOKEN, PUBLIC_URL, SMS_FORM)
    twilio.verify_signature(AUTH_TOKEN, PUBLIC_URL, SMS_FORM, signature)


@pytest.mark.parametrize(
    ("token", "url", "form", "reason"),
    [
        ("another-token-000000000000000000", PUBLIC_URL, SMS_FORM, "bad_signature"),
        (AUTH_TOKEN, PUBLIC_URL + "/other", SMS_FORM, "bad_signature"),
        (AUTH_TOKEN, PUBLIC_URL, {**SMS_FORM, "Body": "Alles veilig"}, "bad_signature"),
        (AUTH_TOKEN, PUBLIC_URL, {**SMS_FORM, "From": "+31611111111"}, "bad_signature"),
        (AUTH_TOKEN, PUBLIC_URL, {**SMS_FORM, "Extra": ""}, "bad_signature"),
    ],
)
def test_twilio_forged_requests_are_rejected(
    token: str, url: str, form: dict[str, str], reason: str
) -> None:
    genuine = twilio.compute_signature(AUTH_TOKEN, PUBLIC_URL, SMS_FORM)
    with pytest.raises(WebhookRejected) as info:
        twilio.verify_signature(token, url, form, genuine)
    assert info.value.reason == reason
    assert info.value.http_status == 403


@pytest.mark.parametrize("signature", [None, ""])
def test_twilio_missing_signature_is_rejected(signature: str | None) -> None:
    with pytest.raises(WebhookRejected) as info:
        twilio.verify_signature(AUTH_TOKEN, PUBLIC_URL, SMS_FORM, signature)
    assert info.value.reason == "missing_signature"


def test_twilio_without_auth_token_nothing_verifies() -> None:
    forged = twilio.compute_signature("", PUBLIC_URL, SMS_FORM)
    with pytest.raises(WebhookRejected) as info:
        twilio.verify_signature("", PUBLIC_URL, SMS_FORM, forged)
    assert info.value.reason == "not_configured"


# --- Twilio: form, event ------------------------------------------------------------------


def test_twilio_parse_inbound_reads_documented_fields() -> None:
    form = {
        **SMS_FORM,
        "NumMedia": "2",
        "MediaUrl0": "https://api.twilio.com/2010-04-01/Accounts/AC/Messages/MM/Media/ME0",
        "MediaContentType0": "image/jpeg",
        "MediaUrl1": "https://api.twilio.com/2010-04-01/Accounts/AC/Messages/MM/Media/ME1",
        "MediaContentType1": "image/png",
        "OptOutType": "STOP",
    }
    inbound = twilio.parse_inbound(form)
    assert inbound.message_sid == SMS_FORM["MessageSid"]
    assert inbound.sms_sid == inbound.sms_message_sid == inbound.message_sid
    assert inbound.account_sid.startswith("AC")
    assert inbound.messaging_service_sid == SMS_FORM["MessagingServiceSid"]
    assert (inbound.from_, inbound.to) == ("+31612345678", "+3197010203040")
    assert (inbound.num_media, inbound.num_segments) == (2, 1)
    assert (inbound.from_country, inbound.to_country, inbound.from_city) == ("NL", "NL", "")
    assert (inbound.sms_status, inbound.api_version) == ("received", "2010-04-01")
    assert [m.content_type for m in inbound.media] == ["image/jpeg", "image/png"]
    assert inbound.model_extra is not None
    assert inbound.model_extra["OptOutType"] == "STOP"
    assert inbound.raw == form


@pytest.mark.parametrize("field", ["MessageSid", "AccountSid", "From", "To"])
def test_twilio_missing_field_is_named(field: str) -> None:
    form = {k: v for k, v in SMS_FORM.items() if k != field}
    with pytest.raises(WebhookRejected) as info:
        twilio.parse_inbound(form)
    assert info.value.reason == "malformed"
    assert info.value.http_status == 400
    assert f"missing field {field}" in info.value.detail


def test_twilio_invalid_field_is_named_without_its_value() -> None:
    with pytest.raises(WebhookRejected) as info:
        twilio.parse_inbound({**SMS_FORM, "NumMedia": "+31612345678"})
    assert "NumMedia" in info.value.detail
    assert "+31612345678" not in str(info.value)


def test_twilio_to_alert_hashes_sender_and_keeps_form() -> None:
    inbound = twilio.parse_inbound(SMS_FORM)
    here = Location(lat=52.0668, lon=5.198, source="postcode")
    event = twilio.to_alert(
        inbound, alert_id=twilio.dedup_id(inbound), received_at=NOW, called_112=True, location=here
    )
    assert event.channel == "sms"
    assert event.kind == "report"
    assert event.text == "Man probeert deuren van auto's te openen, Dorpsstraat 12."
    assert event.sender_ref is not None
    assert event.sender_ref.startswith("sms:")
    assert "612345678" not in event.sender_ref
    assert (event.called_112, event.location, event.raw) == (True, here, SMS_FORM)
    # The same phone written nationally is the same sender.
    national = twilio.parse_inbound({**SMS_FORM, "From": "06 12345678"})
    assert (
        twilio.to_alert(
            national, alert_id="x", received_at=NOW, called_112=None, location=None
        ).sender_ref
        == event.sender_ref
    )


def test_twilio_dedup_id_follows_message_sid() -> None:
    first = twilio.parse_inbound(SMS_FORM)
    retry = twilio.parse_inbound(dict(SMS_FORM))
    other = twilio.parse_inbound({**SMS_FORM, "MessageSid": "SM" + "f" * 32})
    assert twilio.dedup_id(first) == twilio.dedup_id(retry) != twilio.dedup_id(other)
    assert len(twilio.dedup_id(first)) == 32


def test_twilio_sender_identity_of_whatsapp_and_short_codes() -> None:
    via_whatsapp = twilio.parse_inbound({**SMS_FORM, "From": "whatsapp:+31612345678"})
    assert twilio.sender_identity(via_whatsapp) == "+31612345678"
    short_code = twilio.parse_inbound({**SMS_FORM, "From": "BUURT"})
    assert twilio.sender_identity(short_code) == "BUURT"


# --- keywords -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "kind", "text", "called_112"),
    [
        # Twilio's default opt-out words, any case, one word only.
        ("STOP", CommandKind.OPT_OUT, "", None),
        ("stop", CommandKind.OPT_OUT, "", None),
        (" Stop. ", CommandKind.OPT_OUT, "", None),
        ("STOPALL", CommandKind.OPT_OUT, "", None),
        ("unsubscribe", CommandKind.OPT_OUT, "", None),
        ("Cancel", CommandKind.OPT_OUT, "", None),
        ("END", CommandKind.OPT_OUT, "", None),
        ("quit", CommandKind.OPT_OUT, "", None),
        ("REVOKE", CommandKind.OPT_OUT, "", None),
        ("OPTOUT", CommandKind.OPT_OUT, "", None),
        # Dutch.
        ("AFMELDEN", CommandKind.OPT_OUT, "", None),
        ("afmelden!", CommandKind.OPT_OUT, "", None),
        ("Uitschrijven", CommandKind.OPT_OUT, "", None),
        ("START", CommandKind.OPT_IN, "", None),
        ("yes", CommandKind.OPT_IN, "", None),
        ("UNSTOP", CommandKind.OPT_IN, "", None),
        ("Aanmelden", CommandKind.OPT_IN, "", None),
        ("HELP", CommandKind.HELP, "", None),
        ("info", CommandKind.HELP, "", None),
        ("Hulp?", CommandKind.HELP, "", None),
        ("AANMELDEN 3981 AB", CommandKind.JOIN, "3981 AB", None),
        ("aanmelden: Dorpsstraat 12,  Bunnik", CommandKind.JOIN, "Dorpsstraat 12, Bunnik", None),
        ("JA", CommandKind.ANSWER_112, "", True),
        ("ja.", CommandKind.ANSWER_112, "", True),
        ("Ja, al gebeld", CommandKind.ANSWER_112, "al gebeld", True),
        ("NEE", CommandKind.ANSWER_112, "", False),
        ("nee nog niet", CommandKind.ANSWER_112, "nog niet", False),
        # Not a keyword: providers act on one word only, and long answers are reports.
        ("STOP PLEASE", CommandKind.REPORT, "STOP PLEASE", None),
        ("Stop de auto daar", CommandKind.REPORT, "Stop de auto daar", None),
        (
            "Nee er staat een busje met draaiende motor voor nummer 12",
            CommandKind.REPORT,
            "Nee er staat een busje met draaiende motor voor nummer 12",
            None,
        ),
        (
            "Inbraak bij nr 4, 112 is gebeld",
            CommandKind.REPORT,
            "Inbraak bij nr 4, 112 is gebeld",
            True,
        ),
        (
            "Rook uit schuur, 112 is nog niet gebeld",
            CommandKind.REPORT,
            "Rook uit schuur, 112 is nog niet gebeld",
            False,
        ),
        ("ſtop", CommandKind.REPORT, "ſtop", None),
        ("", CommandKind.IGNORE, "", None),
        ("   \n ", CommandKind.IGNORE, "", None),
    ],
)
def test_sms_keyword_classification(
    body: str, kind: CommandKind, text: str, called_112: bool | None
) -> None:
    command = twilio.classify(body)
    assert (command.kind, command.text, command.called_112) == (kind, text, called_112)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("112 is gebeld", True),
        ("Ik heb al 112 gebeld", True),
        ("112 werd ingeschakeld", True),
        ("112 niet gebeld", False),
        ("nog niet naar 112 gebeld", False),
        ("geen 112 nodig", False),
        ("Verdachte man", None),
        ("bel 1120 niet", None),
    ],
)
def test_report_text_about_112(text: str, expected: bool | None) -> None:
    assert says_112(text) is expected


@pytest.mark.parametrize(
    ("body", "reply"),
    [
        ("STOP", None),  # Twilio blocks the number and answers STOP itself.
        ("START", None),
        ("HELP", None),
        ("AFMELDEN", OPT_OUT_CONFIRMATION),
        ("AANMELDEN", OPT_IN_CONFIRMATION),
        ("HULP", HELP_TEXT),
        ("JA", ANSWER_112_YES),
        ("NEE", ANSWER_112_NO),
        ("Verdachte man bij de school", f"{REPORT_CONFIRMATION} {ASK_112}"),
        ("Verdachte man bij de school, 112 is gebeld", REPORT_CONFIRMATION),
        ("", None),
    ],
)
def test_sms_replies(body: str, reply: str | None) -> None:
    assert twilio.reply_for(twilio.classify(body)) == reply


def test_join_reply_names_the_place() -> None:
    reply = twilio.reply_for(twilio.classify("AANMELDEN 3981 AB"))
    assert reply is not None
    assert "3981 AB" in reply


# GSM 03.38 basic set (without the escape table): what one 160-character SMS carries.
GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)


@pytest.mark.parametrize(
    "text",
    [
        REPORT_CONFIRMATION,
        ASK_112,
        report_reply(None),
        ANSWER_112_YES,
        ANSWER_112_NO,
        OPT_OUT_CONFIRMATION,
        OPT_IN_CONFIRMATION,
        JOIN_ASK_PLACE,
        JOIN_ASK_LOCATION,
        HELP_TEXT,
        WELCOME_TEXT,
        join_confirmation("Dorpsstraat 1234, 3981 AB Bunnik, gemeente Bunnik, Utrecht"),
    ],
)
def test_replies_fit_one_sms_segment(text: str) -> None:
    assert len(text) <= 160
    assert set(text) <= GSM7


def test_replies_remind_of_112() -> None:
    assert "112" in REPORT_CONFIRMATION
    assert "112" in ASK_112
    assert "112" in HELP_TEXT


@given(st.text())
def test_join_confirmation_is_printable_and_short(place: str) -> None:
    reply = join_confirmation(place)
    assert reply.isprintable()
    assert len(reply) <= 160


# --- TwiML --------------------------------------------------------------------------------


def parse_xml(document: str) -> ET.Element:
    # Our own output, not untrusted input: the stdlib parser is fine here.
    return ET.fromstring(document.encode())  # noqa: S314


def test_twiml_message_escapes_text() -> None:
    document = twilio.twiml_message('Fiets <blauw> & rood, "Gazelle" \'t Zand')
    root = parse_xml(document)
    assert root.tag == "Response"
    assert [child.tag for child in root] == ["Message"]
    assert root[0].text == 'Fiets <blauw> & rood, "Gazelle" \'t Zand'


def test_twiml_empty_sends_nothing() -> None:
    root = parse_xml(twilio.twiml_empty())
    assert root.tag == "Response"
    assert len(root) == 0


@given(st.text())
def test_twiml_message_is_always_valid_xml(text: str) -> None:
    root = parse_xml(twilio.twiml_message(text))
    kept = "".join(
        c
        for c in text
        if c in "\t\n\r"
        or ("\x20" <= c <= "\ud7ff")
        or ("\ue000" <= c <= "\ufffd")
        or c >= "\U00010000"
    )
    # XML parsers normalise line ends (\r\n and a lone \r become \n); SMS does not care.
    assert (root[0].text or "") == kept.replace("\r\n", "\n").replace("\r", "\n")


# --- Telegram -----------------------------------------------------------------------------


def test_telegram_secret_token() -> None:
    telegram.verify_secret(TG_SECRET, TG_SECRET)
    for header, reason in [
        (None, "missing_signature"),
        ("", "missing_signature"),
        (TG_SECRET + "x", "bad_signature"),
        ("wrong", "bad_signature"),
    ]:
        with pytest.raises(WebhookRejected) as info:
            telegram.verify_secret(header, TG_SECRET)
        assert info.value.reason == reason
    with pytest.raises(WebhookRejected) as info:
        telegram.verify_secret("", "")
    assert info.value.reason == "not_configured"


def test_telegram_text_report() -> None:
    data = tg_message()
    update = telegram.parse_update(data)
    command = telegram.classify(update)
    assert command.kind is CommandKind.REPORT
    assert command.text == "Verdacht busje zonder kenteken bij de speeltuin"
    event = telegram.to_alert(
        update, alert_id=telegram.dedup_id(update), received_at=NOW, called_112=None
    )
    assert event.channel == "telegram"
    assert event.location is None
    assert (
        event.sender_ref
        == telegram.to_alert(
            telegram.parse_update(tg_message(text="ander bericht")),
            alert_id="x",
            received_at=NOW,
            called_112=None,
        ).sender_ref
    )
    assert event.sender_ref is not None
    assert "1111111" not in event.sender_ref
    assert event.raw == data


def test_telegram_location_is_a_shared_location() -> None:
    data = tg_message(text=None, location={"latitude": 52.0668, "longitude": 5.198})
    del data["message"]["text"]
    update = telegram.parse_update(json.dumps(data).encode())
    command = telegram.classify(update)
    assert command.kind is CommandKind.LOCATION
    assert command.location == Location(lat=52.0668, lon=5.198, source="shared_location")
    event = telegram.to_alert(update, alert_id="a", received_at=NOW, called_112=True)
    assert event.location is not None
    assert event.location.source == "shared_location"
    assert event.raw == data


@pytest.mark.parametrize(
    ("text", "kind", "rest"),
    [
        ("/start", CommandKind.START, ""),
        ("/start buurt-3981", CommandKind.START, "buurt-3981"),
        ("/start@BuurtAlertBot", CommandKind.START, ""),
        ("/aanmelden", CommandKind.JOIN, ""),
        ("/aanmelden 3981 AB", CommandKind.JOIN, "3981 AB"),
        ("/Aanmelden   Dorpsstraat 12  Bunnik", CommandKind.JOIN, "Dorpsstraat 12 Bunnik"),
        ("/stop", CommandKind.OPT_OUT, ""),
        ("/afmelden", CommandKind.OPT_OUT, ""),
        ("/help", CommandKind.HELP, ""),
        ("/onbekend", CommandKind.HELP, ""),
        ("AANMELDEN 3981 AB", CommandKind.JOIN, "3981 AB"),
        ("STOP", CommandKind.OPT_OUT, ""),
        ("ja", CommandKind.ANSWER_112, ""),
        ("Nee", CommandKind.ANSWER_112, ""),
    ],
)
def test_telegram_commands(text: str, kind: CommandKind, rest: str) -> None:
    update = telegram.parse_update(tg_message(text=text))
    command = telegram.classify(update, bot_username="BuurtAlertBot")
    assert (command.kind, command.text) == (kind, rest)


def test_telegram_answers_carry_the_answer() -> None:
    yes = telegram.classify(telegram.parse_update(tg_message(text="JA")))
    no = telegram.classify(telegram.parse_update(tg_message(text="nee")))
    assert (yes.called_112, no.called_112) == (True, False)


@pytest.mark.parametrize(
    "data",
    [
        # An edit is not a new alert.
        {
            "update_id": 10001,
            "edited_message": {**tg_message()["message"], "edit_date": 1795468600},
        },
        # Group chatter is not a report.
        tg_message(chat={"id": -1001234567890, "title": "Buurtapp Dorp", "type": "supergroup"}),
        # Bots do not report.
        tg_message(**{"from": {"id": 42, "is_bot": True, "first_name": "Other"}}),
        # A command meant for another bot.
        tg_message(text="/start@OtherBot"),
        # Other update kinds.
        {
            "update_id": 10002,
            "callback_query": {"id": "4382", "from": {"id": 1, "is_bot": False, "first_name": "A"}},
        },
        {"update_id": 10003, "my_chat_member": {"chat": {"id": 1, "type": "private"}}},
    ],
)
def test_telegram_ignores_what_is_no_report(data: dict[str, Any]) -> None:
    update = telegram.parse_update(data)
    assert telegram.classify(update, bot_username="BuurtAlertBot").kind is CommandKind.IGNORE


def test_telegram_group_commands_still_work() -> None:
    data = tg_message(
        text="/aanmelden@BuurtAlertBot 3981 AB",
        chat={"id": -1001234567890, "title": "Buurtapp Dorp", "type": "supergroup"},
    )
    command = telegram.classify(telegram.parse_update(data), bot_username="BuurtAlertBot")
    assert (command.kind, command.text) == (CommandKind.JOIN, "3981 AB")


def test_telegram_dedup_id_from_update_and_chat() -> None:
    first = telegram.parse_update(tg_message())
    again = telegram.parse_update(tg_message())
    later = telegram.parse_update({**tg_message(), "update_id": 10001})
    assert telegram.dedup_id(first) == telegram.dedup_id(again) != telegram.dedup_id(later)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"message": tg_message()["message"]}, "update_id"),
        (tg_message(chat={"id": 1}), "message.chat.type"),
        (tg_message(chat={"id": 1, "type": "kanaal"}), "message.chat.type"),
        (tg_message(location={"latitude": 91, "longitude": 5}), "message.location.latitude"),
        (tg_message(message_id="1365"), "message.message_id"),
        ({"update_id": True}, "update_id"),
    ],
)
def test_telegram_malformed_updates_name_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(WebhookRejected) as info:
        telegram.parse_update(data)
    assert info.value.reason == "malformed"
    assert field in info.value.detail


@pytest.mark.parametrize("data", [b"", b"{", b"[]", "null", 42, None, [1], b"\xff\xfe"])
def test_telegram_non_objects_are_malformed(data: object) -> None:
    with pytest.raises(WebhookRejected) as info:
        telegram.parse_update(data)
    assert info.value.reason == "malformed"


# --- WhatsApp -----------------------------------------------------------------------------


def test_whatsapp_challenge_handshake() -> None:
    params = {"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": "vt-1"}
    assert whatsapp.verify_challenge(params, "vt-1") == "1158201444"


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        (
            {"hub.mode": "subscribe", "hub.challenge": "1", "hub.verify_token": "vt-2"},
            "bad_signature",
        ),
        ({"hub.mode": "subscribe", "hub.challenge": "1"}, "missing_signature"),
        (
            {"hub.mode": "unsubscribe", "hub.challenge": "1", "hub.verify_token": "vt-1"},
            "malformed",
        ),
        ({"hub.challenge": "1", "hub.verify_token": "vt-1"}, "malformed"),
        ({"hub.mode": "subscribe", "hub.verify_token": "vt-1"}, "malformed"),
        (
            {"hub.mode": "subscribe", "hub.challenge": "<script>", "hub.verify_token": "vt-1"},
            "malformed",
        ),
    ],
)
def test_whatsapp_bad_handshakes(params: dict[str, str], reason: str) -> None:
    with pytest.raises(WebhookRejected) as info:
        whatsapp.verify_challenge(params, "vt-1")
    assert info.value.reason == reason


def test_whatsapp_signature_as_meta_computes_it() -> None:
    body = json.dumps(WA_TEXT).encode()
    header = meta_signature(WA_SECRET, body)
    whatsapp.verify_signature(WA_SECRET, body, header)
    whatsapp.verify_signature(WA_SECRET, body, header.upper().replace("SHA256=", "sha256="))


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing_signature"),
        ("", "missing_signature"),
        ("sha256=" + "0" * 64, "bad_signature"),
        ("sha1=" + "0" * 40, "bad_signature"),
        ("deadbeef", "bad_signature"),
    ],
)
def test_whatsapp_bad_signatures(header: str | None, reason: str) -> None:
    with pytest.raises(WebhookRejected) as info:
        whatsapp.verify_signature(WA_SECRET, json.dumps(WA_TEXT).encode(), header)
    assert info.value.reason == reason


def test_whatsapp_forged_body_or_secret_is_rejected() -> None:
    body = json.dumps(WA_TEXT).encode()
    header = meta_signature(WA_SECRET, body)
    for secret, sent in [(WA_SECRET, body.replace(b"color", b"colour")), ("other", body)]:
        with pytest.raises(WebhookRejected) as info:
            whatsapp.verify_signature(secret, sent, header)
        assert info.value.reason == "bad_signature"
    with pytest.raises(WebhookRejected) as info:
        whatsapp.verify_signature("", body, meta_signature("", body))
    assert info.value.reason == "not_configured"


def test_whatsapp_documented_text_message() -> None:
    webhook = whatsapp.parse_webhook(json.dumps(WA_TEXT).encode())
    [message] = whatsapp.messages(webhook)
    assert list(whatsapp.statuses(webhook)) == []
    assert message.type == "text"
    assert message.from_ == "16505551234"
    command = whatsapp.classify(message)
    assert (command.kind, command.text) == (CommandKind.REPORT, "Does it come in another color?")
    event = whatsapp.to_alert(
        message, alert_id=whatsapp.dedup_id(message), received_at=NOW, called_112=None
    )
    assert event.channel == "whatsapp"
    assert event.text == "Does it come in another color?"
    assert event.sender_ref is not None
    assert "16505551234" not in event.sender_ref
    assert webhook.raw == WA_TEXT


def test_whatsapp_location_message() -> None:
    webhook = whatsapp.parse_webhook(WA_LOCATION)
    [message] = whatsapp.messages(webhook)
    command = whatsapp.classify(message)
    assert command.kind is CommandKind.LOCATION
    assert command.location == Location(lat=52.0668, lon=5.198, source="shared_location")
    event = whatsapp.to_alert(message, alert_id="a", received_at=NOW, called_112=False)
    assert event.location == command.location
    assert event.text == ""
    # The sender is the E.164 number, hashed the same way as for an SMS from that phone.
    assert whatsapp.sender_identity(message) == "+31612345678"


def test_whatsapp_statuses() -> None:
    webhook = whatsapp.parse_webhook(WA_STATUSES)
    found = list(whatsapp.statuses(webhook))
    assert [s.status for s in found] == ["delivered", "failed", "read", "sent"]
    assert found[1].errors[0].code == 131047
    assert list(whatsapp.messages(webhook)) == []


@pytest.mark.parametrize(
    ("body", "kind", "called_112"),
    [
        ("STOP", CommandKind.OPT_OUT, None),
        ("AANMELDEN 3981 AB", CommandKind.JOIN, None),
        ("JA", CommandKind.ANSWER_112, True),
        ("Brand in de schuur, 112 is gebeld", CommandKind.REPORT, True),
    ],
)
def test_whatsapp_text_keywords(body: str, kind: CommandKind, called_112: bool | None) -> None:
    data = wa_value(
        messages=[
            {
                "from": "31612345678",
                "id": "wamid.K1",
                "timestamp": "1",
                "type": "text",
                "text": {"body": body},
            }
        ]
    )
    [message] = whatsapp.messages(whatsapp.parse_webhook(data))
    command = whatsapp.classify(message)
    assert (command.kind, command.called_112) == (kind, called_112)


def test_whatsapp_other_message_types_and_fields_are_ignored() -> None:
    data = wa_value(
        messages=[
            {
                "from": "31612345678",
                "id": "wamid.R1",
                "timestamp": "1",
                "type": "reaction",
                "reaction": {"message_id": "wamid.X", "emoji": "\U0001f44d"},
            }
        ]
    )
    data["entry"][0]["changes"].append(
        {"field": "account_update", "value": {"event": "VERIFIED_ACCOUNT"}}
    )
    webhook = whatsapp.parse_webhook(data)
    [message] = whatsapp.messages(webhook)
    assert whatsapp.classify(message).kind is CommandKind.IGNORE


def test_whatsapp_username_sender_without_phone() -> None:
    data = wa_value(
        messages=[
            {
                "from_user_id": "NL.13491208655302741918",
                "id": "wamid.U1",
                "timestamp": "1",
                "type": "text",
                "text": {"body": "Hallo"},
            }
        ]
    )
    [message] = whatsapp.messages(whatsapp.parse_webhook(data))
    assert whatsapp.sender_identity(message) == "NL.13491208655302741918"


def test_whatsapp_dedup_id_from_wamid() -> None:
    [a] = whatsapp.messages(whatsapp.parse_webhook(WA_TEXT))
    [b] = whatsapp.messages(whatsapp.parse_webhook(copy.deepcopy(WA_TEXT)))
    [c] = whatsapp.messages(whatsapp.parse_webhook(WA_LOCATION))
    assert whatsapp.dedup_id(a) == whatsapp.dedup_id(b) != whatsapp.dedup_id(c)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({**WA_TEXT, "object": "page"}, "object"),
        ({"object": "whatsapp_business_account"}, "entry"),
        (wa_value(messages=[{"from": "1", "timestamp": "1", "type": "text"}]), "id"),
        (
            wa_value(
                messages=[
                    {
                        "id": "w",
                        "timestamp": "1",
                        "type": "location",
                        "location": {"latitude": "noord", "longitude": 5},
                    }
                ]
            ),
            "latitude",
        ),
    ],
)
def test_whatsapp_malformed_names_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(WebhookRejected) as info:
        whatsapp.parse_webhook(data)
    assert info.value.reason == "malformed"
    assert field in info.value.detail


# --- never anything but WebhookRejected ---------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
anything = json_values | st.binary(max_size=200) | st.builds(object)


def mutate(sample: Any, data: st.DataObject) -> Any:
    """The sample with one nested value replaced by arbitrary JSON (or removed)."""
    sample = copy.deepcopy(sample)
    node = sample
    while isinstance(node, dict | list) and node:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if not isinstance(child, dict | list) or not child or data.draw(st.booleans()):
            if isinstance(node, dict) and data.draw(st.booleans()):
                del node[key]
            else:
                node[key] = data.draw(json_values)
            break
        node = child
    return sample


REASONS = ("missing_signature", "bad_signature", "malformed", "not_configured")


def accepts_or_rejects(call: Any, *args: Any) -> Any:
    """The call's result, or None when it raised WebhookRejected (anything else fails)."""
    try:
        return call(*args)
    except WebhookRejected as exc:
        reason = exc.reason
    assert reason in REASONS
    return None


@FUZZ
@given(anything)
def test_fuzz_twilio_parse_inbound(form: Any) -> None:
    accepts_or_rejects(twilio.parse_inbound, form)


@FUZZ
@given(st.dictionaries(st.text(), st.text()))
def test_fuzz_twilio_parse_text_forms(form: dict[str, str]) -> None:
    inbound = accepts_or_rejects(twilio.parse_inbound, {**SMS_FORM, **form})
    if inbound is not None:
        twilio.reply_for(twilio.classify(inbound.body))
        twilio.to_alert(inbound, alert_id="a", received_at=NOW, called_112=None, location=None)


@FUZZ
@given(
    st.text(),
    st.text(),
    st.dictionaries(st.text(), st.text() | st.lists(st.text())) | anything,
    st.none() | st.text(),
)
def test_fuzz_twilio_verify_signature(token: str, url: str, params: Any, sig: str | None) -> None:
    accepts_or_rejects(twilio.verify_signature, token, url, params, sig)
    accepts_or_rejects(twilio.compute_signature, token, url, params)


@FUZZ
@given(st.text(), st.text())
def test_fuzz_twilio_classify(body: str, sms: str) -> None:
    command = twilio.classify(body)
    reply = twilio.reply_for(command)
    assert reply is None or len(reply) <= 320
    assert classify_text(sms).kind in CommandKind


@FUZZ
@given(anything)
def test_fuzz_telegram_parse_update(data: Any) -> None:
    accepts_or_rejects(telegram.parse_update, data)


@FUZZ
@given(st.data())
def test_fuzz_telegram_mutated_updates(data: st.DataObject) -> None:
    sample = tg_message(location={"latitude": 52.0, "longitude": 5.0})
    update = accepts_or_rejects(telegram.parse_update, mutate(sample, data))
    if update is not None:
        telegram.classify(update, bot_username="BuurtAlertBot")
        telegram.dedup_id(update)
        accepts_or_rejects(
            lambda: telegram.to_alert(update, alert_id="a", received_at=NOW, called_112=None)
        )


@FUZZ
@given(st.none() | st.text(), st.text())
def test_fuzz_telegram_verify_secret(header: str | None, expected: str) -> None:
    accepts_or_rejects(telegram.verify_secret, header, expected)


@FUZZ
@given(anything)
def test_fuzz_whatsapp_parse_webhook(data: Any) -> None:
    accepts_or_rejects(whatsapp.parse_webhook, data)


@FUZZ
@given(st.data(), st.sampled_from([WA_TEXT, WA_LOCATION, WA_STATUSES]))
def test_fuzz_whatsapp_mutated_webhooks(data: st.DataObject, sample: dict[str, Any]) -> None:
    webhook = accepts_or_rejects(whatsapp.parse_webhook, json.dumps(mutate(sample, data)))
    if webhook is not None:
        for message in whatsapp.messages(webhook):
            whatsapp.classify(message)
            whatsapp.dedup_id(message)
            whatsapp.to_alert(message, alert_id="a", received_at=NOW, called_112=None)
        list(whatsapp.statuses(webhook))


@FUZZ
@given(st.text(), st.binary() | anything, st.none() | st.text())
def test_fuzz_whatsapp_verify_signature(secret: str, body: Any, header: str | None) -> None:
    accepts_or_rejects(whatsapp.verify_signature, secret, body, header)


@FUZZ
@given(st.dictionaries(st.text(), st.text()) | anything, st.text())
def test_fuzz_whatsapp_verify_challenge(params: Any, token: str) -> None:
    accepts_or_rejects(whatsapp.verify_challenge, params, token)
