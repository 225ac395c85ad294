"""Typed errors: transient ones are retried with a delay, permanent ones are dead-lettered."""

from __future__ import annotations


class BuurtalertError(Exception):
    """Base of buurtalert's own errors."""


class TransientError(BuurtalertError):
    """Worth retrying: a dependency is briefly unavailable (Redis down, provider 5xx or 429)."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentError(BuurtalertError):
    """Retrying will not help: malformed event, unknown schema version."""


class Deferred(BuurtalertError):
    """Not yet: hand the message back for later without counting it as a failure."""

    def __init__(self, message: str, *, delay_s: float) -> None:
        super().__init__(message)
        self.delay_s = delay_s
