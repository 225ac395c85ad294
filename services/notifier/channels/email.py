"""E-mail over SMTP (aiosmtplib): message building and reply classification are pure.

Sources for the classification:
- RFC 5321 section 4.2 (reply codes: 4yz transient, 5yz permanent; 550 mailbox unavailable,
  551 user not local, 553 mailbox name not allowed, 552 storage exceeded, 554 failed)
- RFC 4954 section 6 (530 authentication required, 534 mechanism too weak, 535 credentials
  invalid, 538 encryption required)
- RFC 3834 (Auto-Submitted: auto-generated, so vacation responders stay quiet)
- RFC 8314 section 3.3 (port 465 is implicit TLS)
"""

from __future__ import annotations

import asyncio
import logging
import re
import string
from collections.abc import Awaitable, Callable
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Literal

import aiosmtplib
from aiosmtplib.response import SMTPResponse
from aiosmtplib.typing import Default

from services.notifier.channels.base import OutboundMessage, SendPermanent, SendTransient, Sent
from shared.schemas import MemberChannel, utcnow
from shared.settings import NotifierSettings

log = logging.getLogger(__name__)

SmtpStage = Literal["sender", "recipient", "data", "other"]

_MESSAGE_ID_DOMAIN = "buurtalert"  # matches _OUR_MESSAGE_ID below
#: Kept as they are in a Message-ID; everything else is escaped as "=XX" (UTF-8 bytes). All of
#: these and "=" are RFC 5322 atext, so the result is a valid dot-atom without quoting.
_ID_SAFE = frozenset(string.ascii_letters + string.digits + "-_")
_OUR_MESSAGE_ID = re.compile(r"<((?:[A-Za-z0-9._-]|=[0-9A-F]{2})+)@buurtalert>")
#: One plain addr-spec: no display name, no list, nothing that could fold into a second header.
_ADDRESS = re.compile(r"^[^@\s<>,;:\"()\[\]\\]+@[^@\s<>,;:\"()\[\]\\]+$")
_MAILBOX_CODES = frozenset({550, 551, 553})
_AUTH_CODES = frozenset({530, 534, 535, 538})
_IMPLICIT_TLS_PORT = 465
_FALLBACK_SUBJECT = "Buurtalert"
#: aiosmtplib raises a plain SMTPException with these messages when the relay lacks what
#: SMTP_STARTTLS / SMTP_USERNAME ask for.
_SETUP_REFUSED = (
    "STARTTLS extension not supported",
    "AUTH extension is not supported",
    "No suitable authentication method",
)


def message_id(delivery_id: str) -> str:
    """The deterministic Message-ID of a delivery: a resend is recognised as the same mail."""
    # Delivery ids look like "<alert>.sms:<hash>"; ":" may not stand unquoted left of "@", so
    # unsafe characters are escaped reversibly ("=3A") and a bounce can be traced back.
    if not delivery_id:
        raise ValueError("a delivery id is never empty")
    out: list[str] = []
    last = len(delivery_id) - 1
    for i, ch in enumerate(delivery_id):
        if ch in _ID_SAFE or (ch == "." and 0 < i < last and delivery_id[i - 1] != "."):
            out.append(ch)
        else:
            out.extend(f"={byte:02X}" for byte in ch.encode("utf-8", "surrogatepass"))
    return f"<{''.join(out)}@{_MESSAGE_ID_DOMAIN}>"


def delivery_id_of(message_id_value: str) -> str | None:
    """The delivery id inside one of our Message-IDs (e.g. quoted by a bounce), else None."""
    match = _OUR_MESSAGE_ID.fullmatch(message_id_value.strip())
    if match is None:
        return None
    try:
        raw = re.sub(
            rb"=([0-9A-F]{2})",
            lambda m: bytes([int(m.group(1), 16)]),
            match.group(1).encode("ascii"),
        )
        return raw.decode("utf-8", "surrogatepass")
    except (UnicodeError, ValueError):
        return None


def build_email(
    settings: NotifierSettings, message: OutboundMessage, *, now: datetime | None = None
) -> EmailMessage:
    """The e-mail for one recipient; SendPermanent(invalid_address) if the address is unusable."""
    address = message.address.strip()
    if not _ADDRESS.match(address):
        raise SendPermanent("invalid_address", "not a single plain e-mail address")
    mail = EmailMessage()
    mail["From"] = settings.smtp_from
    mail["To"] = address
    # Header values may not carry line breaks; collapsing whitespace also stops injection.
    mail["Subject"] = " ".join(message.subject.split()) or _FALLBACK_SUBJECT
    mail["Date"] = format_datetime(now or utcnow())
    # Receiving systems de-duplicate on Message-ID, so a retried send is not a second mail.
    mail["Message-ID"] = message_id(message.delivery_id)
    # Some relays rewrite Message-ID; a bounce that quotes the original headers (RFC 3464
    # text/rfc822-headers) still carries this one.
    mail["X-Buurtalert-Delivery-Id"] = " ".join(message.delivery_id.split())
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(message.text, charset="utf-8")
    return mail


