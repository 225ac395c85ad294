"""WhatsApp Cloud API stub: POST /{version}/{phone_number_id}/messages, errors and webhooks.

Formats follow Meta's Cloud API docs (developers.facebook.com/docs/whatsapp/cloud-api):
the send-message response {messaging_product, contacts[{input, wa_id}], messages[{id}]};
Graph errors {"error": {message "(#code) title", type, code, error_data{messaging_product,
details}, fbtrace_id}} from the "Error codes" page; the "messages" webhook with
entry[].changes[].value.statuses[] (id, status, timestamp, recipient_id,
biz_opaque_callback_data), signed X-Hub-Signature-256 = "sha256=" + HMAC-SHA256(app secret,
raw body). HTTP statuses are the ones Meta's error-code table lists: 190 is 401; 131026,
131047, 131056 and also the throughput error 130429 are 400 Bad Request (not 429).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from typing import Any

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
)

LIMIT_THROUGHPUT = "whatsapp.throughput"
LIMIT_PAIR = "whatsapp.pair"
SIGNATURE_HEADER = "X-Hub-Signature-256"
_VERSION = re.compile(r"^v\d+(\.\d+)?$")
_NUMBER_PUNCTUATION = re.compile(r"[\s\-().+]")
_MAX_TEXT = 4096
_MAX_OPAQUE = 512


class WhatsAppConfig(BaseModel):
    """Credentials, limits, session state and webhook settings of the WhatsApp stub."""

    api_version: str = "v21.0"
    phone_number_id: str = "106540352242922"
    display_phone_number: str = "31970100000"
    business_account_id: str = "102290129340398"
    token: str = "stub-whatsapp-access-token-0123456789"
    per_second: int | None = Field(80, description="throughput per business phone number")
    pair_limit: int | None = Field(None, description="messages to one recipient per window")
    pair_window_s: float = 6.0
    in_session: set[str] = Field(
        default_factory=set, description="wa_ids with an open 24-hour window (free text ok)"
    )
    all_in_session: bool = False
    invalid_numbers: set[str] = Field(default_factory=set, description="answered with 131026")
    strict_numbers: bool = Field(True, description="to must be a valid number (phonenumbers)")
    templates: dict[str, set[str]] | None = Field(
        None, description="approved template name -> language codes; None accepts any"
    )
    webhook_url: str | None = None
    app_secret: str = "stub-whatsapp-app-secret-0123456789"
    webhook_delay_s: float = 0.05
    allow_remote_callbacks: bool = False
    latency_s: float = 0.0


def hub_signature(app_secret: str, body: bytes) -> str:
    """X-Hub-Signature-256 value: sha256= + hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def graph_error(
    status: int,
    code: int,
    title: str,
    details: str | None = None,
    *,
    error_type: str = "OAuthException",
    subcode: int | None = None,
) -> JSONBody:
    """A Graph API error as the Cloud API sends it."""
    error: dict[str, Any] = {"message": f"(#{code}) {title}", "type": error_type, "code": code}
    if details is not None:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    if subcode is not None:
        error["error_subcode"] = subcode
    error["fbtrace_id"] = base64.urlsafe_b64encode(secrets.token_bytes(15)).decode()
    return JSONBody({"error": error}, status_code=status)


def _missing(name: str) -> JSONBody:
    return graph_error(400, 100, "Invalid parameter", f"The parameter {name} is required.")


def template_text(template: dict[str, Any]) -> str:
    """The text parameters of a template's components, one per line (what the user reads)."""
    texts: list[str] = []
    for component in template.get("components") or []:
        if not isinstance(component, dict):
            continue
        for parameter in component.get("parameters") or []:
            if isinstance(parameter, dict) and isinstance(parameter.get("text"), str):
                texts.append(parameter["text"])
    return "\n".join(texts) if texts else f"[template {template.get('name')}]"


