"""Provider webhooks: verify the sender, parse, then hand the command to the conversation."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import Counter
from redis.asyncio import Redis

from services.ingest.adapters import telegram, twilio, whatsapp
from services.ingest.adapters.errors import WebhookRejected
from services.ingest.conversation import Conversation, Sender
from services.ingest.normalise import sender_ref
from shared.addresses import recipient_key, whatsapp_session_key
from shared.outbox import OutcomeStore
from shared.schemas import AlertReceived, Location, split_delivery_id, utcnow
from shared.settings import IngestSettings

MAX_BODY = 1_000_000
_SEEN_TTL_S = 7 * 24 * 3600
#: WhatsApp's customer-service window, less a margin for clocks and queues.
WHATSAPP_SESSION_S = 24 * 3600 - 600


def _seen_key(channel: str, provider_id: str) -> str:
    return f"ba:seen:{channel}:{provider_id}"


async def _already_handled(redis: Redis, channel: str, provider_id: str) -> bool:
    return bool(await redis.exists(_seen_key(channel, provider_id)))


async def _mark_handled(redis: Redis, channel: str, provider_id: str) -> None:
    # Marked only after the work succeeded: a provider retry after a failure must redo it.
    await redis.set(_seen_key(channel, provider_id), "1", ex=_SEEN_TTL_S)


def _parse_form(body: bytes) -> dict[str, list[str]]:
    # Twilio posts application/x-www-form-urlencoded, UTF-8; repeated names keep every value,
    # because the signature covers each of them.
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WebhookRejected("malformed", "body is not a URL-encoded form") from exc
    params: dict[str, list[str]] = {}
    for key, value in pairs:
        params.setdefault(key, []).append(value)
    return params


def install(
    app: FastAPI,
    *,
    settings: IngestSettings,
    redis: Redis,
    conversation: Conversation,
    rejected: Counter,
    receipts: Counter,
) -> None:
    """Add the Twilio, Telegram and WhatsApp webhooks to the app."""
    router = APIRouter(prefix="/webhooks", tags=["webhooks"])
    outcomes = OutcomeStore(redis, settings.outcome_ttl_s)

    @app.exception_handler(WebhookRejected)
    async def webhook_rejected(request: Request, exc: WebhookRejected) -> JSONResponse:
        route = request.scope.get("route")
        rejected.labels(str(getattr(route, "path", "unmatched")), exc.reason).inc()
        return JSONResponse({"detail": exc.detail}, status_code=exc.http_status)

    async def raw_body(request: Request) -> bytes:
        body = await request.body()
        if len(body) > MAX_BODY:
            raise WebhookRejected("malformed", "body too large")
        return body

    # --- Twilio SMS ------------------------------------------------------------------------

    @router.post("/twilio/sms", response_class=PlainTextResponse)
    async def twilio_sms(request: Request) -> Response:
        """Inbound SMS from Twilio; answers with TwiML."""
        if not settings.twilio_auth_token:
            raise WebhookRejected("not_configured", "TWILIO_AUTH_TOKEN is not set")
        params = _parse_form(await raw_body(request))
        url = settings.public_url.rstrip("/") + request.url.path
        twilio.verify_signature(
            settings.twilio_auth_token, url, params, request.headers.get(twilio.SIGNATURE_HEADER)
        )
        inbound = twilio.parse_inbound({k: v[0] for k, v in params.items()})
        command = twilio.classify(inbound.body)
        identity = twilio.sender_identity(inbound)
        sender = Sender("sms", identity, sender_ref("sms", identity))

        def make(called: bool | None, location: Location | None) -> AlertReceived:
            return twilio.to_alert(
                inbound,
                alert_id=twilio.dedup_id(inbound),
                received_at=utcnow(),
                called_112=called,
                location=location,
            )

        reply = await conversation.handle(sender, command, make, "/webhooks/twilio/sms")
        if reply is not None and twilio.reply_for(command) is None:
            reply = None  # Twilio answers its own STOP/START/HELP; a second reply would fail
        body = twilio.twiml_message(reply) if reply else twilio.twiml_empty()
        return Response(body, media_type=twilio.TWIML_CONTENT_TYPE)

    @router.post("/twilio/status")
    async def twilio_status(request: Request, d: str = "") -> JSONResponse:
        """Twilio's status callback for a message we sent; folds the status into its outcome."""
        if not settings.twilio_auth_token:
            raise WebhookRejected("not_configured", "TWILIO_AUTH_TOKEN is not set")
        params = _parse_form(await raw_body(request))
        # The delivery id rides in the callback URL's query, which Twilio signs with the path.
        url = settings.public_url.rstrip("/") + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        twilio.verify_signature(
            settings.twilio_auth_token, url, params, request.headers.get(twilio.SIGNATURE_HEADER)
        )
        status = (params.get("MessageStatus") or params.get("SmsStatus") or [""])[0]
        receipts.labels("sms", _bounded_status(status)).inc()
        applied = await _apply_receipt(outcomes, d, status)
        return JSONResponse({"received": True, "applied": applied})

    # --- Telegram ----------------------------------------------------------------------------

    @router.post("/telegram")
    async def telegram_update(request: Request) -> JSONResponse:
        """A Bot API Update; a reply goes back in the webhook response (sendMessage)."""
        if not settings.telegram_webhook_secret:
            raise WebhookRejected("not_configured", "TELEGRAM_WEBHOOK_SECRET is not set")
        telegram.verify_secret(
            request.headers.get(telegram.SECRET_HEADER), settings.telegram_webhook_secret
        )
        update = telegram.parse_update(await raw_body(request))
        message = update.effective_message
        provider_id = f"{message.chat.id if message else 'none'}:{update.update_id}"
        if message is None or await _already_handled(redis, "telegram", provider_id):
            return JSONResponse({})
        command = telegram.classify(update, bot_username=settings.telegram_bot_username or None)
        identity = telegram.sender_identity(update) or str(message.chat.id)
        sender = Sender("telegram", identity, sender_ref("telegram", identity))

        def make(called: bool | None, location: Location | None) -> AlertReceived:
            return telegram.to_alert(
                update,
                alert_id=telegram.dedup_id(update),
                received_at=utcnow(),
                called_112=called,
                location=location,
            )

        reply = await conversation.handle(sender, command, make, "/webhooks/telegram")
        await _mark_handled(redis, "telegram", provider_id)
        if not reply:
            return JSONResponse({})
        return JSONResponse({"method": "sendMessage", "chat_id": message.chat.id, "text": reply})

    # --- WhatsApp Cloud API --------------------------------------------------------------------

    @router.get("/whatsapp", response_class=PlainTextResponse)
    async def whatsapp_verify(request: Request) -> PlainTextResponse:
        """Meta's subscription check: echo hub.challenge when hub.verify_token matches."""
        if not settings.whatsapp_verify_token:
            raise WebhookRejected("not_configured", "WHATSAPP_VERIFY_TOKEN is not set")
        params: Mapping[str, str] = dict(request.query_params)
        return PlainTextResponse(whatsapp.verify_challenge(params, settings.whatsapp_verify_token))

    @router.post("/whatsapp")
    async def whatsapp_notification(request: Request) -> JSONResponse:
        """Messages and status callbacks; signed with X-Hub-Signature-256 over the raw body."""
        if not settings.whatsapp_app_secret:
            raise WebhookRejected("not_configured", "WHATSAPP_APP_SECRET is not set")
        body = await raw_body(request)
        whatsapp.verify_signature(
            settings.whatsapp_app_secret, body, request.headers.get(whatsapp.SIGNATURE_HEADER)
        )
        webhook = whatsapp.parse_webhook(body)
        replies: list[tuple[str, str, str]] = []
        handled: list[str] = []
        for message in whatsapp.messages(webhook):
            if await _already_handled(redis, "whatsapp", message.id):
                continue
            identity = whatsapp.sender_identity(message)
            if identity is None:
                continue
            sender = Sender("whatsapp", identity, sender_ref("whatsapp", identity))
            # They wrote to us: for 24 hours WhatsApp allows free text back (no template).
            await redis.set(
                whatsapp_session_key(recipient_key("whatsapp", identity)),
                "1",
                ex=WHATSAPP_SESSION_S,
            )
            command = whatsapp.classify(message)

            def make(
                called: bool | None,
                location: Location | None,
                m: whatsapp.WhatsAppMessage = message,
            ) -> AlertReceived:
                return whatsapp.to_alert(
                    m,
                    alert_id=whatsapp.dedup_id(m),
                    received_at=utcnow(),
                    called_112=called,
                    location=location,
                )

            reply = await conversation.handle(sender, command, make, "/webhooks/whatsapp")
            handled.append(message.id)
            if reply:
                replies.append((message.id, identity, reply))
        for status in whatsapp.statuses(webhook):
            receipts.labels("whatsapp", _bounded_status(status.status)).inc()
            await _apply_receipt(outcomes, status.biz_opaque_callback_data or "", status.status)
        # WhatsApp replies need an outbound API call (no inline reply); the notifier sends them.
        await conversation.queue_replies("whatsapp", replies)
        for message_id in handled:
            await _mark_handled(redis, "whatsapp", message_id)
        return JSONResponse({"received": True})

    app.include_router(router)


async def _apply_receipt(outcomes: OutcomeStore, reference: str, status: str) -> bool:
    """Fold a provider status into the outcome it belongs to; False when it names none."""
    try:
        alert_id, recipient = split_delivery_id(reference)
    except ValueError:
        return False  # not one of ours (or sent before receipts carried the delivery id)
    return await outcomes.apply_receipt(alert_id, recipient, status) > 0


def _bounded_status(value: str) -> str:
    known = {"queued", "sent", "delivered", "undelivered", "read", "failed"}
    return value if value in known else "other"
