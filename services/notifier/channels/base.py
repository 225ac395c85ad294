"""What every outbound channel speaks: one message in, a provider id out, or a typed failure.

Adapters are thin: building the provider request and classifying its answer are pure functions
beside each adapter, so the provider's documented formats are unit-tested without a network.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import httpx

from shared.errors import PermanentError, TransientError
from shared.schemas import MemberChannel

#: Why a send failed for good; a bounded set so it can be a metric label.
PermanentReason = Literal[
    "invalid_address", "blocked", "opted_out", "outside_window", "rejected", "auth"
]
#: Why a send may succeed later; bounded too.
TransientReason = Literal["rate_limited", "server_error", "timeout", "network"]


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One message to one recipient on one channel."""

    delivery_id: str  # stable per (alert, recipient, channel): idempotency and receipt matching
    channel: MemberChannel
    address: str  # E.164, Telegram chat id or e-mail address; never logged
    text: str
    subject: str = ""  # e-mail subject line; other channels ignore it
    in_session: bool = False  # WhatsApp: inside the 24-hour window, so free text is allowed
    # Called by an adapter whose protocol has a point of no return before which the provider
    # certainly has nothing (SMTP: before DATA), right before it; raises SendAbandoned when the
    # delivery is no longer ours. Lets a send cut off before that point be sent again safely.
    commit: Callable[[], Awaitable[None]] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Sent:
    """The provider accepted the message."""

    provider_message_id: str


class SendTransient(TransientError):
    """Worth retrying later; retry_after_s is the provider's own hint when it gave one.

    may_have_arrived: the request may have reached the provider although we got no answer
    (a read timeout, a connection dropped after sending), so sending it again could be a
    second message to the person.
    """

    def __init__(
        self,
        reason: TransientReason,
        detail: str = "",
        *,
        retry_after_s: float | None = None,
        may_have_arrived: bool = False,
    ) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason, retry_after_s=retry_after_s)
        self.reason = reason
        self.detail = detail
        self.may_have_arrived = may_have_arrived


#: HTTP failures that happen before a request is written: the provider certainly has nothing.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def request_failure(exc: httpx.RequestError) -> SendTransient:
    """An HTTP request that got no answer, as a transient failure that says whether the
    provider may have the message (anything after connecting: it may)."""
    reason: TransientReason = "timeout" if isinstance(exc, httpx.TimeoutException) else "network"
    return SendTransient(
        reason, type(exc).__name__, may_have_arrived=not isinstance(exc, _NEVER_SENT)
    )


class SendPermanent(PermanentError):
    """Retrying will not help; recorded as the recipient's outcome."""

    def __init__(self, reason: PermanentReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ChannelSender(Protocol):
    """An outbound provider adapter."""

    name: MemberChannel

    async def send(self, message: OutboundMessage) -> Sent:
        """Send once; raise SendTransient or SendPermanent on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class SendAbandoned(Exception):
    """The delivery was taken over by another notifier: neither send it nor record it."""