def classify_reply(code: int, stage: SmtpStage = "other") -> SendTransient | SendPermanent:
    """An SMTP reply code as a typed failure; `stage` says which command it answered."""
    detail = f"smtp {code} at {stage}"
    if 400 <= code < 500:
        return SendTransient("server_error", detail)
    if code in _AUTH_CODES:
        return SendPermanent("auth", detail)
    if 500 <= code < 600:
        # Only a refused RCPT says the mailbox is wrong; a refused MAIL FROM is our sender and a
        # refused DATA is the content or policy.
        if code in _MAILBOX_CODES and stage in ("recipient", "other"):
            return SendPermanent("invalid_address", detail)
        return SendPermanent("rejected", detail)
    # aiosmtplib reports unparseable replies as -1: the connection, not the mail, is broken.
    return SendTransient("network", f"unexpected {detail}")


def classify_smtp_error(exc: BaseException) -> SendTransient | SendPermanent:
    """An aiosmtplib (or socket) error as a typed failure."""
    if isinstance(exc, SendTransient | SendPermanent):
        return exc
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [refused.code for refused in exc.recipients]
        return classify_reply(codes[0] if codes else -1, "recipient")
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return classify_reply(exc.code, "recipient")
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return classify_reply(exc.code, "sender")
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return classify_reply(exc.code, "data")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return classify_reply(exc.code, "other")
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        return SendTransient("timeout", type(exc).__name__)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        # aiosmtplib raises it for SMTPUTF8: a non-ASCII address this relay cannot carry.
        return SendPermanent("rejected", type(exc).__name__)
    if isinstance(exc, aiosmtplib.SMTPException) and any(
        fragment in exc.message for fragment in _SETUP_REFUSED
    ):
        # STARTTLS or AUTH configured but not offered: sending anyway could leak the password,
        # and retrying cannot fix a relay's configuration.
        return SendPermanent("auth", exc.message[:120])
    return SendTransient("network", type(exc).__name__)


class _CommittingSMTP(aiosmtplib.SMTP):
    """aiosmtplib's client, calling a hook right before DATA.

    Until the end of DATA the relay has accepted nothing (RFC 5321 4.1.1.4): a transaction cut
    off before it was never a message. The hook marks that point, so a notifier killed earlier
    leaves a delivery that is known unsent and may be sent again.
    """

    before_data: Callable[[], Awaitable[None]] | None = None

    async def data(
        self,
        message: str | bytes,
        /,
        *,
        timeout: float | Literal[Default.token] | None = Default.token,  # noqa: ASYNC109
    ) -> SMTPResponse:
        """Run the hook, then DATA as aiosmtplib does."""
        if self.before_data is not None:
            await self.before_data()
        return await super().data(message, timeout=timeout)


class SmtpSender:
    """Sends e-mail through one SMTP relay, one connection per message, bounded concurrency."""

    name: MemberChannel = "email"

    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings
        # A relay handles one transaction per connection at a time; the semaphore keeps us
        # at send_concurrency connections like the HTTP adapters' pools.
        self._slots = asyncio.Semaphore(settings.send_concurrency)
        self._envelope_from = parseaddr(settings.smtp_from)[1] or settings.smtp_from

    async def send(self, message: OutboundMessage) -> Sent:
        """Send one e-mail; raise SendTransient or SendPermanent on failure."""
        settings = self.settings
        mail = build_email(settings, message)
        implicit_tls = settings.smtp_port == _IMPLICIT_TLS_PORT
        client = _CommittingSMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username or None,
            password=settings.smtp_password or None,
            use_tls=implicit_tls,
            start_tls=settings.smtp_starttls and not implicit_tls,
            timeout=settings.provider_timeout_s,
        )
        client.before_data = message.commit
        try:
            async with self._slots, client:
                await client.send_message(
                    mail, sender=self._envelope_from, recipients=[message.address.strip()]
                )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            outcome = classify_smtp_error(exc)
            if isinstance(outcome, SendPermanent) and outcome.reason == "auth":
                log.warning(
                    "smtp relay refused our login or TLS setup", extra={"detail": str(outcome)}
                )
            log.debug(
                "smtp send failed",
                extra={"delivery_id": message.delivery_id, "detail": str(outcome)},
            )
            raise outcome from exc
        # SMTP has no standard queue id; our Message-ID is what bounces and receipts quote.
        return Sent(str(mail["Message-ID"]))

    async def aclose(self) -> None:
        """Nothing pooled: each message used and closed its own connection."""
