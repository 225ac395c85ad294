"""WhatsApp Cloud API webhooks: verification handshake, signed payloads, messages, statuses."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import Field

from services.ingest.adapters.errors import WebhookRejected
from services.ingest.adapters.keywords import Command, CommandKind, classify_text
from services.ingest.adapters.provider_json import ProviderModel, RawPayloadModel, parse_payload
from services.ingest.normalise import alert_id_for, sender_ref
from shared.addresses import AddressError, normalise_phone
from shared.schemas import AlertReceived, Location

__all__ = [
    "SIGNATURE_HEADER",
    "WebhookRejected",
    "WhatsAppCommand",
    "WhatsAppContact",
    "WhatsAppLocation",
    "WhatsAppMessage",
    "WhatsAppStatus",
    "WhatsAppWebhook",
    "classify",
    "dedup_id",
    "messages",
    "parse_webhook",
    "sender_identity",
    "statuses",
    "to_alert",
    "verify_challenge",
    "verify_signature",
]

SIGNATURE_HEADER: Final = "X-Hub-Signature-256"
_SIGNATURE_PREFIX: Final = "sha256="

#: A classified WhatsApp message; the same shape as the other channels' commands.
WhatsAppCommand = Command

#: Statuses Meta documents for messages we sent; others ("played", ...) parse as well.
KnownStatus = Literal["sent", "delivered", "read", "failed"]

# The challenge is echoed back verbatim: only let through what Meta sends (a number), so
# the endpoint cannot be used to reflect arbitrary content.
_CHALLENGE = re.compile(r"^[A-Za-z0-9_.\-]{1,256}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Cloud API webhook bodies are small (a few kB, batched up to some dozens of changes).
_MAX_BODY = 3_000_000


# --- verification ------------------------------------------------------------------------


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )


def verify_challenge(params: Mapping[str, str], verify_token: str) -> str:
    """The hub.challenge to echo when hub.mode and hub.verify_token are right."""
    if not verify_token:
        raise WebhookRejected("not_configured", "WHATSAPP_VERIFY_TOKEN is not set")
    if not isinstance(params, Mapping):
        raise WebhookRejected("malformed", "query parameters must be a mapping")
    mode = params.get("hub.mode")
    token = params.get("hub.verify_token")
    challenge = params.get("hub.challenge")
    if mode != "subscribe":
        raise WebhookRejected("malformed", "hub.mode must be subscribe")
    if not isinstance(token, str) or not token:
        raise WebhookRejected("missing_signature", "hub.verify_token is missing")
    if not _same(token, verify_token):
        raise WebhookRejected("bad_signature", "hub.verify_token does not match")
    if not isinstance(challenge, str) or not _CHALLENGE.match(challenge):
        raise WebhookRejected("malformed", "hub.challenge is missing or not a plain token")
    return challenge


def verify_signature(app_secret: str, raw_body: bytes, header: str | None) -> None:
    """Check X-Hub-Signature-256 ("sha256=" + hex HMAC-SHA256 of the raw body)."""
    if not app_secret:
        raise WebhookRejected("not_configured", "WHATSAPP_APP_SECRET is not set")
    if not header:
        raise WebhookRejected("missing_signature", f"{SIGNATURE_HEADER} header is missing")
    if not isinstance(raw_body, bytes | bytearray | memoryview):
        raise WebhookRejected("malformed", "body must be bytes")
    scheme, _, digest = header.strip().partition("=")
    digest = digest.lower()
    if f"{scheme.lower()}=" != _SIGNATURE_PREFIX or not _HEX64.match(digest):
        raise WebhookRejected("bad_signature", f"{SIGNATURE_HEADER} is not sha256=<hex>")
    expected = hmac.new(
        app_secret.encode("utf-8", "surrogatepass"), bytes(raw_body), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected.encode("ascii"), digest.encode("ascii")):
        raise WebhookRejected("bad_signature", f"{SIGNATURE_HEADER} does not match")


# --- payload -----------------------------------------------------------------------------


_Model = ProviderModel


class WhatsAppText(_Model):
    """The body of a text message."""

    body: str = Field(max_length=65536)


class WhatsAppLocation(_Model):
    """A location message."""

    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    name: str | None = None
    address: str | None = None
    url: str | None = None


class WhatsAppMessage(_Model):
    """One message a WhatsApp user sent us."""

    id: str = Field(min_length=1, max_length=256, description="wamid")
    from_: str | None = Field(None, alias="from", description="Sender phone, digits only")
    from_user_id: str | None = Field(None, description="Business-scoped user id (BSUID)")
    timestamp: str
    type: str
    text: WhatsAppText | None = None
    location: WhatsAppLocation | None = None


class WhatsAppProfile(_Model):
    """A sender's profile."""

    name: str | None = None


