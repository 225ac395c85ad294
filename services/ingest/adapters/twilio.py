"""Twilio Programmable Messaging: signed inbound SMS webhooks, keywords and TwiML replies."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from services.ingest.adapters.errors import WebhookRejected
from services.ingest.adapters.keywords import (
    TWILIO_HELP,
    TWILIO_OPT_IN,
    TWILIO_OPT_OUT,
    Command,
    CommandKind,
    classify_text,
)
from services.ingest.adapters.texts import (
    ANSWER_112_NO,
    ANSWER_112_YES,
    ASK_112,
    HELP_TEXT,
    JOIN_ASK_PLACE,
    OPT_IN_CONFIRMATION,
    OPT_OUT_CONFIRMATION,
    REPORT_CONFIRMATION,
    answer_112_reply,
    join_confirmation,
    report_reply,
)
from services.ingest.normalise import alert_id_for, sender_ref
from shared.addresses import AddressError, normalise_phone
from shared.schemas import AlertReceived, Location

__all__ = [
    "ANSWER_112_NO",
    "ANSWER_112_YES",
    "ASK_112",
    "HELP_TEXT",
    "JOIN_ASK_PLACE",
    "OPT_IN_CONFIRMATION",
    "OPT_OUT_CONFIRMATION",
    "REPORT_CONFIRMATION",
    "SIGNATURE_HEADER",
    "TWIML_CONTENT_TYPE",
    "SmsCommand",
    "TwilioInbound",
    "TwilioMedia",
    "WebhookRejected",
    "answer_112_reply",
    "classify",
    "compute_signature",
    "dedup_id",
    "join_confirmation",
    "parse_inbound",
    "reply_for",
    "report_reply",
    "sender_identity",
    "to_alert",
    "twiml_empty",
    "twiml_message",
    "verify_signature",
]

SIGNATURE_HEADER: Final = "X-Twilio-Signature"
TWIML_CONTENT_TYPE: Final = "application/xml"

#: A classified SMS; the same shape as the chat channels' commands.
SmsCommand = Command

Params = Mapping[str, str | Sequence[str]]

# Twilio allows 10 media per MMS; more means the form is not Twilio's.
_MAX_MEDIA = 10


# --- signature ---------------------------------------------------------------------------


def _values(name: object, value: object) -> list[str]:
    if not isinstance(name, str):
        raise WebhookRejected("malformed", "form field names must be text")
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return [str(v) for v in value]
    raise WebhookRejected("malformed", f"form field {name[:40]!r} must be text")


def compute_signature(auth_token: str, url: str, params: Params) -> str:
    """X-Twilio-Signature of a form POST: base64 HMAC-SHA1 of URL + sorted name/value pairs."""
    if not isinstance(params, Mapping):
        raise WebhookRejected("malformed", "form must be a mapping of field names to values")
    data = url
    for name in sorted(params):
        # A repeated field contributes every value, values sorted (as Twilio's SDKs do).
        for value in sorted(_values(name, params[name])):
            data += name + value
    # surrogatepass: a lone surrogate cannot come from Twilio, but must not crash the edge;
    # it simply yields a signature that does not match.
    mac = hmac.new(
        auth_token.encode("utf-8", "surrogatepass"),
        data.encode("utf-8", "surrogatepass"),
        hashlib.sha1,
    )
    return base64.b64encode(mac.digest()).decode("ascii")


def _url_variants(url: str) -> list[str]:
    # Twilio signs sometimes with and sometimes without the default port; its SDKs accept
    # either, and so must we (https://host/x and https://host:443/x).
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return [url]
    if parts.hostname is None or parts.scheme not in ("http", "https"):
        return [url]
    host = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc
    default = 443 if parts.scheme == "https" else 80
    with_port = urlunsplit(parts._replace(netloc=f"{host}:{port or default}"))
    without_port = urlunsplit(parts._replace(netloc=host))
    return list(dict.fromkeys([url, without_port, with_port]))


def verify_signature(auth_token: str, url: str, params: Params, signature: str | None) -> None:
    """Check X-Twilio-Signature for the public URL and form; WebhookRejected when it fails."""
    if not auth_token:
        # An empty key would let anyone compute a valid signature.
        raise WebhookRejected("not_configured", "TWILIO_AUTH_TOKEN is not set")
    if not signature:
        raise WebhookRejected("missing_signature", f"{SIGNATURE_HEADER} header is missing")
    given = signature.strip().encode("utf-8", "surrogatepass")
    matched = False
    for candidate in _url_variants(url):
        expected = compute_signature(auth_token, candidate, params).encode("ascii")
        # Constant time, and no early exit, so timing does not tell which variant was close.
        matched |= hmac.compare_digest(expected, given)
    if not matched:
        raise WebhookRejected("bad_signature", f"{SIGNATURE_HEADER} does not match")


# --- inbound form ------------------------------------------------------------------------


class TwilioMedia(BaseModel):
    """One attachment of an MMS."""

    model_config = ConfigDict(frozen=True)

    url: str
    content_type: str | None = None


class TwilioInbound(BaseModel):
    """The form Twilio posts to the incoming-message webhook; unknown fields are kept."""

    model_config = ConfigDict(
        frozen=True, extra="allow", populate_by_name=True, serialize_by_alias=True
    )

    message_sid: str = Field(alias="MessageSid", min_length=2, max_length=64)
    sms_sid: str | None = Field(None, alias="SmsSid", description="Deprecated copy of MessageSid")
    sms_message_sid: str | None = Field(
        None, alias="SmsMessageSid", description="Deprecated copy of MessageSid"
    )
    account_sid: str = Field(alias="AccountSid", min_length=2, max_length=64)
    messaging_service_sid: str | None = Field(None, alias="MessagingServiceSid")
    from_: str = Field(alias="From", min_length=1, max_length=64)
    to: str = Field(alias="To", min_length=1, max_length=64)
    body: str = Field("", alias="Body", max_length=1600)
    num_media: int = Field(0, alias="NumMedia", ge=0, le=_MAX_MEDIA)
    num_segments: int | None = Field(None, alias="NumSegments", ge=0)
    from_city: str | None = Field(None, alias="FromCity")
    from_state: str | None = Field(None, alias="FromState")
    from_zip: str | None = Field(None, alias="FromZip")
    from_country: str | None = Field(None, alias="FromCountry")
    to_city: str | None = Field(None, alias="ToCity")
    to_state: str | None = Field(None, alias="ToState")
    to_zip: str | None = Field(None, alias="ToZip")
    to_country: str | None = Field(None, alias="ToCountry")
    sms_status: str | None = Field(None, alias="SmsStatus")
    api_version: str | None = Field(None, alias="ApiVersion")

    _raw: dict[str, str] | None = PrivateAttr(default=None)

    @property
    def media(self) -> tuple[TwilioMedia, ...]:
        """The MediaUrl{N} / MediaContentType{N} pairs, in order."""
        extra = self.model_extra or {}
        found = []
        for n in range(self.num_media):
            url = extra.get(f"MediaUrl{n}")
            if isinstance(url, str) and url:
                kind = extra.get(f"MediaContentType{n}")
                found.append(
                    TwilioMedia(url=url, content_type=kind if isinstance(kind, str) else None)
                )
        return tuple(found)

    @property
    def raw(self) -> dict[str, str]:
        """The form as received (or as this model would post it)."""
        if self._raw is not None:
            return dict(self._raw)
        return {k: str(v) for k, v in self.model_dump(exclude_unset=True).items()}


def _field_name(loc: tuple[int | str, ...]) -> str:
    return str(loc[0]) if loc else "form"


def parse_inbound(form: Mapping[str, str]) -> TwilioInbound:
    """Validate Twilio's incoming-message form; WebhookRejected("malformed") names the field."""
    if not isinstance(form, Mapping):
        raise WebhookRejected("malformed", "form must be a mapping of field names to values")
    raw: dict[str, str] = {}
    for name, value in form.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise WebhookRejected("malformed", "form fields must be text")
        raw[name] = value
    try:
        inbound = TwilioInbound.model_validate(raw, by_alias=True, by_name=False)
    except ValidationError as exc:
        # Name the field and the problem, never the value: it may be a phone number.
        err = exc.errors(include_url=False, include_input=False)[0]
        field = _field_name(err["loc"])
        if err["type"] == "missing":
            raise WebhookRejected("malformed", f"missing field {field}") from None
        raise WebhookRejected("malformed", f"invalid field {field}: {err['msg']}") from None
    inbound._raw = raw
    return inbound


