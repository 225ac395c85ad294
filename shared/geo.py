"""Geometry helpers: read area polygons from GeoJSON, compute adjacency, find areas by point.

Everything here is pure (no I/O) and built on shapely 2's vectorised functions, so it can be
unit-tested with tables and hypothesis and run on all ~10,000 Dutch buurten in about a second.
Coordinates are WGS84 longitude/latitude (EPSG:4326) throughout, as GeoJSON prescribes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import shapely
from shapely.errors import ShapelyError
from shapely.geometry import MultiPolygon, Point, Polygon, shape
from shapely.geometry.base import BaseGeometry

#: A Polygon or MultiPolygon (shapely ships no type stubs, so this is for readers).
Polygonal: TypeAlias = Polygon | MultiPolygon

#: (id property, name property) pairs, most specific first: a CBS buurt file also carries the
#: WK_CODE and GM_CODE of the wijk and gemeente a buurt lies in, and the buurt code must win.
ID_NAME_FIELDS: tuple[tuple[str, str], ...] = (
    ("id", "name"),
    ("BU_CODE", "BU_NAAM"),
    ("WK_CODE", "WK_NAAM"),
    ("GM_CODE", "GM_NAAM"),
    ("statcode", "statnaam"),
    # The CBS wijk- en buurtkaart since 2020 spells its fields in lower case.
    ("buurtcode", "buurtnaam"),
    ("wijkcode", "wijknaam"),
    ("gemeentecode", "gemeentenaam"),
)

_POLYGONAL_TYPES = frozenset({"Polygon", "MultiPolygon"})
_GEOMETRY_TYPES = frozenset(
    {"Point", "MultiPoint", "LineString", "MultiLineString", "GeometryCollection"}
    | _POLYGONAL_TYPES
)
#: Parse progress is reported in steps of this many features (a callback per feature would
#: cost more than the work it reports on).
_PROGRESS_STEP = 500
#: Borders are compared on a grid of 1e-9 degrees (about 0.1 mm), far below any survey.
_ADJACENCY_DECIMALS = 9


class GeoJSONError(ValueError):
    """The document is not a GeoJSON FeatureCollection at all."""


@dataclass(frozen=True)
class AreaFeature:
    """One area read from GeoJSON: id, display name and a valid WGS84 (Multi)Polygon."""

    id: str
    name: str
    geometry: Polygonal


@dataclass(frozen=True)
class FeatureProblem:
    """A feature that was skipped (or repaired), with the reason in a sentence."""

    index: int
    feature_id: str | None
    reason: str
    #: False when the feature was still imported (e.g. an invalid polygon that was repaired).
    skipped: bool = True


# --- GeoJSON ---------------------------------------------------------------------------------


def parse_feature_collection(
    doc: object, *, progress: Callable[[int], None] | None = None
) -> tuple[list[AreaFeature], list[FeatureProblem]]:
    """Read areas from a GeoJSON FeatureCollection; bad features become problems, not errors."""
    features = _features_of(doc)
    crs_note = _crs_note(doc)
    problems: list[FeatureProblem] = []
    candidates: list[_Candidate] = []
    reported = 0
    for index, feature in enumerate(features):
        if progress is not None and index - reported >= _PROGRESS_STEP:
            progress(index - reported)
            reported = index
        read = _read_feature(index, feature)
        if isinstance(read, FeatureProblem):
            problems.append(read)
        else:
            candidates.append(read)
    # The geometry checks run vectorised over all features at once: one shapely call per
    # feature and check would cost more than reading the file.
    checked = _check_polygonal([c.kind for c in candidates], [c.raw for c in candidates])
    kept: dict[str, tuple[int, AreaFeature]] = {}
    for cand, (geometry, message) in zip(candidates, checked, strict=True):
        if geometry is None:
            reason = message or "the geometry cannot be used"
            if crs_note and "WGS84" in reason:
                reason += crs_note
            problems.append(FeatureProblem(cand.index, cand.id, _sentence(reason)))
            continue
        if message is not None:
            problems.append(FeatureProblem(cand.index, cand.id, message, skipped=False))
        previous = kept.pop(cand.id, None)
        if previous is not None:
            # Last one wins, as with an upsert; the one dropped is the one worth naming (and a
            # repair note about it would only confuse).
            problems = [p for p in problems if p.index != previous[0]]
            problems.append(
                FeatureProblem(
                    previous[0],
                    cand.id,
                    f"Id {cand.id!r} appears again at feature {cand.index}; the last one wins, "
                    "so this one was skipped.",
                )
            )
        kept[cand.id] = (cand.index, AreaFeature(cand.id, cand.name or cand.id, geometry))
    if progress is not None and len(features) > reported:
        progress(len(features) - reported)
    problems.sort(key=lambda p: p.index)
    return [area for _, area in kept.values()], problems


def geometry_from_geojson(obj: object) -> Polygonal:
    """A valid WGS84 Polygon/MultiPolygon from a GeoJSON geometry (or Feature); else ValueError."""
    if isinstance(obj, Mapping) and obj.get("type") == "Feature":
        obj = obj.get("geometry")
    kind, raw = _shape_of(obj)
    [(geometry, message)] = _check_polygonal([kind], [raw])
    if geometry is None:
        raise ValueError(message)
    return geometry


def to_wkb_hex(geom: BaseGeometry) -> str:
    """Geometry as 2D hex WKB, the form the registry stores."""
    return str(shapely.to_wkb(geom, hex=True, output_dimension=2))


def from_wkb_hex(s: str) -> BaseGeometry:
    """Geometry from hex WKB; ValueError when the text is not WKB."""
    if not isinstance(s, str) or not s:
        raise ValueError("expected a non-empty hex WKB string")
    try:
        return shapely.from_wkb(s)
    except ShapelyError as exc:
        raise ValueError(f"not a valid hex WKB geometry: {exc}") from exc


def _features_of(doc: object) -> list[Any]:
    if not isinstance(doc, Mapping):
        raise GeoJSONError(
            "expected a GeoJSON FeatureCollection (a JSON object with "
            f'"type": "FeatureCollection"), got {_json_kind(doc)}'
        )
    kind = doc.get("type")
    if not isinstance(kind, str | None):
        raise GeoJSONError(f'expected a GeoJSON FeatureCollection, but "type" is {kind!r}')
    if kind == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list):
            raise GeoJSONError(
                f'the FeatureCollection has no "features" list (got {_json_kind(features)})'
            )
        return features
    if kind == "Topology":
        raise GeoJSONError(
            "this is TopoJSON, not GeoJSON; convert it to a GeoJSON FeatureCollection first "
            "(e.g. with mapshaper or topojson-client's topo2geo)"
        )
    if kind == "Feature" or kind in _GEOMETRY_TYPES:
        raise GeoJSONError(
            f"expected a GeoJSON FeatureCollection, got a single {kind}; "
            'wrap it as {"type": "FeatureCollection", "features": [...]}'
        )
    raise GeoJSONError(
        f'expected a GeoJSON FeatureCollection, but "type" is {kind!r}'
        if kind is not None
        else 'expected a GeoJSON FeatureCollection, but the object has no "type" member'
    )


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _crs_note(doc: object) -> str:
    # GeoJSON 2008 allowed a "crs" member; RFC 7946 dropped it, but exports from GIS tools
    # still carry it, and naming it makes the "not WGS84" problem obvious to the user.
    crs = doc.get("crs") if isinstance(doc, Mapping) else None
    props = crs.get("properties") if isinstance(crs, Mapping) else None
    name = props.get("name") if isinstance(props, Mapping) else None
    return f" (the file declares crs {name})" if isinstance(name, str) and name else ""


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A feature with an id and a polygonal shape, not yet checked for validity and range."""

    index: int
    id: str
    name: str
    kind: str
    raw: BaseGeometry


