"""The ops page (GET /ops) and the JSON it polls under /v1/ops/, for ops teams (admin keys).

Coverage map, live feed of incidents and notices with their reach, delivery rates per channel.
Ids, area names and counts only: no phone number, address or message body leaves here.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Response
from fastapi.responses import HTMLResponse, JSONResponse
from redis.asyncio import Redis

from services.ingest.auth import Role, require_admin
from services.ingest.ops_feed import MAX_REACH_IDS, reach_summary
from services.ingest.ops_map import OpsMapCache
from services.ingest.ops_watch import RoutedWatch
from services.ingest.pages import SECURITY_HEADERS, WEB_DIR, BBoxError, parse_bbox
from shared.delivery_stats import WINDOW_MINUTES, read_delivery_stats
from shared.outbox import reach_key
from shared.schemas import utcnow

#: Ops data is about people's neighbourhoods: never kept by a browser or proxy cache.
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
#: Area names listed per feed item; the count says how many there are in all.
MAX_NAMES = 12


def install_ops(
    app: FastAPI,
    *,
    redis: Redis,
    maps: OpsMapCache,
    watch: RoutedWatch,
    keys: list[tuple[str, Role]],
) -> None:
    """Add GET /ops and GET /v1/ops/map, /v1/ops/feed, /v1/ops/delivery (admin keys)."""
    ops_html = (WEB_DIR / "ops.html").read_text(encoding="utf-8")
    router = APIRouter(
        prefix="/v1/ops", tags=["ops"], dependencies=[Depends(require_admin(keys, redis))]
    )

    @app.api_route("/ops", methods=["GET", "HEAD"], include_in_schema=False)
    async def ops_page() -> HTMLResponse:
        """The ops page (Dutch); it asks for an admin key before it loads any data."""
        return HTMLResponse(ops_html, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

    @router.get(
        "/map",
        responses={422: {"description": "bbox malformed"}},
        summary="Areas with coverage and group ids, simplified for the view",
    )
    async def ops_map(
        bbox: Annotated[
            str | None,
            Query(
                max_length=200,
                description="minlon,minlat,maxlon,maxlat (WGS84); default: all areas",
                examples=["5.70,50.93,5.83,51.00"],
            ),
        ] = None,
    ) -> Response:
        """A FeatureCollection: `mode` "areas" (outlines with `coverage` full/partial/none,
        `covered`, `groups`) or "grid" (area counts per cell when the view holds more than
        2000 areas), with registry-wide counts and extents."""
        current = await maps.get()
        if bbox is None:
            extent = current.layer.extent or [3.2, 50.7, 7.3, 53.6]
            box = (extent[0], extent[1], extent[2], extent[3])
        else:
            try:
                box = parse_bbox(bbox)
            except BBoxError as exc:
                raise HTTPException(422, f"bbox: {exc}") from exc
        body = await asyncio.to_thread(current.answer, box)
        return Response(body, media_type="application/json", headers=_NO_STORE)

    @router.get("/feed", summary="Recent incidents and notices with their reach")
    async def ops_feed(
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> JSONResponse:
        """Incidents (reports folded together) and notices, most recently active first, each
        with "reached X of Y" over its alerts; follows the routed events live."""
        book = await watch.book()
        items = book.items(limit)
        current = await maps.get()
        async with redis.pipeline(transaction=False) as pipe:
            for item in items:
                for alert_id in item.alert_ids[:MAX_REACH_IDS]:
                    pipe.hgetall(reach_key(alert_id))
            rows = iter(await pipe.execute())
        out: list[dict[str, Any]] = []
        for item in items:
            reaches = [
                {str(k): int(v) for k, v in next(rows).items()}
                for _ in item.alert_ids[:MAX_REACH_IDS]
            ]
            entry = item.as_json()
            entry["reach"] = reach_summary(reaches)
            entry["areas"] = len(item.area_ids)
            entry["area_ids"] = item.area_ids[:MAX_NAMES]
            entry["area_names"] = current.names_of(item.area_ids[:MAX_NAMES])
            if entry["point"] is None:
                centre = current.centre_of(item.area_ids)
                entry["point"] = [round(centre[0], 5), round(centre[1], 5)] if centre else None
            out.append(entry)
        return JSONResponse(
            {
                "now": utcnow().isoformat(),
                "live": watch.live,
                "since": watch.since.isoformat() if watch.since else None,
                "events": book.events,
                "version": current.version,
                "items": out,
            },
            headers=_NO_STORE,
        )

    @router.get("/delivery", summary="Deliveries per channel and outcome, per minute")
    async def ops_delivery(
        minutes: Annotated[int, Query(ge=1, le=120)] = WINDOW_MINUTES,
    ) -> JSONResponse:
        """Per channel: outcomes in the window, a per-minute series (delivered, failed, other),
        the recent rate per minute and the failure share; totals since the counters began."""
        stats = await read_delivery_stats(redis, time.time(), minutes)
        return JSONResponse({"now": utcnow().isoformat(), **stats}, headers=_NO_STORE)

    app.include_router(router)
