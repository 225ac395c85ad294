"""Telegram Bot API sendMessage: request building and answer classification are pure.

Sources for the classification:
- https://core.telegram.org/bots/api#making-requests (every answer is `{ok, result}` or
  `{ok: false, error_code, description, parameters}`; error_code mirrors the HTTP status)
- https://core.telegram.org/bots/api#responseparameters (`retry_after` on flood control,
  `migrate_to_chat_id` when a group was upgraded to a supergroup)
- https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this (429)
- The description strings ("Forbidden: bot was blocked by the user", "Forbidden: user is
  deactivated", "Bad Request: chat not found") are not specified by Telegram; they are the
  literal answers collected at https://github.com/TelegramBotAPI/errors.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any

import httpx

from services.notifier.channels.base import (
    OutboundMessage,
    PermanentReason,
    SendPermanent,
    SendTransient,
    Sent,
)
from shared.schemas import MemberChannel
from shared.settings import NotifierSettings

log = logging.getLogger(__name__)

#: sendMessage refuses longer texts ("message is too long"); cut so the alert still goes out.
TEXT_MAX = 4096
_CHAT_ID = re.compile(r"^-?\d{1,20}$")
_RETRY_AFTER_TEXT = re.compile(r"retry after (\d{1,6})")

#: Description fragments (lower case) that make a 403 or 400 final for this recipient.
_BLOCKED = (
    "bot was blocked by the user",
    "user is deactivated",
    "bot was kicked",
    "bot is not a member",
    "can't initiate conversation",
)
_NOT_FOUND = ("chat not found", "user not found", "peer_id_invalid", "group chat was deactivated")


class ChatMigrated(SendPermanent):
    """The group became a supergroup; the member's address should become `new_chat_id`."""

    def __init__(self, new_chat_id: str) -> None:
        super().__init__("rejected", f"group migrated to supergroup; new chat id {new_chat_id}")
        self.new_chat_id = new_chat_id


@dataclass(frozen=True, slots=True)
class TelegramRequest:
    """One sendMessage call; the URL carries the bot token, so it is never logged."""

    url: str
    json: dict[str, Any]


def build_request(settings: NotifierSettings, message: OutboundMessage) -> TelegramRequest:
    """The sendMessage request for one chat."""
    address = message.address.strip()
    # Chat ids are numbers (up to 52 bits, exact in JSON); "@channel" names stay strings.
    chat_id: int | str = int(address) if _CHAT_ID.match(address) else address
    text = message.text if len(message.text) <= TEXT_MAX else message.text[: TEXT_MAX - 1] + "…"
    return TelegramRequest(
        url=f"{settings.telegram_api_base.rstrip('/')}/bot{settings.telegram_bot_token}"
        "/sendMessage",
        json={"chat_id": chat_id, "text": text, "disable_web_page_preview": True},
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = float(value)
    except (ValueError, OverflowError):  # OverflowError: a JSON integer beyond any float
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def classify(
    status: int, body: Any, retry_after: str | None = None
) -> Sent | SendTransient | SendPermanent:
    """Telegram's answer as Sent or a typed failure (returned, not raised)."""
    data: dict[str, Any] = body if isinstance(body, dict) else {}
    params = data.get("parameters")
    params = params if isinstance(params, dict) else {}
    if 200 <= status < 300 and data.get("ok") is not False:
        result = data.get("result")
        message_id = _int(result.get("message_id")) if isinstance(result, dict) else None
        # Accepted is accepted: retrying without an id would post the alert twice.
        return Sent(str(message_id) if message_id is not None else "")
    code = _int(data.get("error_code"))
    if code is None or 200 <= code < 300:
        code = status
    raw = data.get("description")
    description = raw if isinstance(raw, str) else ""
    lowered = description.lower()
    # The description names the problem, never the chat; safe as a bounded-length detail.
    detail = f"{code} {description[:120]}".strip()
    if code == 429:
        after = _seconds(params.get("retry_after"))
        if after is None:
            after = _seconds(retry_after)
        if after is None:
            # Older answers only say it in prose: "Too Many Requests: retry after 34".
            match = _RETRY_AFTER_TEXT.search(lowered)
            after = _seconds(match.group(1)) if match else None
        return SendTransient("rate_limited", detail, retry_after_s=after)
    if code >= 500:
        return SendTransient("server_error", detail)
    migrated = params.get("migrate_to_chat_id")
    if _int(migrated) is not None:
        return ChatMigrated(str(migrated))
    if code == 401 or code == 404:
        # 404 is what Telegram answers when the token in the path is malformed.
        return SendPermanent("auth", detail)
    reason: PermanentReason = "rejected"
    if any(fragment in lowered for fragment in _BLOCKED):
        reason = "blocked"
    elif any(fragment in lowered for fragment in _NOT_FOUND):
        reason = "invalid_address"
    if 400 <= code < 500:
        return SendPermanent(reason, detail)
    # 1xx/3xx: a proxy or a wrong base URL; bounded retries surface it without losing the alert.
    return SendTransient("server_error", f"unexpected {detail}")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:  # an HTML error page from a proxy, or an empty body
        return None


class TelegramSender:
    """Sends Telegram messages through one bot over one pooled HTTP client."""

    name: MemberChannel = "telegram"

    def __init__(
        self,
        settings: NotifierSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.provider_timeout_s),
            limits=httpx.Limits(
                max_connections=settings.send_concurrency,
                max_keepalive_connections=settings.send_concurrency,
            ),
            transport=transport,
        )

    async def send(self, message: OutboundMessage) -> Sent:
        """Send one message; raise SendTransient or SendPermanent on failure."""
        request = build_request(self.settings, message)
        try:
            response = await self._client.post(request.url, json=request.json)
        except httpx.TimeoutException as exc:
            raise SendTransient("timeout", type(exc).__name__) from exc
        except httpx.RequestError as exc:
            # Never str(exc): httpx may put the request URL, and with it the token, in it.
            raise SendTransient("network", type(exc).__name__) from exc
        outcome = classify(
            response.status_code, _json(response), response.headers.get("Retry-After")
        )
        if isinstance(outcome, Sent):
            return outcome
        if isinstance(outcome, SendPermanent) and outcome.reason == "auth":
            log.warning("telegram refused the bot token", extra={"detail": outcome.reason})
        # Debug only: a migration detail carries the new chat id.
        log.debug(
            "telegram send failed",
            extra={"delivery_id": message.delivery_id, "detail": str(outcome)},
        )
        raise outcome

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()
