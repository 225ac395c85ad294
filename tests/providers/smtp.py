"""SMTP stub on aiosmtpd: records every message, rejects configured mailboxes, meters a rate.

Replies use the RFC 5321 codes with RFC 3463 enhanced status codes, as relays send them:
550 5.1.1 for a mailbox that does not exist, 451 4.3.0 for a transient failure, and
451 4.7.1 (configurable, e.g. to 421 4.7.0) when the per-second limit would be exceeded.
Unlike the HTTP stubs, a refused RCPT never reaches the limiter: SMTP refuses it before
any message exists; the limit counts each accepted recipient of a message at end of DATA.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import secrets
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from pydantic import BaseModel, Field, field_validator

from tests.providers.common import (
    Channel,
    Delivered,
    Fault,
    Ledger,
    Limit,
    StubBase,
    normalise_addresses,
)

LIMIT_RATE = "smtp.rate"
_FAULT_REPLIES = {
    421: "421 4.3.2 Service not available, try again later",
    450: "450 4.2.1 Mailbox busy, try again later",
    451: "451 4.3.0 Temporary failure, try again later",
    452: "452 4.3.1 Insufficient system storage",
    550: "550 5.1.1 Mailbox unavailable",
    554: "554 5.7.1 Transaction failed",
}


class SmtpConfig(BaseModel):
    """Sender address, rejections, limit and fault settings of the SMTP stub."""

    from_address: str = "buurtalert@localhost"
    rejected_addresses: set[str] = Field(default_factory=set, description="550 5.1.1 at RCPT")
    transient_addresses: set[str] = Field(default_factory=set, description="451 4.3.0 at RCPT")
    per_second: int | None = Field(20, description="recipients per second over all messages")
    window_s: float = 1.0
    rate_limit_reply: str = "451 4.7.1 Rate limit exceeded, try again later"
    delivery_id_headers: tuple[str, ...] = ("X-Delivery-Id", "X-Buurtalert-Delivery-Id")
    latency_s: float = 0.0

    @field_validator("rejected_addresses", "transient_addresses")
    @classmethod
    def _lower(cls, value: set[str]) -> set[str]:
        # Matched case-insensitively, as relays treat mailboxes in practice.
        return normalise_addresses(value)


def fault_reply(fault: Fault) -> str:
    """The SMTP reply line for an injected failure."""
    reply = _FAULT_REPLIES.get(fault.status)
    if reply is None:
        klass = 4 if fault.status < 500 else 5
        reply = f"{fault.status} {klass}.0.0 Injected failure"
    return reply


def _text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    if not isinstance(part, EmailMessage):
        return ""
    content = part.get_content()
    return content.rstrip("\r\n") if isinstance(content, str) else ""


class StampingSMTP(SMTP):
    """aiosmtpd's protocol, noting when it last read from the socket (a message's arrival).

    At end of DATA the latest read is the one that brought the end of the message: the
    client waits for the reply before it sends more.
    """

    def __init__(self, handler: Any, clock: Callable[[], float], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._clock = clock
        self.read_at = clock()

    def data_received(self, data: bytes) -> None:
        """Stamp the read, before aiosmtpd parses it."""
        self.read_at = self._clock()
        super().data_received(data)


class SmtpStub(StubBase):
    """An aiosmtpd handler that records, rejects and meters like a relay."""

    channel: Channel = "email"

    def __init__(self, ledger: Ledger, config: SmtpConfig | None = None) -> None:
        super().__init__(ledger)
        self.config = config or SmtpConfig()
        if self.config.per_second:
            ledger.register(Limit(LIMIT_RATE, self.config.per_second, self.config.window_s))

    def factory(self) -> SMTP:
        """A protocol instance per connection (for loop.create_server)."""
        # A fixed hostname: aiosmtpd would otherwise call socket.getfqdn() per connection.
        return StampingSMTP(self, self.ledger.now, hostname="stub.localhost", enable_SMTPUTF8=True)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept or refuse one recipient."""
        self.ledger.count_request("email")
        cfg = self.config
        lowered = address.lower()
        if lowered in cfg.rejected_addresses or address in cfg.rejected_addresses:
            return f"550 5.1.1 <{address}>: Recipient address rejected: mailbox unavailable"
        if lowered in cfg.transient_addresses or address in cfg.transient_addresses:
            return f"451 4.3.0 <{address}>: Temporary failure, try again later"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Meter, parse and record a message for each accepted recipient."""
        cfg = self.config
        fault = self.faults.take()
        if fault is not None:
            return fault_reply(fault)
        recipients = [r.lower() for r in envelope.rcpt_tos]
        checks = (
            [(Limit(LIMIT_RATE, cfg.per_second, cfg.window_s), "relay")] if cfg.per_second else []
        )
        arrived_at = server.read_at if isinstance(server, StampingSMTP) else None
        now, refusal = self.ledger.admit(checks, weight=len(recipients), at=arrived_at)
        if refusal is not None:
            return cfg.rate_limit_reply
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        message: Any = email.message_from_bytes(raw, policy=email.policy.default)
        subject = str(message.get("Subject", ""))
        message_id = str(message.get("Message-ID", "")).strip()
        delivery_id = next(
            (str(message[h]).strip() for h in cfg.delivery_id_headers if message[h] is not None),
            None,
        )
        text = _text_of(message) if isinstance(message, EmailMessage) else ""
        queue_id = secrets.token_hex(6).upper()
        for recipient in recipients:
            self.ledger.record(
                Delivered(
                    channel="email",
                    recipient=recipient,
                    text=text,
                    provider_id=message_id or queue_id,
                    arrived_at=now,
                    delivery_id=delivery_id,
                    subject=subject,
                    meta={
                        "mail_from": envelope.mail_from or "",
                        "message_id": message_id,
                        "queue_id": queue_id,
                        "from": str(message.get("From", "")),
                    },
                )
            )
        if cfg.latency_s > 0:
            await asyncio.sleep(cfg.latency_s)
        return f"250 2.0.0 Ok: queued as {queue_id}"