def _read_feature(index: int, feature: object) -> _Candidate | FeatureProblem:
    if not isinstance(feature, Mapping):
        return FeatureProblem(
            index, None, f"This is not a GeoJSON Feature object; it is {_json_kind(feature)}."
        )
    if feature.get("type") != "Feature":
        return FeatureProblem(
            index,
            None,
            f"This is not a GeoJSON Feature (its type is {feature.get('type')!r}, not 'Feature').",
        )
    raw_props = feature.get("properties")
    props: Mapping[str, Any] = raw_props if isinstance(raw_props, Mapping) else {}
    area_id, name = _id_and_name(props, feature.get("id"))
    if area_id is None:
        fields = ", ".join(f for f, _ in ID_NAME_FIELDS)
        return FeatureProblem(
            index,
            None,
            f"The feature has no id: expected one of the properties {fields}, "
            "or a top-level feature id.",
        )
    try:
        kind, raw = _shape_of(feature.get("geometry"))
    except ValueError as exc:
        return FeatureProblem(index, area_id, _sentence(str(exc)))
    return _Candidate(index, area_id, name, kind, raw)


def _id_and_name(props: Mapping[str, Any], top_level_id: object) -> tuple[str | None, str]:
    names = [_text(props.get(name_field)) for _, name_field in ID_NAME_FIELDS]
    any_name = next((n for n in names if n), "")
    for (id_field, _), name in zip(ID_NAME_FIELDS, names, strict=True):
        area_id = _text(props.get(id_field))
        if area_id:
            return area_id, name or any_name
    return _text(top_level_id), any_name