class WhatsAppContact(_Model):
    """The sender as Meta describes it."""

    wa_id: str | None = None
    user_id: str | None = None
    profile: WhatsAppProfile | None = None


class WhatsAppError(_Model):
    """Why a message could not be sent or delivered."""

    code: int
    title: str | None = None
    message: str | None = None
    href: str | None = None
    error_data: dict[str, Any] | None = None


class WhatsAppStatus(_Model):
    """A status of a message we sent: sent, delivered, read or failed."""

    id: str = Field(min_length=1, description="wamid of our message")
    status: str
    timestamp: str
    recipient_id: str | None = None
    errors: list[WhatsAppError] = Field(default_factory=list)
    conversation: dict[str, Any] | None = None
    pricing: dict[str, Any] | None = None
    biz_opaque_callback_data: str | None = Field(
        None, description="echoed from our send: the delivery id the receipt belongs to"
    )


class WhatsAppMetadata(_Model):
    """Which of our numbers the change is about."""

    display_phone_number: str | None = None
    phone_number_id: str | None = None


class WhatsAppValue(_Model):
    """The value of a change; messages and statuses for the "messages" field."""

    messaging_product: str | None = None
    metadata: WhatsAppMetadata | None = None
    contacts: list[WhatsAppContact] = Field(default_factory=list)
    messages: list[WhatsAppMessage] = Field(default_factory=list)
    statuses: list[WhatsAppStatus] = Field(default_factory=list)


class WhatsAppChange(_Model):
    """One change of an entry."""

    field: str
    value: WhatsAppValue


class WhatsAppEntry(_Model):
    """One WhatsApp Business Account's changes."""

    id: str
    changes: list[WhatsAppChange] = Field(default_factory=list)


class WhatsAppWebhook(RawPayloadModel):
    """A Cloud API webhook notification."""

    object: Literal["whatsapp_business_account"]
    entry: list[WhatsAppEntry]


def parse_webhook(data: object) -> WhatsAppWebhook:
    """Validate a Cloud API notification (parsed JSON, or the raw body)."""
    return parse_payload(WhatsAppWebhook, data, what="notification", max_bytes=_MAX_BODY)


def _values(webhook: WhatsAppWebhook) -> Iterator[WhatsAppValue]:
    for entry in webhook.entry:
        for change in entry.changes:
            # Other fields (template status, account updates) share the envelope only.
            if change.field == "messages":
                yield change.value


def messages(webhook: WhatsAppWebhook) -> Iterator[WhatsAppMessage]:
    """Every inbound message in a notification, in order."""
    for value in _values(webhook):
        yield from value.messages


def statuses(webhook: WhatsAppWebhook) -> Iterator[WhatsAppStatus]:
    """Every status of our own messages in a notification, in order."""
    for value in _values(webhook):
        yield from value.statuses


# --- classification and event ------------------------------------------------------------


def _location(message: WhatsAppMessage) -> Location | None:
    if message.location is None:
        return None
    return Location(
        lat=message.location.latitude, lon=message.location.longitude, source="shared_location"
    )


def classify(message: WhatsAppMessage) -> WhatsAppCommand:
    """Classify a message: location, keyword, AANMELDEN <place>, JA/NEE, report, or ignore."""
    if message.type == "location" and message.location is not None:
        text = " ".join(p for p in (message.location.name, message.location.address) if p)
        return Command(CommandKind.LOCATION, text=text, location=_location(message))
    if message.type == "text" and message.text is not None:
        return classify_text(message.text.body)
    # Reactions, stickers, images and the like are no alert ("geen duimpjes").
    return Command(CommandKind.IGNORE)


def sender_identity(message: WhatsAppMessage) -> str | None:
    """The sender as E.164 when Meta gives the number, else the business-scoped user id."""
    if message.from_:
        try:
            return normalise_phone("+" + message.from_.lstrip("+"))
        except AddressError:
            return message.from_
    return message.from_user_id or None


def dedup_id(message: WhatsAppMessage) -> str:
    """Alert id from the wamid, so a redelivered notification de-duplicates."""
    return alert_id_for("whatsapp", message.id)


def to_alert(
    message: WhatsAppMessage,
    *,
    alert_id: str,
    received_at: datetime,
    called_112: bool | None,
    location: Location | None = None,
) -> AlertReceived:
    """A WhatsApp report as an AlertReceived; a location message gives a shared location."""
    identity = sender_identity(message)
    text = message.text.body.strip() if message.text is not None else ""
    return AlertReceived(
        alert_id=alert_id,
        kind="report",
        channel="whatsapp",
        sender_ref=sender_ref("whatsapp", identity) if identity else None,
        text=text,
        location=location if location is not None else _location(message),
        called_112=called_112,
        received_at=received_at,
        raw=message.model_dump(mode="json", by_alias=True, exclude_unset=True),
    )
