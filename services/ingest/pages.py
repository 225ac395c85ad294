"""The resident web page: the report form, its static files and the area outlines it draws.

Everything the page needs is served from here (no CDN, no tile server): the map shows the
registry's own area polygons over a plain background, fetched per visible bbox.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import shapely
from fastapi import FastAPI, HTTPException, Query, Response
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from shared.registry import Registry, StoredArea

#: The page, its script, style sheet and vendored Leaflet, shipped as package data.
WEB_DIR = Path(__file__).resolve().parent / "web"

#: At most this many areas in one answer; a bigger view must zoom in. 2000 simplified buurt
#: polygons is about what a phone draws smoothly as SVG.
MAX_FEATURES = 2000

#: Strict: only this origin, no inline script or style, no framing, no plugins.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "geolocation=(self), camera=(), microphone=()",
}

#: Coordinates in answers are rounded to 1e-6 degrees (about 0.1 m): more is only bytes.
_DECIMALS = 6


class BBoxError(ValueError):
    """A bbox parameter that cannot be used; the message names the problem."""


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """`minlon,minlat,maxlon,maxlat` in WGS84 degrees as four floats; else BBoxError."""
    parts = text.split(",")
    if len(parts) != 4:
        raise BBoxError(
            f"bbox must be four comma-separated numbers minlon,minlat,maxlon,maxlat; "
            f"got {len(parts)} part(s)"
        )
    try:
        values = [float(p) for p in parts]
    except ValueError as exc:
        raise BBoxError(f"bbox must contain numbers only: {text!r}") from exc
    if not all(math.isfinite(v) for v in values):
        raise BBoxError("bbox numbers must be finite")
    min_lon, min_lat, max_lon, max_lat = values
    if not (-180 <= min_lon <= 180 and -180 <= max_lon <= 180):
        raise BBoxError("bbox longitudes must lie within -180..180")
    if not (-90 <= min_lat <= 90 and -90 <= max_lat <= 90):
        raise BBoxError("bbox latitudes must lie within -90..90")
    if min_lon > max_lon or min_lat > max_lat:
        raise BBoxError("bbox minimum must not exceed its maximum (minlon,minlat,maxlon,maxlat)")
    return min_lon, min_lat, max_lon, max_lat


def simplify_tolerance(bbox: tuple[float, float, float, float]) -> float:
    """Simplification tolerance for a view: about a pixel, in power-of-two steps."""
    # A phone shows the bbox ~400-1000 px wide; detail below a pixel is invisible. Power-of-two
    # steps keep the shapes stable while panning at one zoom level.
    span = max(bbox[2] - bbox[0], bbox[3] - bbox[1], 1e-6)
    return float(2.0 ** math.floor(math.log2(span / 1000)))


@dataclass(frozen=True)
class AreaLayer:
    """Every area's geometry in an STRtree, for one registry version."""

    version: int
    ids: tuple[str, ...]
    names: tuple[str, ...]
    geoms: npt.NDArray[np.object_]
    tree: Any  # shapely.STRtree (shapely ships no type stubs)
    #: [minlon, minlat, maxlon, maxlat] of all areas, or None when there are none.
    extent: list[float] | None

    @classmethod
    def build(cls, version: int, areas: list[StoredArea]) -> AreaLayer:
        """Decode the stored WKB (vectorised); unreadable or empty geometries are left out."""
        hexes = np.empty(len(areas), dtype=object)
        hexes[:] = [a.wkb_hex or None for a in areas]
        geoms = shapely.from_wkb(hexes, on_invalid="ignore") if len(areas) else hexes
        keep = [i for i, g in enumerate(geoms) if g is not None and not shapely.is_empty(g)]
        kept = np.empty(len(keep), dtype=object)
        kept[:] = [geoms[i] for i in keep]
        return cls(
            version=version,
            ids=tuple(areas[i].id for i in keep),
            names=tuple(areas[i].name for i in keep),
            geoms=kept,
            tree=shapely.STRtree(kept),
            extent=[round(float(v), _DECIMALS) for v in shapely.total_bounds(kept)]
            if len(keep)
            else None,
        )

    def query(self, bbox: tuple[float, float, float, float]) -> list[int]:
        """Indexes of the areas intersecting the bbox, in a stable order."""
        if not len(self.ids):
            return []
        hits = self.tree.query(shapely.box(*bbox), predicate="intersects")
        return sorted(int(i) for i in hits)

    def feature_collection(self, bbox: tuple[float, float, float, float], hits: list[int]) -> str:
        """The hits as a GeoJSON FeatureCollection text, simplified for the view."""
        tolerance = simplify_tolerance(bbox)
        chosen = self.geoms[hits] if hits else np.empty(0, dtype=object)
        simple = shapely.simplify(chosen, tolerance, preserve_topology=True)
        simple = shapely.transform(simple, lambda xy: np.round(xy, _DECIMALS))
        texts = shapely.to_geojson(simple) if len(hits) else []
        features = []
        for i, geometry in zip(hits, texts, strict=True):
            area_id = json.dumps(self.ids[i])
            name = json.dumps(self.names[i])
            features.append(
                f'{{"type":"Feature","id":{area_id},'
                f'"properties":{{"id":{area_id},"name":{name}}},"geometry":{geometry}}}'
            )
        head = {
            "type": "FeatureCollection",
            "bbox": list(bbox),
            "areas_total": len(self.ids),
            "areas_extent": self.extent,
        }
        # The geometries are already JSON text; re-parsing 2000 of them to dump them again
        # would cost more than the query.
        return json.dumps(head)[:-1] + ',"features":[' + ",".join(features) + "]}"


