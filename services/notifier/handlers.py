"""Notifier handlers: decode, plan recipients (pure), deliver once each, settle."""

from __future__ import annotations

import logging
import time

from faststream.nats import NatsMessage
from prometheus_client import Counter
from pydantic import ValidationError
from redis.exceptions import RedisError

from services.notifier.channels.outbox import OutboxChannel
from services.notifier.fanout import Recipient, plan_recipients
from services.notifier.jobs import JobQueue
from services.notifier.texts import render, subject
from shared import subjects
from shared.addresses import opt_out_key, recipient_key, whatsapp_session_key
from shared.autopipe import AutoPipeline
from shared.broker import ServiceRuntime
from shared.consuming import Settler, durable_subscriber
from shared.errors import PermanentError, TransientError
from shared.observability import latency_histogram
from shared.outbox import OutcomeStore
from shared.ratelimit import RecipientCap
from shared.registry import Registry
from shared.schemas import (
    AlertRouted,
    DeliveryAttempted,
    DeliveryRequested,
    Member,
    Outcome,
    Priority,
    ReplyRequested,
    delivery_id,
    utcnow,
)
from shared.settings import NotifierSettings

log = logging.getLogger(__name__)


def register(
    runtime: ServiceRuntime, settings: NotifierSettings, queue: JobQueue, deliveries: Counter
) -> None:
    """Attach the notifier's fan-out subscriber to the runtime's broker."""
    broker = runtime.broker
    registry = Registry(runtime.redis)
    store = OutcomeStore(runtime.redis, settings.outcome_ttl_s, settings.outbox_max_len)
    outbox = OutboxChannel(store)
    cap = RecipientCap(runtime.redis, settings.resident_alerts_per_hour)
    flags = AutoPipeline(runtime.redis)
    settler = Settler("notifier", broker, settings, runtime.metrics)
    planned = Counter(
        "notifier_recipients_planned_total",
        "Recipients an alert was meant to reach, by kind (report, notice)",
        ["kind"],
        registry=runtime.metrics,
    )
    suppressed = Counter(
        "notifier_duplicates_suppressed_total",
        "Deliveries skipped because the recipient already had an outcome (redelivery)",
        registry=runtime.metrics,
    )
    accept_to_delivery = latency_histogram(
        runtime.metrics,
        "notifier_accept_to_delivery_seconds",
        "From acceptance at the edge to the recorded delivery",
        ("channel",),
    )

    # Acked only after every recipient has its outcome; redeliveries are harmless because
    # of the per-(alert, recipient) idempotency key in OutcomeStore.
    @durable_subscriber(
        broker,
        settings,
        subjects.ROUTED,
        subjects.NOTIFIER_DURABLE,
        title="alerts.v1.routed",
        description="Routed alerts; fanned out to members",
    )
    async def on_routed(msg: NatsMessage) -> None:
        async def work() -> None:
            try:
                routed = AlertRouted.model_validate_json(msg.body)
            except ValidationError as exc:
                raise PermanentError(f"not an AlertRouted v1: {exc.error_count()} errors") from exc
            alert = routed.alert
            try:
                members: dict[str, list[Member]] = {
                    t.group_id: await registry.members(t.group_id) for t in routed.targets
                }
                recipients = plan_recipients(routed, members)
                if not recipients:
                    kind: Outcome = "no_recipients"
                    if routed.held_reason:
                        kind = "held"
                    elif routed.merged:
                        kind = "merged"
                    nobody = DeliveryAttempted(
                        alert_id=alert.alert_id,
                        recipient="-",
                        channel="outbox",
                        outcome=kind,
                        detail=routed.held_reason or "",
                        attempted_at=utcnow(),
                    )
                    if await store.record(nobody):
                        deliveries.labels("none", kind).inc()
                    return
                first, done = await store.plan(alert.alert_id, len(recipients))
                if first:
                    planned.labels(alert.kind).inc(len(recipients))
                todo = [r for r in recipients if r.key not in done]
                suppressed.inc(len(recipients) - len(todo))
                opted_out, sessions = await _opted_out_and_sessions(flags, todo)
                police = alert.notice is not None
                # Police notices are exempt from the per-person cap on resident alerts.
                allowed = (
                    set()
                    if police
                    else await cap.allow(
                        alert.alert_id, [r.key for r in todo if r.key not in opted_out]
                    )
                )
                # One text per relation ("in your area" or "next to it"), not one per person.
                texts = {
                    relation: render(alert, relation, incident_count=routed.incident_count)
                    for relation in ("in_area", "adjacent")
                }
                headline = subject(alert, incident_count=routed.incident_count)
                priority: Priority = "police" if police else "resident"
                now = utcnow()
                jobs: list[DeliveryRequested] = []
                for recipient in todo:
                    skip: Outcome | None = None
                    if recipient.key in opted_out:
                        skip = "opted_out"  # they said STOP: recorded, nothing sent
                    elif not police and recipient.key not in allowed:
                        skip = "capped"
                    if skip is not None:
                        skipped = DeliveryAttempted(
                            alert_id=alert.alert_id,
                            recipient=recipient.key,
                            group_id=recipient.group_id,
                            member_id=recipient.member_id,
                            channel=recipient.channel if skip == "capped" else "outbox",
                            outcome=skip,
                            attempted_at=utcnow(),
                        )
                        if await store.record(skipped):
                            deliveries.labels(skipped.channel, skip).inc()
                        continue
                    text = texts[recipient.relation]
                    if recipient.channel in queue.channels:
                        jobs.append(
                            DeliveryRequested(
                                delivery_id=delivery_id(alert.alert_id, recipient.key),
                                alert_id=alert.alert_id,
                                recipient=recipient.key,
                                group_id=recipient.group_id,
                                member_id=recipient.member_id,
                                channel=recipient.channel,
                                address=recipient.address,
                                text=text,
                                subject=headline,
                                in_session=recipient.key in sessions,
                                priority=priority,
                                accepted_at=alert.received_at,
                                requested_at=now,
                            )
                        )
                        continue
                    if await outbox.deliver(alert, recipient, text):
                        deliveries.labels(outbox.name, "delivered").inc()
                        accept_to_delivery.labels(outbox.name).observe(
                            max(0.0, time.time() - alert.received_at.timestamp())
                        )
                    else:
                        suppressed.inc()
                # Acked only after every job is stored in JetStream (PubAck); a repeat of this
                # fan-out publishes each job once more, de-duplicated by its Nats-Msg-Id.
                await queue.enqueue(jobs, keep_alive=msg.in_progress)
            except RedisError as exc:
                raise TransientError(f"redis: {type(exc).__name__}") from exc
            log.info(
                "fanned out alert",
                extra={"alert_id": alert.alert_id, "recipients": len(recipients)},
            )

        await settler.run(msg, work)