def sender_identity(inbound: TwilioInbound) -> str:
    """The sender as E.164 when it is a phone number, else Twilio's From as given."""
    # WhatsApp-over-Twilio prefixes the channel ("whatsapp:+31..."); the number is what counts.
    address = inbound.from_.split(":", 1)[1] if ":" in inbound.from_ else inbound.from_
    try:
        return normalise_phone(address.strip())
    except AddressError:
        # Short codes and alphanumeric senders are not phone numbers, but still identities.
        return address.strip()


def dedup_id(inbound: TwilioInbound) -> str:
    """Alert id derived from MessageSid, so a retried webhook de-duplicates in JetStream."""
    return alert_id_for("sms", f"twilio:{inbound.message_sid}")


# --- keywords and replies ----------------------------------------------------------------


def classify(body: str) -> SmsCommand:
    """Classify an SMS body: opt-out/in, help, AANMELDEN <place>, JA/NEE, or a report."""
    return classify_text(body)


def reply_for(command: SmsCommand) -> str | None:
    """Dutch reply to a classified SMS, or None where Twilio itself already answers."""
    kind = command.kind
    if kind is CommandKind.OPT_OUT:
        # After Twilio's own STOP the number is blocked: a reply of ours would fail (21610).
        return None if command.keyword in TWILIO_OPT_OUT else OPT_OUT_CONFIRMATION
    if kind is CommandKind.OPT_IN:
        return None if command.keyword in TWILIO_OPT_IN else OPT_IN_CONFIRMATION
    if kind is CommandKind.HELP:
        return None if command.keyword in TWILIO_HELP else HELP_TEXT
    if kind is CommandKind.JOIN:
        return join_confirmation(command.text)
    if kind is CommandKind.ANSWER_112 and command.called_112 is not None:
        return answer_112_reply(command.called_112)
    if kind is CommandKind.REPORT:
        return report_reply(command.called_112)
    return None


