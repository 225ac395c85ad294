"""The normalised dispatch notice, shared by ingest (JSON and CAP adapters) and the router.

A notice is what police dispatch or the municipality pushes to an area: a missing person, a
burglary wave, a fire. Whatever the wire format, ingest turns it into one frozen `Notice`, so the
router never needs to know whether it came as JSON or as a CAP 1.2 document.

Coordinates are WGS84. GeoJSON geometries keep GeoJSON's [longitude, latitude] order; circles
name `lat` and `lon` explicitly, so neither can be read the wrong way round.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Self, TypeAlias, get_args

import shapely
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator
from shapely.errors import ShapelyError
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.validation import explain_validity

Category = Literal["missing_person", "burglary", "suspicious_situation", "fire", "other"]
Status = Literal["Actual", "Exercise", "Test", "System", "Draft"]
MsgType = Literal["Alert", "Update", "Cancel", "Ack", "Error"]
RawFormat = Literal["json", "cap"]

#: A Polygon or MultiPolygon (shapely ships no type stubs, so this is for readers).
Polygonal: TypeAlias = Polygon | MultiPolygon

CATEGORIES: tuple[str, ...] = get_args(Category)
STATUSES: tuple[str, ...] = get_args(Status)
MSG_TYPES: tuple[str, ...] = get_args(MsgType)

#: Largest circle a notice may name. Neighbourhood watch is about buurten; a 50 km circle
#: already covers a province, and anything larger is more likely a unit mistake (m vs km).
MAX_RADIUS_M = 50_000.0
MAX_RINGS = 3

#: A missing person may have walked on, so the adjacent buurten watch too; other categories
#: stay in the area itself unless dispatch asks for more.
_DEFAULT_RINGS: dict[str, int] = {"missing_person": 1}

#: CBS area codes: gemeente GM + 4 digits, wijk WK + 6, buurt BU + 8.
CBS_CODE_RE = re.compile(r"^(GM\d{4}|WK\d{6}|BU\d{8})$")
CBS_SCHEME = "CBS"

#: Mean Earth radius (IUGG). A sphere is accurate to well under 1 % at Dutch latitudes,
#: far better than any circle a dispatcher draws.
_EARTH_RADIUS_M = 6_371_008.8
_M_PER_DEG_LAT = math.pi * _EARTH_RADIUS_M / 180.0


def default_rings(category: str) -> int:
    """Adjacent rings a category reaches when the sender does not say: missing_person 1, else 0."""
    return _DEFAULT_RINGS.get(category, 0)


def is_cbs_code(code: str) -> bool:
    """Whether a string is a CBS gemeente, wijk or buurt code (GM0971, WK097100, BU09710000)."""
    return CBS_CODE_RE.fullmatch(code) is not None


def validate_polygonal_geojson(geometry: Mapping[str, Any]) -> dict[str, Any]:
    """A GeoJSON Polygon/MultiPolygon as a plain dict, or ValueError saying what is wrong."""
    gtype = geometry.get("type")
    if gtype not in ("Polygon", "MultiPolygon"):
        raise ValueError(f"geometry type must be Polygon or MultiPolygon; got {gtype!r}")
    if "coordinates" not in geometry:
        raise ValueError(f"{gtype} has no coordinates")
    try:
        geom = shape({"type": gtype, "coordinates": geometry["coordinates"]})
    except (ShapelyError, TypeError, ValueError, IndexError, KeyError) as exc:
        raise ValueError(f"{gtype} coordinates are malformed ({exc})") from exc
    if geom.is_empty:
        raise ValueError(f"{gtype} is empty")
    minx, miny, maxx, maxy = geom.bounds
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise ValueError(f"{gtype} has non-finite coordinates")
    # GeoJSON is [lon, lat]; a latitude outside ±90 usually means the pair was swapped.
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise ValueError(
            f"{gtype} coordinates must be WGS84 [longitude, latitude] within ±180, ±90"
        )
    # Refuse rather than repair: a repaired bow-tie would alert an area dispatch did not draw.
    if not geom.is_valid:
        raise ValueError(f"{gtype} is not a valid polygon: {explain_validity(geom)}")
    if geom.area == 0:
        raise ValueError(f"{gtype} has zero area")
    mapped: dict[str, Any] = shapely.geometry.mapping(geom)
    # mapping() yields tuples; lists keep the model JSON-shaped and equal after a round trip.
    return {"type": gtype, "coordinates": _lists(mapped["coordinates"])}


def _lists(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_lists(v) for v in value]
    return float(value)


class Circle(BaseModel):
    """A circle: WGS84 centre and a radius in metres."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lat: float = Field(ge=-90, le=90, description="Centre latitude, WGS84 degrees")
    lon: float = Field(ge=-180, le=180, description="Centre longitude, WGS84 degrees")
    radius_m: float = Field(gt=0, le=MAX_RADIUS_M, description="Radius in metres")


