"""Telegram Bot API stub: sendMessage with Telegram's flood limits and error answers.

Formats follow core.telegram.org/bots/api: every answer is {"ok": ..., "result"|...}; errors
carry error_code and description, and flood control adds ResponseParameters.retry_after
("Too Many Requests: retry after N"). Limits follow core.telegram.org/bots/faq ("My bot is
hitting limits"): about 30 messages per second overall, 1 per second in one private chat,
20 per minute in one group. Positive chat ids are users, negative ids groups/supergroups.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Mapping
from http import HTTPStatus
from itertools import count
from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.providers.common import (
    Channel,
    Delivered,
    Fault,
    JSONBody,
    Ledger,
    Limit,
    StubBase,
    read_at,
    whole_seconds,
)

LIMIT_BOT = "telegram.bot"
LIMIT_CHAT = "telegram.chat"
LIMIT_GROUP = "telegram.group"
_MAX_TEXT = 4096
_PARSE_MODES = {"", "HTML", "Markdown", "MarkdownV2"}
_SUPERGROUP_BELOW = -1_000_000_000_000  # supergroup and channel ids are -100xxxxxxxxxx


class TelegramConfig(BaseModel):
    """Token, limits and fault settings of the Telegram stub."""

    bot_token: str = "123456789:AAStubTelegramBotToken-0123456789abcdef"
    per_second: int | None = Field(30, description="messages per second per bot, all chats")
    chat_per_second: int | None = Field(1, description="messages per second per private chat")
    group_per_minute: int | None = Field(20, description="messages per minute per group chat")
    known_chats: set[int] | None = Field(None, description="if set, other chats are not found")
    unknown_chats: set[int] = Field(default_factory=set, description="'chat not found'")
    blocked_chats: set[int] = Field(default_factory=set, description="403: bot was blocked")
    latency_s: float = 0.0


def telegram_error(status: int, description: str, retry_after: int | None = None) -> JSONBody:
    """A Bot API error answer."""
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return JSONBody(body, status_code=status)


def too_many_requests(retry_after: int) -> JSONBody:
    """Telegram's flood-control answer."""
    return telegram_error(429, f"Too Many Requests: retry after {retry_after}", retry_after)


def _chat_type(chat_id: int) -> str:
    if chat_id > 0:
        return "private"
    return "supergroup" if chat_id < _SUPERGROUP_BELOW else "group"


