"""The JSON form of POST /v1/notices, and its conversion to the shared `Notice`.

`NoticeIn` is the request body FastAPI validates (so a bad field is a 422 naming the field);
`to_notice` adds what only the edge knows: the id, the authenticated sender and the time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.notices import (
    MAX_RADIUS_M,
    MAX_RINGS,
    Category,
    Circle,
    Notice,
    NoticeArea,
    Status,
    default_rings,
    is_cbs_code,
    validate_polygonal_geojson,
)

_AREA_HELP = (
    "area must be a GeoJSON Polygon or MultiPolygon geometry, "
    "{circle: {lat, lon, radius_m}} or {codes: [CBS codes]}"
)


class NoticeError(ValueError):
    """A notice that is well-formed but cannot be accepted; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GeometryAreaIn(_Strict):
    """A GeoJSON Polygon or MultiPolygon in WGS84 [longitude, latitude]."""

    type: Literal["Polygon", "MultiPolygon"]
    coordinates: list[Any]
    bbox: list[float] | None = None

    @model_validator(mode="after")
    def _valid(self) -> Self:
        validate_polygonal_geojson({"type": self.type, "coordinates": self.coordinates})
        return self


class CircleIn(_Strict):
    """Centre and radius of a circular area."""

    lat: float = Field(ge=-90, le=90, description="Centre latitude, WGS84 degrees")
    lon: float = Field(ge=-180, le=180, description="Centre longitude, WGS84 degrees")
    radius_m: float = Field(ge=1, le=MAX_RADIUS_M, description="Radius in metres (1..50000)")


class CircleAreaIn(_Strict):
    """A circular area: `{"circle": {"lat", "lon", "radius_m"}}`."""

    circle: CircleIn


class CodesAreaIn(_Strict):
    """Areas by code (extension): `{"codes": ["BU09710000", ...]}`, CBS codes by default."""

    codes: list[str] = Field(min_length=1, max_length=1000)
    scheme: Literal["CBS"] = "CBS"

    @field_validator("codes")
    @classmethod
    def _upper(cls, codes: list[str]) -> list[str]:
        return [c.strip().upper() for c in codes]

    @model_validator(mode="after")
    def _cbs(self) -> Self:
        bad = [c for c in self.codes if not is_cbs_code(c)]
        if bad:
            raise ValueError(f"not CBS area codes (GMdddd, WKdddddd, BUdddddddd): {bad[:5]}")
        return self


def _area_kind(value: Any) -> str | None:
    # Chooses the union member up front, so an error speaks of one form, not of all three.
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if not isinstance(value, dict):
        return None
    if "circle" in value:
        return "circle"
    if "codes" in value:
        return "codes"
    if value.get("type") in ("Polygon", "MultiPolygon"):
        return "geometry"
    return None


AreaIn = Annotated[
    Annotated[GeometryAreaIn, Tag("geometry")]
    | Annotated[CircleAreaIn, Tag("circle")]
    | Annotated[CodesAreaIn, Tag("codes")],
    Discriminator(_area_kind, custom_error_type="area_form", custom_error_message=_AREA_HELP),
]


class NoticeIn(_Strict):
    """A dispatch notice posted as JSON to POST /v1/notices."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    category: Category | None = Field(
        None, description="missing_person, burglary, suspicious_situation, fire or other"
    )
    headline: str = Field(min_length=1, max_length=200, description="Short title")
    text: str = Field("", max_length=5000, description="The message itself")
    area: AreaIn | None = Field(None, description=_AREA_HELP)
    adjacent_rings: int | None = Field(
        None,
        ge=0,
        le=MAX_RINGS,
        description="Rings of adjacent areas told too; default missing_person 1, others 0",
    )
    expires: AwareDatetime | None = Field(None, description="When the notice stops applying")
    status: Status = Field("Actual", description="Actual, or Exercise/Test/System/Draft")
    # Ack and Error are CAP's machine-to-machine replies; a dispatcher posting JSON means one of
    # these three.
    msg_type: Literal["Alert", "Update", "Cancel"] = "Alert"
    audience: Literal["residents", "admins"] = Field(
        "residents", description="admins: one admin per group (the admins' channel)"
    )
    references: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=100, description="Ids of the notices this one changes"
    )

    @field_validator("expires")
    @classmethod
    def _future(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        # Checked here only when the caller passes context={"now": ...}; to_notice always checks.
        now = info.context.get("now") if isinstance(info.context, dict) else None
        if value is not None and isinstance(now, datetime) and value <= now:
            raise ValueError("expires must be in the future")
        return value

    @model_validator(mode="after")
    def _needs(self) -> Self:
        if self.msg_type in ("Alert", "Update"):
            missing = [n for n in ("category", "area") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"{' and '.join(missing)} required for msg_type {self.msg_type}")
        if self.msg_type in ("Update", "Cancel") and not self.references:
            raise ValueError(f"references required for msg_type {self.msg_type}")
        return self


def area_from_json(area: GeometryAreaIn | CircleAreaIn | CodesAreaIn) -> NoticeArea:
    """One request area as the shared NoticeArea."""
    if isinstance(area, GeometryAreaIn):
        return NoticeArea(geometry={"type": area.type, "coordinates": area.coordinates})
    if isinstance(area, CircleAreaIn):
        c = area.circle
        return NoticeArea(circle=Circle(lat=c.lat, lon=c.lon, radius_m=c.radius_m))
    return NoticeArea(codes=area.codes, scheme=area.scheme)


def to_notice(body: NoticeIn, *, notice_id: str, sender: str, now: datetime) -> Notice:
    """The request as a Notice sent `now` by `sender`; NoticeError if it has already expired."""
    if body.expires is not None and body.expires <= now:
        raise NoticeError(f"expires: must be in the future (now is {now.isoformat()})")
    # A Cancel may omit the category; the router takes it from the notice it cancels.
    category: Category = body.category or "other"
    try:
        return Notice(
            notice_id=notice_id,
            sender=sender,
            sent=now,
            status=body.status,
            msg_type=body.msg_type,
            references=list(body.references),
            category=category,
            headline=body.headline,
            text=body.text or body.headline,
            areas=[area_from_json(body.area)] if body.area is not None else [],
            adjacent_rings=(
                body.adjacent_rings if body.adjacent_rings is not None else default_rings(category)
            ),
            expires=body.expires,
            language="nl-NL",
            raw_format="json",
            audience=body.audience,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "notice"
        raise NoticeError(f"{loc}: {str(err['msg']).removeprefix('Value error, ')}") from exc