class AreaLayerCache:
    """The AreaLayer of the current registry version: one Redis GET per request, not a scan."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._layer: AreaLayer | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> AreaLayer:
        """The layer for the registry as it is now, rebuilt first if the version moved."""
        version = await self.registry.version()
        layer = self._layer
        if layer is not None and layer.version == version:
            return layer
        async with self._lock:
            layer = self._layer
            if layer is None or layer.version != version:
                areas = await self.registry.all_areas()
                # Decoding ~10,000 polygons is CPU work; keep the event loop answering.
                layer = await asyncio.to_thread(AreaLayer.build, version, areas)
                self._layer = layer
            return layer


class _SecureStaticFiles(StaticFiles):
    """StaticFiles that sends the security headers and asks browsers to revalidate."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        """The file (or 304/404) with the security headers added."""
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        # File names carry no hash, so a browser must check the ETag before reusing a copy.
        response.headers["Cache-Control"] = "no-cache"
        return response


def install_pages(
    app: FastAPI, registry: Registry, cache: AreaLayerCache | None = None
) -> None:
    """Add the resident page (GET /), its /static/ files and GET /v1/areas.geojson.

    `cache`: an AreaLayerCache shared with other pages (the ops map), so areas decode once.
    """
    index_html = (WEB_DIR / "index.html").read_text(encoding="utf-8")
    cache = cache or AreaLayerCache(registry)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def report_page() -> HTMLResponse:
        """The resident report page (Dutch)."""
        return HTMLResponse(index_html, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

    @app.get(
        "/v1/areas.geojson",
        tags=["areas"],
        response_class=Response,
        responses={
            200: {
                "content": {"application/geo+json": {}},
                "description": "A FeatureCollection (properties id and name; simplified "
                "geometry), with `areas_total` and `areas_extent` of the whole registry",
            },
            422: {"description": "bbox malformed, or holding more than 2000 areas"},
        },
    )
    async def areas_geojson(
        bbox: Annotated[
            str,
            Query(
                max_length=200,
                description="minlon,minlat,maxlon,maxlat in WGS84 degrees",
                examples=["5.70,50.93,5.83,51.00"],
            ),
        ],
    ) -> Response:
        """Outlines of the areas intersecting a bbox, simplified to the view's scale."""
        try:
            box = parse_bbox(bbox)
        except BBoxError as exc:
            raise HTTPException(422, f"bbox: {exc}") from exc
        layer = await cache.get()
        hits = layer.query(box)
        if len(hits) > MAX_FEATURES:
            raise HTTPException(
                422,
                f"bbox too big: it holds {len(hits)} areas, at most {MAX_FEATURES} are "
                "returned; zoom in (ask for a smaller bbox)",
            )
        body = await asyncio.to_thread(layer.feature_collection, box, hits)
        return Response(
            body,
            media_type="application/geo+json",
            headers={
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-cache",
            },
        )

    app.mount("/static", _SecureStaticFiles(directory=WEB_DIR), name="static")
