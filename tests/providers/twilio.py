"""Twilio Programmable Messaging stub: the Messages API, its errors and signed status callbacks.

Formats follow Twilio's docs: the Message resource (twilio.com/docs/messaging/api/message-
resource), REST error bodies {code, message, more_info, status} (twilio.com/docs/usage/
troubleshooting/debugging-your-application), error pages twilio.com/docs/errors/<code>, and
the X-Twilio-Signature algorithm (twilio.com/docs/usage/security#validating-requests).

Real Twilio queues messages above the account's MPS instead of refusing them; this stub
refuses with 429/20429 instead, so a notifier that over-sends is seen, not hidden in a queue.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

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
    valid_phone_number,
    whole_seconds,
)

API_VERSION = "2010-04-01"
SIGNATURE_HEADER = "X-Twilio-Signature"
LIMIT_SENDER = "twilio.sender"
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_MAX_BODY = 1600  # characters; Twilio error 21617 above this
# GSM 03.38 basic set plus the extension table (the extension characters take two septets).
_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = set("^{}\\[~]|€\f")


class TwilioConfig(BaseModel):
    """Credentials, limits and fault settings of the Twilio stub."""

    account_sid: str = "AC" + "0123456789abcdef" * 2
    auth_token: str = "stub-twilio-auth-token-0123456789"
    from_number: str = "+3197010000001"
    per_second: int | None = Field(10, description="messages per second per sender (MPS)")
    window_s: float = 1.0
    invalid_numbers: set[str] = Field(default_factory=set, description="answered with 21211")
    unsubscribed_numbers: set[str] = Field(default_factory=set, description="answered 21610")
    strict_numbers: bool = Field(True, description="To must be a valid number (phonenumbers)")
    status_callbacks: bool = True
    callback_delay_s: float = 0.05
    allow_remote_callbacks: bool = False
    delivery_id_params: tuple[str, ...] = ("d", "delivery_id")
    latency_s: float = 0.0


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """X-Twilio-Signature: base64 HMAC-SHA1 (key: auth token) of URL + sorted name+value pairs."""
    data = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def twilio_error(status: int, code: int, message: str) -> JSONBody:
    """A REST API error in Twilio's format."""
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return JSONBody(body, status_code=status)


def segments(text: str) -> int:
    """SMS segments: GSM-7 160/153 septets, else UCS-2 70/67 code units."""
    if all(c in _GSM_BASIC or c in _GSM_EXTENDED for c in text):
        units = len(text) + sum(1 for c in text if c in _GSM_EXTENDED)
        single, multi = 160, 153
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi = 70, 67
    return 1 if units <= single else math.ceil(units / multi)


def _rfc2822(moment: datetime) -> str:
    return format_datetime(moment)  # "Thu, 24 Aug 2023 05:01:45 +0000", as Twilio writes it


