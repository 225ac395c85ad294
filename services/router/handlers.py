"""Router handlers: decode, route (pure), publish, settle."""

from __future__ import annotations

import logging
import time

from faststream.nats import NatsMessage
from prometheus_client import Counter
from pydantic import ValidationError

from services.router.expiry import ExpiryScheduler as Expiry
from services.router.fresh_index import SharedCheck
from services.router.matching import route_alert, route_notice
from shared import subjects
from shared.broker import ServiceRuntime
from shared.consuming import Settler, durable_subscriber
from shared.errors import Deferred, PermanentError
from shared.held import hold
from shared.incidents import IncidentBook
from shared.index_cache import IndexSource
from shared.moderation import assess
from shared.observability import latency_histogram
from shared.saar import answer_for, awaits_answer
from shared.schemas import AlertReceived, AlertRouted, utcnow
from shared.settings import RouterSettings
from shared.threads import earlier_targets, remember_targets

log = logging.getLogger(__name__)


def register(
    runtime: ServiceRuntime, settings: RouterSettings, cache: IndexSource, expiry: Expiry
) -> None:
    """Attach the router's subscriber to the runtime's broker."""
    broker = runtime.broker
    settler = Settler("router", broker, settings, runtime.metrics)
    # The alerts of a fetched batch share their registry-version checks (see SharedCheck).
    index_source = SharedCheck(cache)
    routed = Counter(
        "router_alerts_total",
        "Alerts routed, by outcome",
        ["kind", "outcome"],
        registry=runtime.metrics,
    )
    held = Counter(
        "router_saar_holds_total",
        "Times a report was held back waiting for JA/NEE on 112",
        registry=runtime.metrics,
    )
    seconds = latency_histogram(runtime.metrics, "router_route_seconds", "Time to route one alert")

    incidents = IncidentBook(
        runtime.redis,
        settings.incident_radius_m,
        settings.incident_window_s,
        settings.incident_update_every_s,
    )

    async def _correlated(event: AlertRouted) -> AlertRouted:
        location = event.alert.location
        if location is None or not event.targets or settings.incident_radius_m <= 0:
            return event
        corr = await incidents.correlate(
            event.alert.alert_id, location.lon, location.lat, event.alert.text
        )
        update = {"incident_id": corr.incident_id, "incident_count": corr.count}
        if not corr.send:
            # A further report of an incident already told: counted, no message of its own.
            update |= {"merged": True, "targets": []}
        return event.model_copy(update=update)

    async def _with_saar_answer(alert: AlertReceived) -> AlertReceived:
        if not awaits_answer(alert):
            return alert
        answer = await answer_for(runtime.redis, alert.alert_id)
        if answer is not None:
            return alert.model_copy(update={"called_112": answer})
        waited = time.time() - alert.received_at.timestamp()
        if waited < settings.saar_hold_s:
            held.inc()
            raise Deferred("waiting for JA/NEE", delay_s=min(2.0, settings.saar_hold_s - waited))
        return alert

    # Acked after the routed event is stored; nak or dead-letter by error type.
    @durable_subscriber(
        broker,
        settings,
        subjects.RECEIVED_ALL,
        subjects.ROUTER_DURABLE,
        title="alerts.v1.received",
        description="Alerts from every channel; routed to areas and groups",
    )
    async def on_received(msg: NatsMessage) -> None:
        async def work() -> None:
            started = time.perf_counter()
            try:
                alert = AlertReceived.model_validate_json(msg.body)
            except ValidationError as exc:
                raise PermanentError(
                    f"not an AlertReceived v1: {exc.error_count()} errors"
                ) from exc
            index = await index_source.get()
            if alert.notice is not None:
                notice = alert.notice
                earlier = await earlier_targets(runtime.redis, notice.references)
                event = route_notice(alert, notice, index, earlier)
                await remember_targets(runtime.redis, notice.notice_id, event.targets)
                await expiry.on_routed(notice)
            else:
                verdict = assess(alert.text)
                if verdict.held and not alert.released:
                    # House rules: held for the admins, not broadcast; the edge told the sender.
                    # Its would-be groups, so each group's admins see only their own held messages.
                    would_reach = route_alert(alert, index, settings.neighbour_distance_m)
                    await hold(
                        runtime.redis,
                        alert,
                        verdict.reason or "",
                        [t.group_id for t in would_reach.targets],
                    )
                    event = AlertRouted(alert=alert, routed_at=utcnow(), held_reason=verdict.reason)
                else:
                    alert = await _with_saar_answer(alert)
                    event = await _correlated(
                        route_alert(alert, index, settings.neighbour_distance_m)
                    )
            await broker.publish(
                event.model_dump_json().encode(),
                subjects.ROUTED,
                headers={
                    subjects.MSG_ID_HEADER: subjects.routed_msg_id(alert.alert_id, alert.released)
                },
                correlation_id=alert.alert_id,
                stream=settings.stream_name,
                timeout=5.0,
            )
            outcome = "matched" if event.targets else "unmatched"
            if event.held_reason:
                outcome = "held"
            elif event.merged:
                outcome = "merged"
            if alert.notice is None and alert.location is None:
                outcome = "no_location"
            routed.labels(alert.kind, outcome).inc()
            seconds.observe(time.perf_counter() - started)
            log.info(
                "routed alert",
                extra={
                    "alert_id": alert.alert_id,
                    "groups": len(event.targets),
                    "areas": len(event.area_ids),
                },
            )

        await settler.run(msg, work)
