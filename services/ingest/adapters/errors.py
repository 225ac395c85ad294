"""The one error every webhook adapter raises for input it will not accept."""

from __future__ import annotations

from typing import Final, Literal

Reason = Literal["missing_signature", "bad_signature", "malformed", "not_configured"]

#: The status an HTTP edge should answer with; providers retry on 5xx, so only a missing
#: secret on our side (not the sender's fault) gets one.
HTTP_STATUS: Final[dict[Reason, int]] = {
    "missing_signature": 403,
    "bad_signature": 403,
    "malformed": 400,
    "not_configured": 503,
}


class WebhookRejected(ValueError):
    """A webhook refused: `reason` is a short machine word, `detail` a human sentence."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: Reason = reason
        self.detail = detail

    @property
    def http_status(self) -> int:
        """Suggested HTTP status for this rejection."""
        return HTTP_STATUS[self.reason]