class TwilioStub(StubBase):
    """POST /2010-04-01/Accounts/{AccountSid}/Messages.json, as Twilio answers it."""

    channel: Channel = "sms"

    def __init__(self, ledger: Ledger, config: TwilioConfig | None = None) -> None:
        super().__init__(ledger)
        self.config = config or TwilioConfig()
        if self.config.per_second:
            ledger.register(self._limit(self.config.per_second))
        self.app = Starlette(
            routes=[
                Route(
                    "/2010-04-01/Accounts/{account_sid}/Messages.json",
                    self.create_message,
                    methods=["POST"],
                )
            ]
        )

    def _limit(self, per_window: int) -> Limit:
        return Limit(LIMIT_SENDER, per_window, self.config.window_s)

    def _authorised(self, header: str | None) -> bool:
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        cfg = self.config
        return hmac.compare_digest(user, cfg.account_sid) and hmac.compare_digest(
            password, cfg.auth_token
        )

    def _valid_number(self, number: str) -> bool:
        if not _E164.match(number) or number in self.config.invalid_numbers:
            return False
        return not self.config.strict_numbers or valid_phone_number(number)

    def _fault(self, fault: Fault) -> Response:
        titles = {429: (20429, "Too Many Requests"), 503: (20503, "Service Unavailable")}
        code, title = titles.get(fault.status, (20500, "Internal Server Error"))
        response = twilio_error(fault.status, code, title)
        if fault.retry_after_s is not None:
            response.headers["Retry-After"] = str(whole_seconds(fault.retry_after_s))
        return response

    async def create_message(self, request: Request) -> Response:
        """Create a Message: validate, meter, record, answer 201 and schedule callbacks."""
        self.ledger.count_request("sms")
        cfg = self.config
        if not self._authorised(request.headers.get("authorization")):
            response = twilio_error(401, 20003, "Authenticate")
            response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
            return response
        if request.path_params["account_sid"] != cfg.account_sid:
            return twilio_error(
                404, 20404, f"The requested resource {request.url.path} was not found"
            )
        fault = self.faults.take()
        if fault is not None:
            return self._fault(fault)
        try:
            form = dict(parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            return twilio_error(400, 20001, "Invalid request body")
        to = form.get("To", "").strip()
        sender = form.get("From", "").strip()
        service = form.get("MessagingServiceSid", "").strip()
        text = form.get("Body", "")
        callback = form.get("StatusCallback", "")
        if not to:
            return twilio_error(400, 21604, "A 'To' phone number is required.")
        if not sender and not service:
            return twilio_error(400, 21603, "A 'From' phone number is required.")
        if not text and "MediaUrl" not in form:
            return twilio_error(400, 21602, "Message body is required.")
        if len(text) > _MAX_BODY:
            return twilio_error(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        if callback and urlsplit(callback).scheme not in ("http", "https"):
            return twilio_error(400, 21609, "The StatusCallback URL is not valid.")
        if sender and sender != cfg.from_number:
            return twilio_error(
                400,
                21606,
                f"The From phone number {sender} is not a valid, SMS-capable inbound phone "
                "number or short code for your account.",
            )
        checks = [(self._limit(cfg.per_second), sender or service)] if cfg.per_second else []
        now, refusal = self.ledger.admit(checks, at=read_at(request))
        if refusal is not None:
            return twilio_error(429, 20429, "Too Many Requests")
        if not self._valid_number(to):
            return twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if to in cfg.unsubscribed_numbers:
            return twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")
        sid = "SM" + secrets.token_hex(16)
        delivery_id = None
        if callback:
            query = parse_qs(urlsplit(callback).query)
            delivery_id = next((query[p][0] for p in cfg.delivery_id_params if p in query), None)
        self.ledger.record(
            Delivered(
                channel="sms",
                recipient=to,
                text=text,
                provider_id=sid,
                arrived_at=now,
                delivery_id=delivery_id,
                meta={"from": sender, "messaging_service_sid": service},
            )
        )
        created = _rfc2822(datetime.now(UTC))
        resource: dict[str, Any] = {
            "account_sid": cfg.account_sid,
            "api_version": API_VERSION,
            "body": text,
            "date_created": created,
            "date_sent": None,
            "date_updated": created,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender or None,
            "messaging_service_sid": service or None,
            "num_media": "0",
            "num_segments": str(segments(text)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {
                "media": f"/{API_VERSION}/Accounts/{cfg.account_sid}/Messages/{sid}/Media.json"
            },
            "to": to,
            "uri": f"/{API_VERSION}/Accounts/{cfg.account_sid}/Messages/{sid}.json",
        }
        if callback and cfg.status_callbacks:
            self.spawn(self._status_callbacks(callback, sid, sender or cfg.from_number, to))
        if cfg.latency_s > 0:
            await asyncio.sleep(cfg.latency_s)
        return JSONBody(resource, status_code=201)

    async def _status_callbacks(self, url: str, sid: str, sender: str, to: str) -> None:
        cfg = self.config
        for status in ("sent", "delivered"):
            await asyncio.sleep(cfg.callback_delay_s)
            params = {
                "AccountSid": cfg.account_sid,
                "ApiVersion": API_VERSION,
                "From": sender,
                "MessageSid": sid,
                "MessageStatus": status,
                "SmsSid": sid,
                "SmsStatus": status,
                "To": to,
            }
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                SIGNATURE_HEADER: twilio_signature(cfg.auth_token, url, params),
                "I-Twilio-Idempotency-Token": secrets.token_hex(16),
                "User-Agent": "TwilioProxy/1.1",
            }
            await self.post_callback(
                url,
                content=urlencode(params).encode(),
                headers=headers,
                allow_remote=cfg.allow_remote_callbacks,
            )
