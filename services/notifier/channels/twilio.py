"""SMS through Twilio's Messages API: request building and answer classification are pure.

Sources for the classification (Twilio's documented error codes):
- https://www.twilio.com/docs/api/errors/20429 (429 Too Many Requests: never processed, safe to
  retry after backing off)
- https://www.twilio.com/docs/api/errors/20003 (permission denied: wrong SID or token)
- https://www.twilio.com/docs/api/errors/21211 (invalid 'To' phone number),
  https://www.twilio.com/docs/api/errors/21614 ('To' is not a mobile number),
  https://www.twilio.com/docs/api/errors/21612 ('To' is not reachable by SMS)
- https://www.twilio.com/docs/api/errors/21610 (recipient replied STOP: unsubscribed)
- https://www.twilio.com/docs/messaging/api/message-resource (201 with `sid`; Body at most
  1600 characters, else error 21617)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from services.notifier.channels.base import (
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

#: Twilio refuses longer bodies (error 21617); cut ourselves so the alert still goes out.
BODY_MAX = 1600
_ELLIPSIS = "..."  # GSM-7, so a cut message does not switch to UCS-2 segments

#: Twilio error codes that say something about the recipient rather than the request.
_PERMANENT_CODES: dict[int, PermanentReason] = {
    21211: "invalid_address",  # 'To' is not a valid phone number
    21612: "invalid_address",  # 'To' cannot be reached by SMS (landline, unroutable)
    21614: "invalid_address",  # 'To' is not a mobile number
    21610: "opted_out",  # the recipient sent STOP to this sender
    20003: "auth",  # wrong account SID / auth token
}
_RATE_LIMIT_CODE = 20429


@dataclass(frozen=True, slots=True)
class TwilioRequest:
    """Everything one Messages.json POST needs; the address and text are never logged."""

    url: str
    form: dict[str, str]
    auth: tuple[str, str]


def status_callback_url(public_url: str, delivery_id: str) -> str:
    """Where Twilio posts the delivery receipt; carries the delivery id for matching."""
    # The id rides in the URL so a receipt can be matched even if we crashed before we
    # recorded the SID Twilio gave us.
    return f"{public_url.rstrip('/')}/webhooks/twilio/status?d={quote(delivery_id, safe='')}"


def build_request(settings: NotifierSettings, message: OutboundMessage) -> TwilioRequest:
    """The Messages.json request for one SMS."""
    sid = settings.twilio_account_sid
    body = message.text
    if len(body) > BODY_MAX:
        body = body[: BODY_MAX - len(_ELLIPSIS)] + _ELLIPSIS
    return TwilioRequest(
        url=f"{settings.twilio_api_base.rstrip('/')}/2010-04-01/Accounts/{quote(sid, safe='')}"
        "/Messages.json",
        form={
            "To": message.address,
            "From": settings.twilio_from_number,
            "Body": body,
            "StatusCallback": status_callback_url(settings.public_url, message.delivery_id),
        },
        auth=(sid, settings.twilio_auth_token),
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header in delta-seconds form; None if absent or unusable."""
    # The HTTP-date form is ignored on purpose: it needs a clock, and our own backoff is a
    # fine stand-in for the rare provider that uses it.
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _int(value: Any) -> int | None:
    # bool is an int in Python, but `true` is never an error code.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def classify(
    status: int, body: Any, retry_after: str | None = None
) -> Sent | SendTransient | SendPermanent:
    """Twilio's answer as Sent or a typed failure (returned, not raised)."""
    data: dict[str, Any] = body if isinstance(body, dict) else {}
    if 200 <= status < 300:
        sid = data.get("sid")
        # Accepted is accepted: retrying a 2xx without a SID would send the SMS twice.
        return Sent(sid if isinstance(sid, str) else "")
    code = _int(data.get("code"))
    detail = f"http {status}" + (f" code {code}" if code is not None else "")
    if status == 429 or code == _RATE_LIMIT_CODE:
        return SendTransient("rate_limited", detail, retry_after_s=parse_retry_after(retry_after))
    if code in _PERMANENT_CODES:
        return SendPermanent(_PERMANENT_CODES[code], detail)
    if status == 401:
        return SendPermanent("auth", detail)
    if status >= 500:
        return SendTransient("server_error", detail, retry_after_s=parse_retry_after(retry_after))
    if 400 <= status < 500:
        return SendPermanent("rejected", detail)
    # 1xx/3xx: a proxy or a wrong base URL; bounded retries surface it without losing the SMS.
    return SendTransient("server_error", f"unexpected {detail}")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:  # an HTML error page from a proxy, or an empty body
        return None


class TwilioSmsSender:
    """Sends SMS through Twilio over one pooled HTTP client."""

    name: MemberChannel = "sms"

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
        """Send one SMS; raise SendTransient or SendPermanent on failure."""
        request = build_request(self.settings, message)
        try:
            response = await self._client.post(request.url, data=request.form, auth=request.auth)
        except httpx.RequestError as exc:
            # Ambiguous once connected: Twilio may have queued it. Its StatusCallback carries
            # the delivery id, so the delivery waits for that receipt before any second copy.
            raise request_failure(exc) from exc
        outcome = classify(
            response.status_code, _json(response), response.headers.get("Retry-After")
        )
        if isinstance(outcome, Sent):
            return outcome
        if isinstance(outcome, SendPermanent) and outcome.reason == "auth":
            log.warning("twilio refused our credentials", extra={"detail": outcome.detail})
        log.debug(
            "twilio send failed",
            extra={"delivery_id": message.delivery_id, "detail": str(outcome)},
        )
        raise outcome

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()
