"""WhatsApp Cloud API messages: request building and answer classification are pure.

Delivery is 1:1 (the Cloud API cannot post into resident groups). Inside the 24-hour customer
service window free text is allowed; outside it only an approved template may open the chat.

Sources for the classification (Graph API `error.code`; Meta advises to branch on the code and
`error_data.details`, not on titles or HTTP status):
- https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes (130429 rate limit
  hit, 131056 pair rate limit, 80007 WABA rate limit, 4 too many calls; 131047 re-engagement
  message; 131026 undeliverable; 131030 recipient not in allowed list; 131009 parameter value
  not valid; 131050 user stopped marketing messages; 190 access token expired, 0/401 auth;
  1 API unknown, 2 API service, 131000 something went wrong, 131016 service unavailable)
- https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages (200 with
  `messages[0].id`; `biz_opaque_callback_data` up to 512 characters, echoed in status webhooks)
- Template parameters may not contain line breaks, tabs or more than four spaces in a row
  (Meta answers "Param text cannot have new-line/tab characters or more than 4 consecutive
  spaces"; see github.com/netflie/whatsapp-cloud-api/issues/201) and a body is at most 1024
  characters.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from dataclasses import dataclass
from typing import Any

import httpx

from services.notifier.channels.base import (
    ChannelSender,
    OutboundMessage,
    PermanentReason,
    SendPermanent,
    SendTransient,
    Sent,
    request_failure,
)
from shared.schemas import MemberChannel
from shared.settings import NotifierSettings

log = logging.getLogger(__name__)

#: Free-text body limit of a text message.
TEXT_MAX = 4096
#: Limit of the one body parameter of our template.
TEMPLATE_PARAM_MAX = 1024
#: biz_opaque_callback_data limit.
CALLBACK_DATA_MAX = 512

_RATE_LIMITED = frozenset({130429, 131056, 80007, 4})
_SERVER_ERRORS = frozenset({1, 2, 131000, 131016})
_PERMANENT: dict[int, PermanentReason] = {
    131047: "outside_window",  # more than 24 h since the member last wrote: template needed
    131026: "invalid_address",  # not on WhatsApp, old client, or terms not accepted
    131030: "invalid_address",  # not in the allowed list of a test number
    131050: "opted_out",  # the member stopped marketing messages from us
    190: "auth",  # access token expired or revoked
    10: "auth",  # permission denied: the token lacks whatsapp_business_messaging
}
_INVALID_PARAMETER = 131009
#: Words in a 131009 message or details that point at the `to` field, not at our template.
_RECIPIENT_WORDS = ("recipient", "phone number", "'to'", '"to"', "wa_id")
_LINE_BREAK = re.compile(r"\s*[\r\n]+\s*")


@dataclass(frozen=True, slots=True)
class WhatsAppRequest:
    """One /messages call; headers carry the bearer token, so neither is ever logged."""

    url: str
    headers: dict[str, str]
    json: dict[str, Any]


def wa_recipient(address: str) -> str:
    """E.164 as the Cloud API wants it: digits only, no leading "+"."""
    return "".join(ch for ch in address if ch.isdigit())


def template_parameter(text: str) -> str:
    """Text made acceptable as a template body parameter: one line, at most 1024 characters."""
    # Line breaks become a visible separator instead of gluing two sentences together.
    flat = " ".join(_LINE_BREAK.sub(" | ", text.strip()).split())
    if len(flat) > TEMPLATE_PARAM_MAX:
        flat = flat[: TEMPLATE_PARAM_MAX - 1].rstrip() + "…"
    return flat


def build_request(settings: NotifierSettings, message: OutboundMessage) -> WhatsAppRequest:
    """The /messages request: free text inside the 24-hour window, else the template."""
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": wa_recipient(message.address),
        # Echoed in status webhooks: the receipt finds its delivery without our SID record.
        "biz_opaque_callback_data": message.delivery_id[:CALLBACK_DATA_MAX],
    }
    if message.in_session:
        text = message.text if len(message.text) <= TEXT_MAX else message.text[: TEXT_MAX - 1] + "…"
        body["type"] = "text"
        body["text"] = {"preview_url": False, "body": text}
    else:
        body["type"] = "template"
        body["template"] = {
            "name": settings.whatsapp_template_name,
            "language": {"code": settings.whatsapp_template_language},
            "components": [
                {
                    "type": "body",
                    "parameters": [{"type": "text", "text": template_parameter(message.text)}],
                }
            ],
        }
    base = settings.whatsapp_api_base.rstrip("/")
    return WhatsAppRequest(
        url=f"{base}/{settings.whatsapp_api_version}/{settings.whatsapp_phone_number_id}/messages",
        headers={"Authorization": f"Bearer {settings.whatsapp_token}"},
        json=body,
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header in delta-seconds form; None if absent or unusable."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def classify(
    status: int, body: Any, retry_after: str | None = None
) -> Sent | SendTransient | SendPermanent:
    """The Graph API's answer as Sent or a typed failure (returned, not raised)."""
    data: dict[str, Any] = body if isinstance(body, dict) else {}
    error = data.get("error")
    error = error if isinstance(error, dict) else {}
    if 200 <= status < 300 and not error:
        messages = data.get("messages")
        first = messages[0] if isinstance(messages, list) and messages else None
        wamid = first.get("id") if isinstance(first, dict) else None
        # Accepted is accepted: retrying without an id would send the alert twice.
        return Sent(wamid if isinstance(wamid, str) else "")
    code = _int(error.get("code"))
    error_data = error.get("error_data")
    raw_details = error_data.get("details") if isinstance(error_data, dict) else None
    details = raw_details if isinstance(raw_details, str) else ""
    detail = f"http {status}" + (f" code {code}" if code is not None else "")
    after = parse_retry_after(retry_after)
    if code in _RATE_LIMITED or status == 429:
        return SendTransient("rate_limited", detail, retry_after_s=after)
    if code in _PERMANENT:
        return SendPermanent(_PERMANENT[code], detail)
    if code == _INVALID_PARAMETER:
        # 131009 covers any bad parameter; only a bad recipient is the member's address.
        lowered = f"{details} {error.get('message', '')}".lower()
        if any(word in lowered for word in _RECIPIENT_WORDS):
            return SendPermanent("invalid_address", detail)
        return SendPermanent("rejected", detail)
    if code in _SERVER_ERRORS or status >= 500:
        return SendTransient("server_error", detail, retry_after_s=after)
    if status == 401:
        return SendPermanent("auth", detail)
    if 400 <= status < 500:
        return SendPermanent("rejected", detail)
    # 2xx carrying an error, 1xx/3xx: unexpected; bounded retries surface it.
    return SendTransient("server_error", f"unexpected {detail}")