# XML 1.0 forbids most control characters outright, escaped or not.
_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_XML_PROLOG = '<?xml version="1.0" encoding="UTF-8"?>'


def _xml_text(text: str) -> str:
    cleaned = _XML_INVALID.sub("", text)
    return cleaned.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def twiml_message(text: str) -> str:
    """TwiML that answers the sender with one message."""
    return f"{_XML_PROLOG}<Response><Message>{_xml_text(text)}</Message></Response>"


def twiml_empty() -> str:
    """TwiML that sends nothing back (Twilio wants a 200 with a valid document)."""
    return f"{_XML_PROLOG}<Response></Response>"


# --- event -------------------------------------------------------------------------------


def to_alert(
    inbound: TwilioInbound,
    *,
    alert_id: str,
    received_at: datetime,
    called_112: bool | None,
    location: Location | None,
) -> AlertReceived:
    """An inbound SMS report as an AlertReceived (sender hashed, form kept as raw)."""
    raw: dict[str, Any] = dict(inbound.raw)
    return AlertReceived(
        alert_id=alert_id,
        kind="report",
        channel="sms",
        sender_ref=sender_ref("sms", sender_identity(inbound)),
        text=inbound.body.strip(),
        location=location,
        called_112=called_112,
        received_at=received_at,
        raw=raw,
    )