async def _opted_out_and_sessions(
    auto: AutoPipeline, recipients: list[Recipient]
) -> tuple[set[str], set[str]]:
    """Who said STOP, and which WhatsApp recipients wrote to us in the last 24 hours (free
    text allowed): one round trip."""
    if not recipients:
        return set(), set()
    wa = [r for r in recipients if r.channel == "whatsapp"]
    keys = [opt_out_key(r.channel, r.address) for r in recipients]
    keys += [whatsapp_session_key(r.key) for r in wa]
    (flags,) = await auto.run(lambda pipe: pipe.mget(keys))
    n = len(recipients)
    opted_out = {r.key for r, flag in zip(recipients, flags[:n], strict=True) if flag}
    sessions = {r.key for r, flag in zip(wa, flags[n:], strict=True) if flag}
    return opted_out, sessions


def register_replies(runtime: ServiceRuntime, settings: NotifierSettings, queue: JobQueue) -> None:
    """Direct replies to one resident: delivered once each, like alerts."""
    store = OutcomeStore(runtime.redis, settings.outcome_ttl_s, settings.outbox_max_len)
    settler = Settler("notifier", runtime.broker, settings, runtime.metrics)
    sent = Counter(
        "notifier_replies_total",
        "Direct replies recorded",
        ["channel", "outcome"],
        registry=runtime.metrics,
    )

    @durable_subscriber(
        runtime.broker,
        settings,
        subjects.REPLY,
        subjects.REPLIES_DURABLE,
        title="alerts.v1.reply",
        description="Direct answers to one resident",
    )
    async def on_reply(msg: NatsMessage) -> None:
        async def work() -> None:
            try:
                reply = ReplyRequested.model_validate_json(msg.body)
            except ValidationError as exc:
                raise PermanentError(
                    f"not a ReplyRequested v1: {exc.error_count()} errors"
                ) from exc
            key = recipient_key(reply.channel, reply.address)
            if reply.channel in queue.channels:
                job = DeliveryRequested(
                    delivery_id=delivery_id(reply.reply_id, key),
                    alert_id=reply.reply_id,
                    recipient=key,
                    channel=reply.channel,
                    address=reply.address,
                    text=reply.text,
                    # They just wrote to us: the WhatsApp window is open.
                    in_session=True,
                    priority="resident",
                    accepted_at=reply.requested_at,
                    requested_at=utcnow(),
                )
                await queue.enqueue([job])
                return
            attempt = DeliveryAttempted(
                alert_id=reply.reply_id,
                recipient=key,
                channel="outbox",
                outcome="delivered",
                attempted_at=utcnow(),
            )
            entry = {
                "alert_id": reply.reply_id,
                "kind": "reply",
                "recipient": key,
                "channel": reply.channel,
                "address": reply.address,
                "text": reply.text,
                "delivered_at": attempt.attempted_at.isoformat(),
            }
            try:
                if await store.record(attempt, entry):
                    sent.labels("outbox", "delivered").inc()
            except RedisError as exc:
                raise TransientError(f"redis: {type(exc).__name__}") from exc

        await settler.run(msg, work)