def needs_template(error: BaseException, message: OutboundMessage) -> bool:
    """Whether a failed free-text send may be retried at once as the approved template."""
    # Our record of the 24-hour window can be stale (clock skew, a window that just closed);
    # Meta's 131047 is the authority, and the template is allowed outside the window.
    return (
        isinstance(error, SendPermanent) and error.reason == "outside_window" and message.in_session
    )


def as_template(message: OutboundMessage) -> OutboundMessage:
    """The same message, to be sent as the approved template."""
    return dataclasses.replace(message, in_session=False)


async def send_with_template_fallback(sender: ChannelSender, message: OutboundMessage) -> Sent:
    """Send; when Meta says the 24-hour window has closed, send the approved template instead."""
    try:
        return await sender.send(message)
    except SendPermanent as exc:
        if not needs_template(exc, message):
            raise
        log.debug(
            "whatsapp window closed; sending template", extra={"delivery_id": message.delivery_id}
        )
        return await sender.send(as_template(message))


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:  # an HTML error page from a proxy, or an empty body
        return None


class WhatsAppSender:
    """Sends WhatsApp messages from one business number over one pooled HTTP client."""

    name: MemberChannel = "whatsapp"

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
            response = await self._client.post(
                request.url, json=request.json, headers=request.headers
            )
        except httpx.RequestError as exc:
            # Ambiguous once connected: the status webhook tells (see request_failure).
            raise request_failure(exc) from exc
        outcome = classify(
            response.status_code, _json(response), response.headers.get("Retry-After")
        )
        if isinstance(outcome, Sent):
            return outcome
        if isinstance(outcome, SendPermanent) and outcome.reason == "auth":
            log.warning("whatsapp refused our access token", extra={"detail": outcome.detail})
        log.debug(
            "whatsapp send failed",
            extra={"delivery_id": message.delivery_id, "detail": str(outcome)},
        )
        raise outcome

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()