class WhatsAppStub(StubBase):
    """The Cloud API messages endpoint, as Meta answers it."""

    channel: Channel = "whatsapp"

    def __init__(self, ledger: Ledger, config: WhatsAppConfig | None = None) -> None:
        super().__init__(ledger)
        self.config = config or WhatsAppConfig()
        cfg = self.config
        if cfg.per_second:
            ledger.register(Limit(LIMIT_THROUGHPUT, cfg.per_second, 1.0))
        if cfg.pair_limit:
            ledger.register(Limit(LIMIT_PAIR, cfg.pair_limit, cfg.pair_window_s))
        self.app = Starlette(
            routes=[Route("/{version}/{phone_number_id}/messages", self.send, methods=["POST"])]
        )

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            token = request.query_params.get("access_token", "")
        return bool(token) and hmac.compare_digest(token.strip(), self.config.token)

    def _valid_number(self, wa_id: str) -> bool:
        if not (wa_id.isdigit() and 8 <= len(wa_id) <= 15) or wa_id in self.config.invalid_numbers:
            return False
        return not self.config.strict_numbers or valid_phone_number("+" + wa_id)

    def _fault(self, fault: Fault) -> Response:
        if fault.status == 429:
            return graph_error(
                429,
                130429,
                "Rate limit hit",
                "Cloud API message throughput has been reached.",
            )
        if fault.status == 503:
            return graph_error(503, 2, "Service temporarily unavailable", "Try again later.")
        return graph_error(fault.status, 131000, "Something went wrong", "Unknown error.")

    def _checks(self, wa_id: str) -> list[tuple[Limit, str]]:
        cfg = self.config
        checks: list[tuple[Limit, str]] = []
        if cfg.per_second:
            checks.append((Limit(LIMIT_THROUGHPUT, cfg.per_second, 1.0), cfg.phone_number_id))
        if cfg.pair_limit:
            checks.append((Limit(LIMIT_PAIR, cfg.pair_limit, cfg.pair_window_s), wa_id))
        return checks

    async def send(self, request: Request) -> Response:
        """Send a text or template message: validate, meter, check the session, record."""
        self.ledger.count_request("whatsapp")
        cfg = self.config
        if not self._authorised(request):
            return graph_error(401, 190, "Invalid OAuth access token - Cannot parse access token")
        version = request.path_params["version"]
        number_id = request.path_params["phone_number_id"]
        if not _VERSION.match(version):
            return graph_error(400, 2500, f"Unknown path components: /{version}/{number_id}")
        if number_id != cfg.phone_number_id:
            return graph_error(
                400,
                100,
                f"Unsupported post request. Object with ID '{number_id}' does not exist, cannot "
                "be loaded due to missing permissions, or does not support this operation.",
                error_type="GraphMethodException",
                subcode=33,
            )
        fault = self.faults.take()
        if fault is not None:
            return self._fault(fault)
        try:
            body = json.loads(await request.body())
        except (UnicodeDecodeError, ValueError):
            return graph_error(400, 100, "Invalid parameter", "Request body is not valid JSON.")
        if not isinstance(body, dict):
            return graph_error(400, 100, "Invalid parameter", "Request body must be an object.")
        if body.get("messaging_product") != "whatsapp":
            return _missing("messaging_product")
        if body.get("recipient_type", "individual") != "individual":
            return graph_error(400, 100, "Invalid parameter", "recipient_type must be individual")
        to = body.get("to")
        if not isinstance(to, str) or not to.strip():
            return _missing("to")
        kind = body.get("type", "text")
        opaque = body.get("biz_opaque_callback_data")
        if opaque is not None and (not isinstance(opaque, str) or len(opaque) > _MAX_OPAQUE):
            return graph_error(
                400, 100, "Invalid parameter", "biz_opaque_callback_data: at most 512 characters"
            )
        template: dict[str, Any] = {}
        if kind == "text":
            text_obj = body.get("text")
            text = text_obj.get("body") if isinstance(text_obj, dict) else None
            if not isinstance(text, str) or not text:
                return _missing("text['body']")
            if len(text) > _MAX_TEXT:
                return graph_error(
                    400, 100, "Invalid parameter", "Param text['body'] is too long (max 4096)."
                )
        elif kind == "template":
            raw = body.get("template")
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                return _missing("template['name']")
            language = raw.get("language")
            if not isinstance(language, dict) or not isinstance(language.get("code"), str):
                return _missing("template['language']['code']")
            template = raw
            text = template_text(template)
        else:
            return graph_error(400, 131009, "Parameter value is not valid", f"type {kind!r}")
        wa_id = _NUMBER_PUNCTUATION.sub("", to)
        now, refusal = self.ledger.admit(self._checks(wa_id), at=read_at(request))
        if refusal is not None:
            if LIMIT_THROUGHPUT in refusal.limit_names:
                # Meta's table lists 130429 with HTTP 400 Bad Request, not 429.
                return graph_error(
                    400,
                    130429,
                    "Rate limit hit",
                    "Message failed to send because there were too many messages sent from "
                    "this phone number in a short period of time.",
                )
            return graph_error(
                400,
                131056,
                "(Business Account, Consumer Account) pair rate limit hit",
                "Message failed to send because there were too many messages sent from this "
                "phone number to the same phone number in a short period of time.",
            )
        if not self._valid_number(wa_id):
            return graph_error(
                400,
                131026,
                "Message Undeliverable",
                "Unable to deliver message. The recipient may not be a WhatsApp user or may "
                "not have accepted the latest terms.",
            )
        if kind == "template" and cfg.templates is not None:
            name = template["name"]
            code = template["language"]["code"]
            if code not in cfg.templates.get(name, set()):
                return graph_error(
                    404,
                    132001,
                    "Template name does not exist in the translation",
                    f"template name ({name}) does not exist in {code}",
                )
        if kind == "text" and not (cfg.all_in_session or wa_id in cfg.in_session):
            return graph_error(
                400,
                131047,
                "Re-engagement message",
                "Message failed to send because more than 24 hours have passed since the "
                "customer last replied to this number.",
            )
        # Real wamids are base64 of an opaque blob that embeds the recipient; so is this one.
        blob = f"{wa_id}_{secrets.token_hex(10).upper()}".encode()
        wamid = "wamid." + base64.b64encode(blob).decode()
        meta = {"type": kind}
        if template:
            meta.update(template=template["name"], language=template["language"]["code"])
        self.ledger.record(
            Delivered(
                channel="whatsapp",
                recipient=wa_id,
                text=text,
                provider_id=wamid,
                arrived_at=now,
                delivery_id=opaque,
                meta=meta,
            )
        )
        message: dict[str, str] = {"id": wamid}
        if kind == "template":
            message["message_status"] = "accepted"
        if cfg.webhook_url:
            self.spawn(self._status_webhooks(cfg.webhook_url, wamid, wa_id, kind, opaque))
        if cfg.latency_s > 0:
            await asyncio.sleep(cfg.latency_s)
        return JSONBody(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": wa_id}],
                "messages": [message],
            }
        )

    def status_payload(
        self, wamid: str, wa_id: str, status: str, kind: str, opaque: str | None
    ) -> dict[str, Any]:
        """One 'messages' webhook carrying one status, as Meta posts it."""
        cfg = self.config
        category = "utility" if kind == "template" else "service"
        entry: dict[str, Any] = {
            "id": wamid,
            "status": status,
            "timestamp": str(int(time.time())),
            "recipient_id": wa_id,
            "pricing": {"billable": True, "pricing_model": "PMP", "category": category},
        }
        if opaque is not None:
            entry["biz_opaque_callback_data"] = opaque
        return {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": cfg.business_account_id,
                    "changes": [
                        {
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": cfg.display_phone_number,
                                    "phone_number_id": cfg.phone_number_id,
                                },
                                "statuses": [entry],
                            },
                            "field": "messages",
                        }
                    ],
                }
            ],
        }

    async def _status_webhooks(
        self, url: str, wamid: str, wa_id: str, kind: str, opaque: str | None
    ) -> None:
        cfg = self.config
        for status in ("sent", "delivered"):
            await asyncio.sleep(cfg.webhook_delay_s)
            raw = json.dumps(self.status_payload(wamid, wa_id, status, kind, opaque)).encode()
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: hub_signature(cfg.app_secret, raw),
                "User-Agent": "facebookexternalua",
            }
            await self.post_callback(
                url, content=raw, headers=headers, allow_remote=cfg.allow_remote_callbacks
            )