def _text(value: object) -> str | None:
    # Codes are strings in CBS files, but hand-made files often use numbers; booleans and
    # objects are never ids.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value.strip() or None
    return None


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def _shape_of(obj: object) -> tuple[str, BaseGeometry]:
    """The GeoJSON type and the shapely geometry, when it is a well-formed (Multi)Polygon."""
    if obj is None:
        raise ValueError("there is no geometry (it is null)")
    if not isinstance(obj, Mapping):
        raise ValueError(f"the geometry is {_json_kind(obj)}, not a GeoJSON geometry object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ValueError(f"the geometry has no valid type (got {kind!r})")
    if kind not in _POLYGONAL_TYPES:
        what = f"a {kind}" if kind in _GEOMETRY_TYPES else f"of unknown type {kind!r}"
        raise ValueError(
            f"the geometry is {what}, not a Polygon or MultiPolygon; only areas can be used"
        )
    if not isinstance(obj.get("coordinates"), list):
        raise ValueError(f"the {kind} has no coordinates array")
    try:
        # NaN coordinates are reported by the checks; numpy's own warning is just noise.
        with np.errstate(invalid="ignore"):
            return kind, shape(obj)
    except (ValueError, TypeError, IndexError, KeyError, ShapelyError) as exc:
        # shapely's own words help when short ("A linearring requires at least 4
        # coordinates"); numpy's complaints about array shapes do not.
        detail = str(exc)
        detail = f" ({detail.rstrip('.')})" if len(detail) <= 80 else ""
        nesting = "rings" if kind == "Polygon" else "polygons of rings"
        raise ValueError(
            f"the {kind} coordinates are malformed{detail}: expected {nesting} of "
            "[longitude, latitude] positions"
        ) from exc


def _check_polygonal(
    kinds: Sequence[str], raw: Sequence[BaseGeometry]
) -> list[tuple[Polygonal | None, str | None]]:
    """Per geometry: the valid 2D shape and a repair note, or None and the reason it is unusable."""
    geoms = np.empty(len(raw), dtype=object)
    geoms[:] = raw
    with np.errstate(invalid="ignore"):
        # Z values carry nothing for areas on a map and would make WKB and overlay 3D.
        geoms = shapely.force_2d(geoms)
        empty = shapely.is_empty(geoms)
        bounds = shapely.bounds(geoms).reshape(len(raw), 4)
        finite = np.isfinite(bounds).all(axis=1)
        lon_lat = (
            (bounds[:, 0] >= -180)
            & (bounds[:, 2] <= 180)
            & (bounds[:, 1] >= -90)
            & (bounds[:, 3] <= 90)
        )
        valid = shapely.is_valid(geoms)
    out: list[tuple[Polygonal | None, str | None]] = []
    for i, kind in enumerate(kinds):
        if empty[i]:
            out.append((None, f"the {kind} is empty: it has no coordinates, so no area"))
        elif not finite[i]:
            out.append((None, f"the {kind} has coordinates that are not numbers (NaN or inf)"))
        elif not lon_lat[i]:
            min_x, min_y, max_x, max_y = bounds[i].tolist()
            out.append(
                (
                    None,
                    f"coordinates x {min_x:.6g}..{max_x:.6g}, y {min_y:.6g}..{max_y:.6g} lie "
                    "outside the longitude/latitude range, so they are not WGS84: the file "
                    "looks projected (e.g. RD New, EPSG:28992, in metres); convert it to WGS84 "
                    "(EPSG:4326) first",
                )
            )
        elif valid[i]:
            out.append((geoms[i], None))
        else:
            out.append(_repair(kind, geoms[i]))
    return out


def _repair(kind: str, geometry: BaseGeometry) -> tuple[Polygonal | None, str]:
    # shapely.bounds skips NaN, so a NaN coordinate surfaces here, as an invalid geometry.
    if not np.isfinite(shapely.get_coordinates(geometry)).all():
        return None, f"the {kind} has coordinates that are not numbers (NaN or inf)"
    why = shapely.is_valid_reason(geometry)
    repaired = _polygonal_part(shapely.make_valid(geometry))
    if repaired is None:
        return None, (
            f"the {kind} is invalid ({why}) and has no area left after repair "
            "(it collapses to lines or points)"
        )
    return repaired, (
        f"The {kind} was invalid ({why}) and was repaired; it was imported, but check its shape."
    )


def _polygonal_part(geometry: BaseGeometry) -> Polygonal | None:
    # make_valid keeps every dimension it can: a bow-tie becomes a MultiPolygon, a polygon
    # with a spike becomes a GeometryCollection of a polygon and a line. Only the area counts.
    if geometry.is_empty:
        return None
    if geometry.geom_type in _POLYGONAL_TYPES:
        return geometry
    if geometry.geom_type != "GeometryCollection":
        return None
    polygons: list[Polygon] = []
    for part in shapely.get_parts(geometry):
        if part.geom_type == "Polygon":
            polygons.append(part)
        elif part.geom_type == "MultiPolygon":
            polygons.extend(shapely.get_parts(part))
    polygons = [p for p in polygons if not p.is_empty]
    if not polygons:
        return None
    if len(polygons) == 1:
        return polygons[0]
    merged = MultiPolygon(polygons)
    if not merged.is_valid:
        # Parts of a collection may overlap; a union makes them one valid area again.
        merged = _polygonal_part(shapely.union_all(polygons))
    return merged


# --- adjacency -------------------------------------------------------------------------------


def compute_adjacency(features: Sequence[AreaFeature]) -> dict[str, set[str]]:
    """Neighbours of every area: those sharing a border of non-zero length (not just a corner)."""
    # Overlapping areas count as neighbours as well; nested areas whose borders never meet
    # (a buurt well inside a wijk imported alongside it) do not.
    adjacency: dict[str, set[str]] = {f.id: set() for f in features}
    if len(features) < 2:
        return adjacency
    geoms = np.array([f.geometry for f in features], dtype=object)
    left, right = _shared_border_pairs(geoms)
    ids = [f.id for f in features]
    for i, j in zip(left.tolist(), right.tolist(), strict=True):
        a, b = ids[i], ids[j]
        if a != b:  # the same id twice in the input is one area, not its own neighbour
            adjacency[a].add(b)
            adjacency[b].add(a)
    return adjacency


def _shared_border_pairs(
    geoms: npt.NDArray[np.object_],
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    # Borders written by different arithmetic (5.75 + 0.01 + 0.01 + 0.01 versus 5.78) differ
    # in the last bit and would neither intersect nor share a length; on a ~0.1 mm grid they
    # coincide.
    # Only the copies used for this test are rounded, never the stored shapes.
    boundaries = shapely.transform(
        shapely.boundary(geoms), lambda xy: np.round(xy, _ADJACENCY_DECIMALS)
    )
    # The tree query is cheap and finds every candidate, including pairs that only meet at a
    # corner; the exact test then runs once per candidate pair, vectorised.
    tree = shapely.STRtree(boundaries)
    left, right = tree.query(boundaries, predicate="intersects")
    once = left < right
    left, right = left[once], right[once]
    if left.size == 0:
        return left, right
    shared = shapely.length(shapely.intersection(boundaries[left], boundaries[right])) > 0
    # Areas that overlap (real files have slivers, and repaired bow-ties overlap their
    # neighbours) are neighbours too, whatever floating-point noise makes of their borders.
    rest = np.flatnonzero(~shared)
    shared[rest] = shapely.relate_pattern(geoms[left[rest]], geoms[right[rest]], "2********")
    return left[shared], right[shared]


# --- point lookup ----------------------------------------------------------------------------


#: Metres per degree of latitude (and of longitude at the equator), WGS84 mean.
_M_PER_DEG_LAT = 111_320.0


class AreaIndex:
    """Areas in an STRtree, to find which of them cover a point."""

    __slots__ = ("_geoms", "_ids", "_tree")

    def __init__(self, ids: Sequence[str], geoms: npt.NDArray[np.object_]) -> None:
        if len(ids) != len(geoms):
            raise ValueError(f"{len(ids)} ids but {len(geoms)} geometries")
        self._ids: tuple[str, ...] = tuple(ids)
        self._geoms = geoms
        self._tree = shapely.STRtree(geoms)

    @classmethod
    def build(cls, items: Iterable[tuple[str, BaseGeometry]]) -> AreaIndex:
        """An index over (id, geometry) pairs; results come back in this order."""
        pairs = list(items)
        geoms = np.empty(len(pairs), dtype=object)
        geoms[:] = [geometry for _, geometry in pairs]
        return cls([area_id for area_id, _ in pairs], geoms)

    @property
    def ids(self) -> tuple[str, ...]:
        """Area ids in build order."""
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def lookup(self, lon: float, lat: float) -> list[str]:
        """Ids of the areas covering the point; a point on a shared border is in both."""
        # "intersects" with a point is "covers" seen from the area, border included; an
        # alert on the street between two buurten must reach both.
        hits = self._tree.query(Point(lon, lat), predicate="intersects").tolist()
        if len(hits) > 1:
            hits.sort()  # tree order is arbitrary; build order keeps results deterministic
        return [self._ids[i] for i in hits]

    def near(self, lon: float, lat: float, metres: float) -> list[str]:
        """Ids of the areas within `metres` of the point (those covering it included)."""
        if metres <= 0 or not self._ids:
            return self.lookup(lon, lat)
        cos_lat = max(0.01, math.cos(math.radians(lat)))
        # A degree of longitude is the shorter one away from the equator: searching with it
        # over-selects, and the exact metric check below trims the candidates.
        search_deg = metres / (_M_PER_DEG_LAT * cos_lat)
        point = Point(lon, lat)
        hits = self._tree.query(point, predicate="dwithin", distance=search_deg)
        if hits.size == 0:
            return []
        lines = shapely.shortest_line(self._geoms[hits], point)
        coords = shapely.get_coordinates(lines).reshape(-1, 2, 2)
        dx = (coords[:, 0, 0] - lon) * _M_PER_DEG_LAT * cos_lat
        dy = (coords[:, 0, 1] - lat) * _M_PER_DEG_LAT
        close = np.hypot(dx, dy) <= metres
        return [self._ids[i] for i in sorted(hits[close].tolist())]

    def overlapping(self, geometry: BaseGeometry) -> list[str]:
        """Ids of the areas sharing some surface with geometry; a touching border is not enough."""
        hits = self._tree.query(geometry, predicate="intersects")
        if hits.size == 0:
            return []
        # A notice drawn exactly along a buurt border does not concern the buurt beyond it.
        touching = shapely.touches(self._geoms[hits], geometry)
        return [self._ids[i] for i in sorted(hits[~touching].tolist())]

    def lookup_many(
        self, lons: Sequence[float] | npt.ArrayLike, lats: Sequence[float] | npt.ArrayLike
    ) -> list[list[str]]:
        """For each point, the ids of the areas covering it (one vectorised tree query)."""
        lon_arr = np.asarray(lons, dtype=float)
        lat_arr = np.asarray(lats, dtype=float)
        if lon_arr.shape != lat_arr.shape or lon_arr.ndim != 1:
            raise ValueError(
                f"lons and lats must be flat and equally long, got {lon_arr.shape} "
                f"and {lat_arr.shape}"
            )
        out: list[list[str]] = [[] for _ in range(lon_arr.size)]
        if lon_arr.size == 0 or not self._ids:
            return out
        points, areas = self._tree.query(shapely.points(lon_arr, lat_arr), predicate="intersects")
        # Sort by (point, area) so every point's areas come back in build order, like lookup().
        order = np.lexsort((areas, points))
        ids = self._ids
        for p, a in zip(points[order].tolist(), areas[order].tolist(), strict=True):
            out[p].append(ids[a])
        return out
