"""POST /v1/notices: police dispatch pushes area notices as JSON or CAP 1.2 XML."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from prometheus_client import Counter
from pydantic import ValidationError

from services.ingest.adapters.cap import CapError, parse_cap
from services.ingest.adapters.notice_json import NoticeError, NoticeIn, to_notice
from services.ingest.auth import Role, bearer_token, require
from services.ingest.normalise import alert_id_for
from services.ingest.publishing import AlertPublisher
from shared.notices import Notice
from shared.schemas import AlertAccepted, AlertReceived, new_alert_id, utcnow

MAX_NOTICE_BYTES = 1_000_000
_XML_TYPES = ("application/cap+xml", "application/xml", "text/xml")


def _sender_of(key: str) -> str:
    # A key's holder, named without revealing the key itself.
    return "dispatch:" + hashlib.sha256(key.encode()).hexdigest()[:12]


def notice_alert(notice: Notice, alert_id: str, raw: dict[str, Any]) -> AlertReceived:
    """A notice as the AlertReceived that the router routes."""
    text = notice.text if notice.text and notice.text != notice.headline else ""
    return AlertReceived(
        alert_id=alert_id,
        kind="notice",
        channel="dispatch",
        sender_ref=notice.sender,
        text=f"{notice.headline}\n{text}".strip() if notice.headline else text,
        location=None,
        called_112=None,
        received_at=utcnow(),
        raw=raw,
        notice=notice,
    )


def install(
    app: FastAPI,
    *,
    publisher: AlertPublisher,
    keys: list[tuple[str, Role]],
    rejected: Counter,
) -> None:
    """Add POST /v1/notices."""
    router = APIRouter(prefix="/v1", tags=["dispatch"])

    def refuse(reason: str, detail: str) -> HTTPException:
        rejected.labels("/v1/notices", reason).inc()
        return HTTPException(422, detail)

    @router.post(
        "/notices",
        status_code=202,
        response_model=AlertAccepted,
        dependencies=[Depends(require("dispatch", keys))],
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {"schema": NoticeIn.model_json_schema()},
                    "application/cap+xml": {"schema": {"type": "string"}},
                },
                "required": True,
            }
        },
    )
    async def post_notice(request: Request) -> AlertAccepted:
        """An area notice (JSON, or CAP 1.2 with polygon, circle or CBS geocodes)."""
        body = await request.body()
        if len(body) > MAX_NOTICE_BYTES:
            raise refuse("too_large", f"notice larger than {MAX_NOTICE_BYTES} bytes")
        sender = _sender_of(bearer_token(request))
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype in _XML_TYPES:
            try:
                notice = parse_cap(body, now=utcnow())
            except CapError as exc:
                raise refuse("invalid_cap", str(exc)) from exc
            # Resending the same CAP document is the same notice: JetStream dedups on its id.
            alert_id = notice.notice_id
            raw: dict[str, Any] = {"cap": body.decode("utf-8", "replace")}
        elif ctype in ("application/json", ""):
            try:
                data = json.loads(body)
                parsed = NoticeIn.model_validate(data)
            except (ValueError, ValidationError) as exc:
                raise refuse("invalid", _first_error(exc)) from exc
            key = request.headers.get("idempotency-key")
            alert_id = alert_id_for("dispatch", key) if key else new_alert_id()
            try:
                notice = to_notice(parsed, notice_id=alert_id, sender=sender, now=utcnow())
            except NoticeError as exc:
                raise refuse("invalid", str(exc)) from exc
            raw = parsed.model_dump(mode="json")
        else:
            rejected.labels("/v1/notices", "content_type").inc()
            raise HTTPException(415, f"unsupported content type {ctype!r}: send JSON or CAP XML")
        await publisher.publish(notice_alert(notice, alert_id, raw))
        return AlertAccepted(alert_id=alert_id)

    app.include_router(router)


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors(include_url=False, include_input=False)[0]
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        return f"{loc}: {err['msg']}"
    return f"body is not valid JSON: {exc}"
