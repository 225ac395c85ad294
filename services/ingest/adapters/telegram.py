"""Telegram Bot API webhooks: secret-token check, Update parsing, commands and reports."""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Final, Literal

from pydantic import Field, StrictInt

from services.ingest.adapters.errors import WebhookRejected
from services.ingest.adapters.keywords import Command, CommandKind, classify_text, keyword_of
from services.ingest.adapters.provider_json import ProviderModel, RawPayloadModel, parse_payload
from services.ingest.normalise import alert_id_for, sender_ref
from shared.schemas import AlertReceived, Location

__all__ = [
    "SECRET_HEADER",
    "TelegramChat",
    "TelegramCommand",
    "TelegramLocation",
    "TelegramMessage",
    "TelegramUpdate",
    "TelegramUser",
    "WebhookRejected",
    "classify",
    "dedup_id",
    "parse_update",
    "sender_identity",
    "to_alert",
    "verify_secret",
]

SECRET_HEADER: Final = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 (a header name)

#: A classified Telegram message; the same shape as the other channels' commands.
TelegramCommand = Command

# Telegram sends at most a few kB per update; a much larger body is not Telegram.
_MAX_BODY = 1_000_000

_COMMANDS: Final[dict[str, CommandKind]] = {
    "start": CommandKind.START,
    "aanmelden": CommandKind.JOIN,
    "afmelden": CommandKind.OPT_OUT,
    "stop": CommandKind.OPT_OUT,
    "help": CommandKind.HELP,
    "hulp": CommandKind.HELP,
    "info": CommandKind.HELP,
}


def verify_secret(header: str | None, expected: str) -> None:
    """Check X-Telegram-Bot-Api-Secret-Token against the configured secret, in constant time."""
    if not expected:
        # With no secret configured, every request would pass: refuse instead.
        raise WebhookRejected("not_configured", "TELEGRAM_WEBHOOK_SECRET is not set")
    if not header:
        raise WebhookRejected("missing_signature", f"{SECRET_HEADER} header is missing")
    given = header.encode("utf-8", "surrogatepass")
    if not hmac.compare_digest(given, expected.encode("utf-8", "surrogatepass")):
        raise WebhookRejected("bad_signature", f"{SECRET_HEADER} does not match")


_Model = ProviderModel


class TelegramUser(_Model):
    """A Telegram user or bot."""

    id: StrictInt
    is_bot: bool = False
    first_name: str = ""
    username: str | None = None
    language_code: str | None = None


class TelegramChat(_Model):
    """The chat a message belongs to."""

    id: StrictInt
    type: Literal["private", "group", "supergroup", "channel"]
    title: str | None = None
    username: str | None = None


class TelegramLocation(_Model):
    """A location shared in a message."""

    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    horizontal_accuracy: float | None = Field(None, ge=0, le=1500)
    live_period: int | None = None


class TelegramMessage(_Model):
    """The subset of a Bot API Message that ingest reads."""

    message_id: StrictInt
    from_: TelegramUser | None = Field(None, alias="from")
    chat: TelegramChat
    date: StrictInt
    edit_date: StrictInt | None = None
    text: str | None = Field(None, max_length=4096)
    caption: str | None = Field(None, max_length=4096)
    location: TelegramLocation | None = None


class TelegramUpdate(RawPayloadModel):
    """A Bot API Update; kinds other than (edited) messages parse and are ignored."""

    update_id: StrictInt
    message: TelegramMessage | None = None
    edited_message: TelegramMessage | None = None

    @property
    def effective_message(self) -> TelegramMessage | None:
        """The message or edited message this update carries, if any."""
        return self.message or self.edited_message


def parse_update(data: object) -> TelegramUpdate:
    """Validate a Bot API Update (parsed JSON, or the raw body); WebhookRejected otherwise."""
    return parse_payload(TelegramUpdate, data, what="update", max_bytes=_MAX_BODY)


def _location(message: TelegramMessage) -> Location | None:
    if message.location is None:
        return None
    return Location(
        lat=message.location.latitude, lon=message.location.longitude, source="shared_location"
    )


def classify(update: TelegramUpdate, *, bot_username: str | None = None) -> TelegramCommand:
    """Classify an update: /start, /aanmelden, /stop, /help, location, JA/NEE, report, ignore."""
    message = update.message
    if message is None:
        # An edit of an earlier report is not a new alert; other update kinds are not ours.
        return Command(CommandKind.IGNORE)
    if message.from_ is not None and message.from_.is_bot:
        return Command(CommandKind.IGNORE)
    location = _location(message)
    text = (message.text or "").strip()
    if text.startswith("/"):
        head, _, rest = text.partition(" ")
        name, _, addressed_to = head[1:].partition("@")
        if addressed_to and bot_username and addressed_to.lower() != bot_username.lower():
            # In a group, "/start@OtherBot" is for another bot.
            return Command(CommandKind.IGNORE)
        kind = _COMMANDS.get(name.lower(), CommandKind.HELP)
        rest = " ".join(rest.split())
        return Command(kind, text=rest, keyword=keyword_of(name), location=location)
    if location is not None:
        return Command(CommandKind.LOCATION, text=text, location=location)
    if message.chat.type != "private":
        # Groups talk; reports come from a private chat with the bot. Alert streams carry
        # alerts only, so group chatter must not become one.
        return Command(CommandKind.IGNORE)
    return classify_text(text)


def sender_identity(update: TelegramUpdate) -> str | None:
    """The sender's Telegram user id (the chat id when there is no sender)."""
    message = update.effective_message
    if message is None:
        return None
    if message.from_ is not None:
        return str(message.from_.id)
    return str(message.chat.id)


def dedup_id(update: TelegramUpdate) -> str:
    """Alert id from update_id and chat id, so a redelivered update de-duplicates."""
    message = update.effective_message
    chat = message.chat.id if message is not None else "none"
    return alert_id_for("telegram", f"{chat}:{update.update_id}")


def to_alert(
    update: TelegramUpdate,
    *,
    alert_id: str,
    received_at: datetime,
    called_112: bool | None,
    location: Location | None = None,
) -> AlertReceived:
    """A Telegram report as an AlertReceived; an attached location is its shared location."""
    message = update.effective_message
    if message is None:
        raise WebhookRejected("malformed", "update carries no message")
    identity = sender_identity(update)
    return AlertReceived(
        alert_id=alert_id,
        kind="report",
        channel="telegram",
        sender_ref=sender_ref("telegram", identity) if identity else None,
        text=(message.text or message.caption or "").strip(),
        location=location if location is not None else _location(message),
        called_112=called_112,
        received_at=received_at,
        raw=update.raw,
    )
