"""HTTP routes of the edge: thin handlers over the pure normalisers and the registry."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from redis.exceptions import RedisError

from services.ingest.admission import Admission
from services.ingest.auth import (
    Principal,
    Role,
    issue_group_key,
    require_admin,
    require_group_admin,
    revoke_group_keys,
)
from services.ingest.conversation import JOIN_REQUESTS
from services.ingest.coverage import Coverage
from services.ingest.normalise import web_report
from services.ingest.publishing import AlertPublisher
from shared.addresses import AddressError, normalise_address
from shared.errors import TransientError
from shared.gazetteer import find_postcodes, lookup
from shared.geo import geometry_from_geojson, to_wkb_hex
from shared.held import list_held, take
from shared.member_rules import GroupRules, RuleViolation, check_member
from shared.moderation import assess
from shared.outbox import read_outbox, read_outcomes, read_reach
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
    admission = Admission(limiter)
    admin = Depends(require_admin(keys, registry.redis))
    group_admin = Depends(require_group_admin(keys, registry.redis))
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
        # The bucket and the registry version (for `covered`) in one round trip.
        decision, version = await admission.hit(f"source:{client}", source_limit)
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
            covered=await coverage.covers(
                report.location.lat, report.location.lon, "web", version=version
            ),
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
            "residency_required": group.residency_required,
            "created": created,
        }

    @router.post(
        "/groups/{group_id}/admin-keys", status_code=201, dependencies=[admin], tags=["admin"]
    )
    async def post_group_key(group_id: str) -> dict[str, str]:
        """A key for this group's own admins: they moderate and manage only this group."""
        if await registry.get_group(group_id) is None:
            raise HTTPException(404, f"unknown group {group_id!r}")
        return {"group_id": group_id, "key": await issue_group_key(registry.redis, group_id)}

    @router.delete("/groups/{group_id}/admin-keys", dependencies=[admin], tags=["admin"])
    async def delete_group_keys(group_id: str) -> dict[str, int]:
        """Revoke every key of this group's admins."""
        return {"revoked": await revoke_group_keys(registry.redis, group_id)}

    @router.post("/groups/{group_id}/members", status_code=201, tags=["admin"])
    async def post_member(
        group_id: str, member: MemberIn, principal: Principal = group_admin
    ) -> dict[str, Any]:
        """Add a member; checks the group's rules; sms/whatsapp addresses become E.164."""
        _may_manage(principal, group_id)
        group = await registry.get_group(group_id)
        if group is None:
            raise HTTPException(404, f"unknown group {group_id!r}")
        try:
            address = normalise_address(member.channel, member.address)
        except AddressError as exc:
            rejected.labels("/v1/groups/members", "invalid").inc()
            raise HTTPException(422, str(exc)) from exc
        try:
            checked = check_member(
                GroupRules(group.id, group.min_age, group.residency_required),
                today=utcnow().date(),
                birth_date=member.birth_date,
                lives_in_area=await _lives_in(group.id, member),
            )
        except RuleViolation as exc:
            rejected.labels("/v1/groups/members", "rule").inc()
            raise HTTPException(422, str(exc)) from exc
        stored = await registry.add_member(
            group_id, member.model_copy(update={"address": address}), checked
        )
        return {"member_id": stored.member_id, "checked": stored.checked}

    async def _lives_in(group_id: str, member: MemberIn) -> bool | None:
        """Whether the member's home (or postcode) lies in the group; None when neither given."""
        if member.home is not None:
            lat, lon = member.home.lat, member.home.lon
        elif member.postcode:
            found = await lookup(registry.redis, find_postcodes(member.postcode))
            if found is None:
                raise HTTPException(
                    422, f"postcode {member.postcode!r} is not in the gazetteer; give home instead"
                )
            _code, lat, lon = found
        else:
            return None
        _areas, group_ids = (await coverage.index.get()).match(lon, lat)
        return group_id in group_ids

    @router.delete(
        "/groups/{group_id}/members/{member_id}",
        status_code=204,
        tags=["admin"],
    )
    async def delete_member(
        group_id: str, member_id: str, principal: Principal = group_admin
    ) -> Response:
        """Remove a member from a group (its own admins may, too)."""
        _may_manage(principal, group_id)
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
        return [
            {"request_id": str(rid), **{str(k): str(v) for k, v in (fields or {}).items()}}
            for rid, fields in rows
        ]

    @router.get("/held", tags=["admin"])
    async def get_held(
        principal: Principal = group_admin,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        group_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Messages the house rules held back, newest first; repeat offenders flagged.

        A group admin key sees only its own group's; an admin key may filter by group_id.
        """
        scope = principal.group_id or group_id
        return await list_held(registry.redis, limit, scope)

    @router.post("/held/{alert_id}/release", status_code=202, tags=["admin"])
    async def release_held(alert_id: str, principal: Principal = group_admin) -> AlertAccepted:
        """Broadcast a held message after all (routed once, as if it had passed)."""
        alert = await take(registry.redis, alert_id, principal.group_id)
        if alert is None:
            raise HTTPException(404, f"no held message {alert_id!r}")
        released = alert.model_copy(update={"released": True})
        await publisher.publish(released, msg_id=f"released:{alert_id}")
        return AlertAccepted(alert_id=alert_id)

    @router.delete("/held/{alert_id}", status_code=204, tags=["admin"])
    async def reject_held(alert_id: str, principal: Principal = group_admin) -> Response:
        """Reject a held message for good."""
        if await take(registry.redis, alert_id, principal.group_id) is None:
            raise HTTPException(404, f"no held message {alert_id!r}")
        return Response(status_code=204)

    @router.get("/alerts/{alert_id}/reach", dependencies=[admin], tags=["admin"])
    async def get_reach(alert_id: str) -> dict[str, Any]:
        """Reached X of Y: planned recipients, a count per outcome, and those still pending."""
        counts = await read_reach(registry.redis, alert_id)
        if not counts:
            raise HTTPException(404, f"no delivery recorded for alert {alert_id!r}")
        planned = counts.pop("planned", 0)
        settled = sum(counts.values())
        return {
            "alert_id": alert_id,
            "planned": planned,
            "reached": counts.get("delivered", 0),
            "outcomes": counts,
            "pending": max(0, planned - settled),
        }

    @router.get("/alerts/{alert_id}/outcomes", dependencies=[admin], tags=["admin"])
    async def get_outcomes(alert_id: str) -> list[dict[str, Any]]:
        """Every recorded delivery outcome of one alert."""
        return [o.model_dump(mode="json") for o in await read_outcomes(registry.redis, alert_id)]

    app.include_router(router)


def _may_manage(principal: Principal, group_id: str) -> None:
    if not principal.may_manage(group_id):
        raise HTTPException(403, f"this key is for another group, not {group_id!r}")


def _endpoint(request: Request) -> str:
    # Bounded label: the route template, not the concrete path with ids in it.
    route = request.scope.get("route")
    return str(getattr(route, "path", "unmatched"))