class NoticeArea(BaseModel):
    """One area of a notice: exactly one of a polygon geometry, a circle, or a list of codes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    geometry: dict[str, Any] | None = Field(
        None, description="GeoJSON Polygon or MultiPolygon, WGS84 [lon, lat]"
    )
    circle: Circle | None = Field(None, description="Centre and radius")
    codes: list[str] = Field(
        default_factory=list, description="Area codes, e.g. CBS GM/WK/BU codes"
    )
    scheme: str | None = Field(None, description="Code scheme of `codes`, e.g. CBS")
    description: str = Field("", description="Human description of the area (CAP areaDesc)")

    @model_validator(mode="before")
    @classmethod
    def _default_scheme(cls, data: Any) -> Any:
        # Codes without a scheme are CBS codes: the only scheme the area registry knows.
        if isinstance(data, Mapping) and data.get("codes") and data.get("scheme") is None:
            data = {**data, "scheme": CBS_SCHEME}
        return data

    @field_validator("geometry")
    @classmethod
    def _polygonal(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # Normalised once here so every consumer may trust the stored geometry.
        return None if value is None else validate_polygonal_geojson(value)

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [self.geometry is not None, self.circle is not None, bool(self.codes)]
        if sum(given) != 1:
            raise ValueError("an area is exactly one of: geometry, circle, or codes")
        if self.scheme == CBS_SCHEME:
            bad = [c for c in self.codes if not is_cbs_code(c)]
            if bad:
                raise ValueError(f"not CBS area codes (GMdddd, WKdddddd, BUdddddddd): {bad[:5]}")
        if self.scheme is not None and not self.codes:
            raise ValueError("scheme belongs with codes")
        return self

    @property
    def kind(self) -> Literal["geometry", "circle", "codes"]:
        """Which of the three forms this area takes."""
        if self.geometry is not None:
            return "geometry"
        return "circle" if self.circle is not None else "codes"


class Notice(BaseModel):
    """A dispatch notice, normalised from JSON or CAP 1.2."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    notice_id: str = Field(min_length=1, description="Unique id of this notice")
    sender: str = Field(min_length=1, description="Who sent it (dispatch key name, CAP sender)")
    sent: AwareDatetime = Field(description="When the sender sent it")
    status: Status = Field("Actual", description="CAP status: only Actual is real")
    msg_type: MsgType = Field("Alert", description="Alert, or Update/Cancel of earlier notices")
    references: list[str] = Field(
        default_factory=list, description="Notice ids this one updates or cancels"
    )
    category: Category
    headline: str = ""
    text: str = ""
    areas: list[NoticeArea] = Field(default_factory=list, description="Where it applies")
    adjacent_rings: int = Field(
        ge=0, le=MAX_RINGS, description="How many rings of adjacent areas are told as well"
    )
    expires: AwareDatetime | None = Field(None, description="When it stops being relevant")
    language: str = Field("nl-NL", description="RFC 3066 language of headline and text")
    raw_format: RawFormat = Field(description="Wire format it arrived in")
    audience: Literal["residents", "admins"] = Field(
        "residents", description="admins: one admin of each group reached, not every member"
    )
    expired: bool = Field(
        False, description="A closing message sent because the referenced notice expired"
    )

    @model_validator(mode="before")
    @classmethod
    def _rings_by_category(cls, data: Any) -> Any:
        # Filled before field validation so the field itself stays a plain, required int.
        if isinstance(data, Mapping) and data.get("adjacent_rings") is None:
            data = dict(data)
            data["adjacent_rings"] = default_rings(str(data.get("category", "")))
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.msg_type in ("Alert", "Update") and not self.areas:
            raise ValueError(f"a notice of msg_type {self.msg_type} needs at least one area")
        # Without references an Update or Cancel cannot be tied to what it changes.
        if self.msg_type in ("Update", "Cancel") and not self.references:
            raise ValueError(f"a notice of msg_type {self.msg_type} needs references")
        if self.expires is not None and self.expires <= self.sent:
            raise ValueError("expires must be after sent")
        return self


def circle_polygon(circle: Circle, segments: int = 32) -> Polygon:
    """A circle as a polygon of `segments` vertices (metres to degrees at its latitude)."""
    if segments < 3:
        raise ValueError("a circle needs at least 3 segments")
    dlat = circle.radius_m / _M_PER_DEG_LAT
    # Near the poles cos(lat) goes to 0; clamp so a (silly) polar circle stays finite.
    dlon = dlat / max(math.cos(math.radians(circle.lat)), 1e-6)
    ring = [
        (
            circle.lon + dlon * math.sin(2 * math.pi * i / segments),
            circle.lat + dlat * math.cos(2 * math.pi * i / segments),
        )
        for i in range(segments)
    ]
    return Polygon(ring)


def area_geometries(areas: Iterable[NoticeArea], circle_segments: int = 32) -> Polygonal | None:
    """The union of all polygon and circle areas as one (Multi)Polygon; None if there are none."""
    parts: list[Polygonal] = []
    for area in areas:
        if area.geometry is not None:
            parts.append(shape(area.geometry))
        elif area.circle is not None:
            parts.append(circle_polygon(area.circle, circle_segments))
    if not parts:
        return None
    merged = shapely.union_all(parts)
    if isinstance(merged, Polygon | MultiPolygon):
        return merged
    # Unions of valid polygons are polygonal; keep only polygons should GEOS return a collection.
    polys = [g for g in shapely.get_parts(merged) if isinstance(g, Polygon) and not g.is_empty]
    return MultiPolygon(polys) if polys else None


def area_codes(areas: Iterable[NoticeArea]) -> list[str]:
    """All area codes of the code areas, in order, without duplicates."""
    seen: dict[str, None] = {}
    for area in areas:
        for code in area.codes:
            seen.setdefault(code, None)
    return list(seen)