class TelegramStub(StubBase):
    """POST /bot{token}/sendMessage, as the Bot API answers it."""

    channel: Channel = "telegram"

    def __init__(self, ledger: Ledger, config: TelegramConfig | None = None) -> None:
        super().__init__(ledger)
        self.config = config or TelegramConfig()
        self.bot_id = int(self.config.bot_token.partition(":")[0] or 0)
        self._message_ids: dict[int, count[int]] = {}
        for limit in self._limits():
            ledger.register(limit)
        self.app = Starlette(
            routes=[Route("/bot{token}/{method}", self.call, methods=["GET", "POST"])]
        )

    def _limits(self) -> list[Limit]:
        cfg = self.config
        limits = []
        if cfg.per_second:
            limits.append(Limit(LIMIT_BOT, cfg.per_second, 1.0))
        if cfg.chat_per_second:
            limits.append(Limit(LIMIT_CHAT, cfg.chat_per_second, 1.0))
        if cfg.group_per_minute:
            limits.append(Limit(LIMIT_GROUP, cfg.group_per_minute, 60.0))
        return limits

    def _checks(self, chat_id: int) -> list[tuple[Limit, str]]:
        cfg = self.config
        checks: list[tuple[Limit, str]] = []
        if cfg.per_second:
            checks.append((Limit(LIMIT_BOT, cfg.per_second, 1.0), "bot"))
        if chat_id > 0 and cfg.chat_per_second:
            checks.append((Limit(LIMIT_CHAT, cfg.chat_per_second, 1.0), str(chat_id)))
        if chat_id < 0 and cfg.group_per_minute:
            checks.append((Limit(LIMIT_GROUP, cfg.group_per_minute, 60.0), str(chat_id)))
        return checks

    def _fault(self, fault: Fault) -> Response:
        if fault.status == 429:
            return too_many_requests(whole_seconds(fault.retry_after_s or 1))
        try:
            phrase = HTTPStatus(fault.status).phrase
        except ValueError:
            phrase = "Internal Server Error"
        return telegram_error(fault.status, phrase)

    async def _params(self, request: Request) -> dict[str, Any] | None:
        # The Bot API takes parameters as a query string, a form or JSON, all alike.
        params: dict[str, Any] = dict(request.query_params)
        body = await request.body()
        if not body:
            return params
        content_type = request.headers.get("content-type", "")
        try:
            if content_type.startswith("application/json"):
                data = json.loads(body)
                if not isinstance(data, dict):
                    return None
                params.update(data)
            else:
                params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            return None
        return params

    async def call(self, request: Request) -> Response:
        """Dispatch a Bot API method (only sendMessage is implemented)."""
        self.ledger.count_request("telegram")
        cfg = self.config
        if not hmac.compare_digest(request.path_params["token"], cfg.bot_token):
            return telegram_error(401, "Unauthorized")
        # Bot API method names are case-insensitive.
        if request.path_params["method"].lower() != "sendmessage":
            return telegram_error(404, "Not Found")
        fault = self.faults.take()
        if fault is not None:
            return self._fault(fault)
        params = await self._params(request)
        if params is None:
            return telegram_error(400, "Bad Request: can't parse request body")
        return await self.send_message(params, arrived_at=read_at(request))

    async def send_message(
        self, params: Mapping[str, Any], *, arrived_at: float | None = None
    ) -> Response:
        """sendMessage: validate, meter, check the chat, record and answer the Message.

        `arrived_at` is when the request was read (the ledger's clock now when None).
        """
        cfg = self.config
        raw_chat = params.get("chat_id")
        text = params.get("text")
        if raw_chat is None or raw_chat == "":
            return telegram_error(400, "Bad Request: chat_id is empty")
        try:
            chat_id = int(raw_chat)
        except (TypeError, ValueError):
            return telegram_error(400, "Bad Request: chat not found")
        if not isinstance(text, str) or not text.strip():
            return telegram_error(400, "Bad Request: message text is empty")
        if len(text) > _MAX_TEXT:
            return telegram_error(400, "Bad Request: message is too long")
        if str(params.get("parse_mode") or "") not in _PARSE_MODES:
            return telegram_error(400, "Bad Request: unsupported parse_mode")
        now, refusal = self.ledger.admit(self._checks(chat_id), at=arrived_at)
        if refusal is not None:
            return too_many_requests(refusal.retry_after_whole_s)
        if chat_id in cfg.unknown_chats or (
            cfg.known_chats is not None and chat_id not in cfg.known_chats
        ):
            return telegram_error(400, "Bad Request: chat not found")
        chat_type = _chat_type(chat_id)
        if chat_id in cfg.blocked_chats:
            reason = {
                "private": "Forbidden: bot was blocked by the user",
                "group": "Forbidden: bot was kicked from the group chat",
                "supergroup": "Forbidden: bot was kicked from the supergroup chat",
            }[chat_type]
            return telegram_error(403, reason)
        counter = self._message_ids.get(chat_id)
        if counter is None:
            counter = self._message_ids[chat_id] = count(1)
        message_id = next(counter)
        self.ledger.record(
            Delivered(
                channel="telegram",
                recipient=str(chat_id),
                text=text,
                provider_id=f"{chat_id}:{message_id}",
                arrived_at=now,
                meta={"parse_mode": str(params.get("parse_mode") or "")},
            )
        )
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat["first_name"] = f"Resident {chat_id}"
        else:
            chat["title"] = f"Group {chat_id}"
        result = {
            "message_id": message_id,
            "from": {
                "id": self.bot_id,
                "is_bot": True,
                "first_name": "buurtalert",
                "username": "buurtalert_stub_bot",
            },
            "chat": chat,
            "date": int(time.time()),  # Unix time, unlike the monotonic arrival
            "text": text,
        }
        if cfg.latency_s > 0:
            await asyncio.sleep(cfg.latency_s)
        return JSONBody({"ok": True, "result": result})
