"""HTTP routes of the edge: thin handlers over the pure normalisers and the registry."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from redis.exceptions import RedisError

from services.ingest.auth import Role, require
from services.ingest.conversation import JOIN_REQUESTS
from services.ingest.coverage import Coverage
from services.ingest.normalise import web_report
from services.ingest.publishing import AlertPublisher
from shared.addresses import AddressError, normalise_address
from shared.errors import TransientError
from shared.geo import geometry_from_geojson, to_wkb_hex
from shared.held import list_held, take
from shared.moderation import assess
from shared.outbox import read_outbox, read_outcomes
from shared.ratelimit import Limit, RateLimiter
from shared.registry import Registry
from shared.schemas import (
    AlertAccepted,
    AreaOut,
    GroupIn,
    MemberIn,
    ReportIn,
    utcnow,
)

log = logging.getLogger(__name__)


def install(
    app: FastAPI,
    *,
    registry: Registry,
    publisher: AlertPublisher,
    keys: list[tuple[str, Role]],
    rejected: Counter,
    limiter: RateLimiter,
    source_limit: Limit,
    coverage: Coverage,
) -> None:
    """Add the v1 API and its error handlers to the app."""
    admin = Depends(require("admin", keys))
    router = APIRouter(prefix="/v1")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        rejected.labels(_endpoint(request), "invalid").inc()
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(RedisError)
    async def registry_unavailable(request: Request, exc: RedisError) -> JSONResponse:
        rejected.labels(_endpoint(request), "unavailable").inc()
        log.warning("redis unavailable at the edge: %s", type(exc).__name__)
        return JSONResponse(
            {"detail": "registry temporarily unavailable; nothing was stored, please retry"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(TransientError)
    async def unavailable(request: Request, exc: TransientError) -> JSONResponse:
        rejected.labels(_endpoint(request), "unavailable").inc()
        return JSONResponse(
            {"detail": f"{exc}; nothing was stored, please retry"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @router.post("/reports", status_code=202, response_model=AlertAccepted, tags=["residents"])
    async def post_report(
        report: ReportIn,
        request: Request,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> AlertAccepted:
        """Report what you saw. 112 first: say whether it has been called."""
        client = request.client.host if request.client else "unknown"
        decision = await limiter.hit(f"source:{client}", source_limit)
        if not decision.allowed:
            rejected.labels("/v1/reports", "rate_limited").inc()
            raise HTTPException(
                429,
                "too many reports from this address; try again later (bij direct gevaar: bel 112)",
                headers={"Retry-After": str(max(1, round(decision.retry_after_s)))},
            )
        event = web_report(
            report, received_at=utcnow(), client=client, idempotency_key=idempotency_key
        )
        await publisher.publish(event)
        return AlertAccepted(
            alert_id=event.alert_id,
            covered=await coverage.covers(report.location.lat, report.location.lon, "web"),
            held=assess(event.text).reason,
        )

    @router.get("/areas/{area_id}", response_model=AreaOut, tags=["areas"])
    async def get_area(area_id: str) -> AreaOut:
        """An area and its neighbours (shared border)."""
        area = await registry.get_area(area_id)
        if area is None:
            raise HTTPException(404, f"unknown area {area_id!r}")
        return area

    @router.post("/groups", status_code=201, dependencies=[admin], tags=["admin"])
    async def post_group(group: GroupIn, response: Response) -> dict[str, Any]:
        """Create or replace a group covering areas or its own polygon."""
        if bool(group.area_ids) == (group.geometry is not None):
            rejected.labels("/v1/groups", "invalid").inc()
            raise HTTPException(422, "give either area_ids or geometry, not both or neither")
        wkb = ""
        if group.geometry is not None:
            try:
                wkb = to_wkb_hex(geometry_from_geojson(group.geometry))
            except ValueError as exc:
                rejected.labels("/v1/groups", "invalid").inc()
                raise HTTPException(422, f"geometry: {exc}") from exc
        else:
            known = await registry.area_ids()
            unknown = sorted(set(group.area_ids) - known)
            if unknown:
                rejected.labels("/v1/groups", "unknown_area").inc()
                raise HTTPException(422, f"unknown area ids: {', '.join(unknown[:20])}")
        created = await registry.put_group(group, wkb)
        if not created:
            response.status_code = 200
        return {
            "id": group.id,
            "name": group.name,
            "area_ids": group.area_ids,
            "min_age": group.min_age,
            "created": created,
        }

    @router.post(
        "/groups/{group_id}/members", status_code=201, dependencies=[admin], tags=["admin"]
    )
    async def post_member(group_id: str, member: MemberIn) -> dict[str, str]:
        """Add a member; sms/whatsapp addresses are normalised to E.164."""
        if await registry.get_group(group_id) is None:
            raise HTTPException(404, f"unknown group {group_id!r}")
        try:
            address = normalise_address(member.channel, member.address)
        except AddressError as exc:
            rejected.labels("/v1/groups/members", "invalid").inc()
            raise HTTPException(422, str(exc)) from exc
        stored = await registry.add_member(group_id, member.model_copy(update={"address": address}))
        return {"member_id": stored.member_id}

    @router.delete(
        "/groups/{group_id}/members/{member_id}",
        status_code=204,
        dependencies=[admin],
        tags=["admin"],
    )
    async def delete_member(group_id: str, member_id: str) -> Response:
        """Remove a member from a group."""
        if not await registry.remove_member(group_id, member_id):
            raise HTTPException(404, "no such member in this group")
        return Response(status_code=204)

    @router.get("/outbox", dependencies=[admin], tags=["admin"])
    async def get_outbox(limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, Any]]:
        """Newest messages delivered to the local outbox (channels without an account)."""
        return await read_outbox(registry.redis, limit)

    @router.get("/join-requests", dependencies=[admin], tags=["admin"])
    async def get_join_requests(
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> list[dict[str, Any]]:
        """Residents who asked to join (AANMELDEN, /aanmelden), newest first, for admins."""
        rows = await registry.redis.xrevrange(JOIN_REQUESTS, count=limit) or []
        return [{"request_id": str(rid), **{str(k): str(v) for k, v in (fields or {}).items()}}
                for rid, fields in rows]

    @router.get("/held", dependencies=[admin], tags=["admin"])
    async def get_held(
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Messages the house rules held back, newest first; repeat offenders flagged."""
        return await list_held(registry.redis, limit)

    @router.post("/held/{alert_id}/release", status_code=202, dependencies=[admin],
                 tags=["admin"])
    async def release_held(alert_id: str) -> AlertAccepted:
        """Broadcast a held message after all (routed once, as if it had passed)."""
        alert = await take(registry.redis, alert_id)
        if alert is None:
            raise HTTPException(404, f"no held message {alert_id!r}")
        released = alert.model_copy(update={"released": True})
        await publisher.publish(released, msg_id=f"released:{alert_id}")
        return AlertAccepted(alert_id=alert_id)

    @router.delete("/held/{alert_id}", status_code=204, dependencies=[admin], tags=["admin"])
    async def reject_held(alert_id: str) -> Response:
        """Reject a held message for good."""
        if await take(registry.redis, alert_id) is None:
            raise HTTPException(404, f"no held message {alert_id!r}")
        return Response(status_code=204)

    @router.get("/alerts/{alert_id}/outcomes", dependencies=[admin], tags=["admin"])
    async def get_outcomes(alert_id: str) -> list[dict[str, Any]]:
        """Every recorded delivery outcome of one alert."""
        return [o.model_dump(mode="json") for o in await read_outcomes(registry.redis, alert_id)]

    app.include_router(router)


def _endpoint(request: Request) -> str:
    # Bounded label: the route template, not the concrete path with ids in it.
    route = request.scope.get("route")
    return str(getattr(route, "path", "unmatched"))
