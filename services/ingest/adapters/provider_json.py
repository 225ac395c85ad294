"""JSON payloads from providers (Telegram, WhatsApp): lenient models that keep the raw body."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from services.ingest.adapters.errors import WebhookRejected


class ProviderModel(BaseModel):
    """A provider's object: providers add fields over time, so keep them rather than reject
    (a rejected webhook is retried, and retried, and retried)."""

    model_config = ConfigDict(
        frozen=True, extra="allow", populate_by_name=True, allow_inf_nan=False
    )


class RawPayloadModel(ProviderModel):
    """A whole webhook payload that also remembers the JSON it came from."""

    _raw: dict[str, Any] | None = PrivateAttr(default=None)

    @property
    def raw(self) -> dict[str, Any]:
        """The payload as received (or as this model would serialise)."""
        if self._raw is not None:
            return self._raw
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


Payload = TypeVar("Payload", bound=RawPayloadModel)


def describe(exc: ValidationError) -> str:
    """The first validation problem, named by its field; never echoes the input."""
    err = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in err["loc"]) or "body"
    if err["type"] == "missing":
        return f"missing field {where}"
    return f"invalid field {where}: {err['msg']}"


def parse_payload(model: type[Payload], data: object, *, what: str, max_bytes: int) -> Payload:
    """Validate a payload given as the raw body or parsed JSON; WebhookRejected otherwise."""
    if isinstance(data, bytes | bytearray | str):
        if len(data) > max_bytes:
            raise WebhookRejected("malformed", f"{what} is too large")
        try:
            parsed = model.model_validate_json(data, by_alias=True)
        except ValidationError as exc:
            raise WebhookRejected("malformed", describe(exc)) from None
        parsed._raw = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return parsed
    if not isinstance(data, dict):
        raise WebhookRejected("malformed", f"{what} must be a JSON object")
    try:
        parsed = model.model_validate(data, by_alias=True)
    except ValidationError as exc:
        raise WebhookRejected("malformed", describe(exc)) from None
    parsed._raw = data
    return parsed
