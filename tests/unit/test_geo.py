"""shared.geo: GeoJSON parsing, shared-border adjacency, point lookup."""

from __future__ import annotations

import math
from typing import Any

import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Point, box

from shared.geo import (
    AreaFeature,
    AreaIndex,
    GeoJSONError,
    compute_adjacency,
    from_wkb_hex,
    geometry_from_geojson,
    parse_feature_collection,
    to_wkb_hex,
)

pytestmark = pytest.mark.unit

SQUARE = [[[5.0, 52.0], [5.1, 52.0], [5.1, 52.1], [5.0, 52.1], [5.0, 52.0]]]
#: Self-intersecting "bow-tie": valid GeoJSON syntax, invalid polygon.
BOWTIE = [[[5.0, 52.0], [5.1, 52.1], [5.1, 52.0], [5.0, 52.1], [5.0, 52.0]]]
#: The same square in RD New (EPSG:28992) metres, roughly around Utrecht.
RD_SQUARE = [
    [[136000, 455000], [137000, 455000], [137000, 456000], [136000, 456000], [136000, 455000]]
]


def polygon(coords: list[Any] = SQUARE) -> dict[str, Any]:
    """A GeoJSON Polygon."""
    return {"type": "Polygon", "coordinates": coords}


def feature(
    props: dict[str, Any] | None, geometry: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """A GeoJSON Feature (a square unless told)."""
    return {"type": "Feature", "properties": props, "geometry": geometry or polygon(), **extra}


def collection(*features: dict[str, Any]) -> dict[str, Any]:
    """A GeoJSON FeatureCollection."""
    return {"type": "FeatureCollection", "features": list(features)}


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("props", "extra", "want_id", "want_name"),
    [
        pytest.param({"id": "A1", "name": "Centrum"}, {}, "A1", "Centrum", id="own-id-name"),
        pytest.param({"id": 42}, {}, "42", "42", id="numeric-id-name-falls-back"),
        pytest.param(
            {
                "BU_CODE": "BU09710001",
                "BU_NAAM": "Stein-Centrum",
                "WK_CODE": "WK097100",
                "WK_NAAM": "Stein",
                "GM_CODE": "GM0971",
                "GM_NAAM": "Stein",
            },
            {},
            "BU09710001",
            "Stein-Centrum",
            id="cbs-buurt-wins-over-wijk-and-gemeente",
        ),
        pytest.param(
            {"WK_CODE": "WK164001", "WK_NAAM": "Heythuysen", "GM_CODE": "GM1640"},
            {},
            "WK164001",
            "Heythuysen",
            id="cbs-wijk",
        ),
        pytest.param(
            {"GM_CODE": "GM0770", "GM_NAAM": "Eersel"}, {}, "GM0770", "Eersel", id="cbs-gemeente"
        ),
        pytest.param(
            {"statcode": "GM1640", "statnaam": "Leudal"}, {}, "GM1640", "Leudal", id="cbs-statcode"
        ),
        pytest.param(
            {"buurtcode": "BU07700000", "buurtnaam": "Eersel-Centrum"},
            {},
            "BU07700000",
            "Eersel-Centrum",
            id="cbs-lowercase",
        ),
        pytest.param({"naam": "x"}, {"id": "top-1"}, "top-1", "top-1", id="top-level-id"),
        pytest.param(None, {"id": "top-2"}, "top-2", "top-2", id="null-properties"),
        pytest.param({"id": "  B7 ", "name": ""}, {}, "B7", "B7", id="stripped-empty-name"),
    ],
)
def test_id_and_name(
    props: dict[str, Any] | None, extra: dict[str, Any], want_id: str, want_name: str
) -> None:
    features, problems = parse_feature_collection(collection(feature(props, **extra)))
    assert problems == []
    assert [(f.id, f.name) for f in features] == [(want_id, want_name)]
    assert features[0].geometry.equals(box(5.0, 52.0, 5.1, 52.1))


@pytest.mark.parametrize(
    ("bad", "reason_words"),
    [
        pytest.param(feature({"id": "X"}, polygon([])), ["empty"], id="empty-polygon"),
        pytest.param(
            feature({"id": "X"}, {"type": "MultiPolygon", "coordinates": []}),
            ["empty"],
            id="empty-multipolygon",
        ),
        pytest.param(
            feature({"id": "X"}, {"type": "Point", "coordinates": [5.0, 52.0]}),
            ["Point", "not a Polygon"],
            id="point",
        ),
        pytest.param(
            feature({"id": "X"}, {"type": "LineString", "coordinates": [[5, 52], [5.1, 52]]}),
            ["LineString"],
            id="linestring",
        ),
        pytest.param(
            {"type": "Feature", "properties": {"id": "X"}, "geometry": None},
            ["no geometry"],
            id="null-geometry",
        ),
        pytest.param(
            feature({"id": "X"}, polygon(RD_SQUARE)),
            ["WGS84", "RD New", "136000"],
            id="rd-new-metres",
        ),
        pytest.param(feature({"name": "no id here"}), ["no id", "BU_CODE"], id="missing-id"),
        pytest.param(
            feature({"id": "X"}, {"type": "Polygon"}), ["no coordinates"], id="no-coordinates"
        ),
        pytest.param(
            feature({"id": "X"}, polygon([[[5, 52], [5.1]]])),
            ["malformed"],
            id="ragged-coordinates",
        ),
        pytest.param(
            feature({"id": "X"}, polygon([[[5, 52], [5.1, math.nan], [5, 53], [5, 52]]])),
            ["not numbers"],
            id="nan-coordinate",
        ),
        pytest.param(
            feature({"id": "X"}, polygon([[[5, 52], [5.1, 52], [5, 52]]])),
            ["invalid", "no area"],
            id="collapses-to-line",
        ),
        pytest.param(
            {"type": "Polygon", "coordinates": SQUARE},
            ["not a GeoJSON Feature"],
            id="geometry-instead-of-feature",
        ),
        pytest.param(["not", "a", "feature"], ["not a GeoJSON Feature"], id="array"),
    ],
)
def test_bad_feature_is_reported_not_raised(bad: Any, reason_words: list[str]) -> None:
    good = feature({"id": "OK"})
    features, problems = parse_feature_collection(collection(good, bad))
    assert [f.id for f in features] == ["OK"]
    assert len(problems) == 1
    problem = problems[0]
    assert problem.index == 1
    assert problem.skipped
    for word in reason_words:
        assert word in problem.reason
    # A sentence for a person: capitalised and ended.
    assert problem.reason[0].isupper()
    assert problem.reason.endswith(".")


def test_declared_crs_is_named_in_the_reason() -> None:
    doc = collection(feature({"id": "X"}, polygon(RD_SQUARE)))
    doc["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::28992"}}
    _, [problem] = parse_feature_collection(doc)
    assert "EPSG::28992" in problem.reason


def test_bowtie_is_repaired_and_reported() -> None:
    features, problems = parse_feature_collection(
        collection(feature({"id": "BT"}, polygon(BOWTIE)))
    )
    [area] = features
    assert area.geometry.is_valid
    assert area.geometry.geom_type == "MultiPolygon"
    # make_valid keeps both triangles of the bow-tie: half the bounding square.
    assert area.geometry.area == pytest.approx(0.1 * 0.1 / 2)
    [problem] = problems
    assert (problem.index, problem.feature_id, problem.skipped) == (0, "BT", False)
    assert "repaired" in problem.reason
    assert "Self-intersection" in problem.reason


def test_z_coordinates_are_dropped() -> None:
    coords = [[[x, y, 7.0] for x, y in SQUARE[0]]]
    [area], _ = parse_feature_collection(collection(feature({"id": "Z"}, polygon(coords))))
    assert not area.geometry.has_z


def test_duplicate_ids_last_wins() -> None:
    first = feature({"id": "D", "name": "first"})
    second = feature({"id": "D", "name": "second"})
    features, problems = parse_feature_collection(collection(first, feature({"id": "E"}), second))
    assert [(f.id, f.name) for f in features] == [("E", "E"), ("D", "second")]
    [problem] = problems
    assert (problem.index, problem.feature_id) == (0, "D")
    assert "feature 2" in problem.reason
    assert "last one wins" in problem.reason


def test_duplicate_of_a_repaired_feature_reports_only_the_skip() -> None:
    first = feature({"id": "D"}, polygon(BOWTIE))
    features, problems = parse_feature_collection(collection(first, feature({"id": "D"})))
    assert features[0].geometry.equals(box(5.0, 52.0, 5.1, 52.1))
    assert [(p.index, p.skipped) for p in problems] == [(0, True)]
    assert "last one wins" in problems[0].reason


def test_progress_counts_every_feature() -> None:
    seen: list[int] = []
    doc = collection(*[feature({"id": f"A{i}"}) for i in range(1234)])
    parse_feature_collection(doc, progress=seen.append)
    assert sum(seen) == 1234
    assert len(seen) > 1


@pytest.mark.parametrize(
    ("doc", "message_words"),
    [
        pytest.param([], ["FeatureCollection", "array"], id="array"),
        pytest.param("hello", ["FeatureCollection", "string"], id="string"),
        pytest.param(None, ["FeatureCollection", "null"], id="null"),
        pytest.param(
            {"type": "Feature", "geometry": polygon()},
            ["single Feature", "wrap"],
            id="single-feature",
        ),
        pytest.param(polygon(), ["single Polygon"], id="bare-geometry"),
        pytest.param({"type": "Topology", "objects": {}}, ["TopoJSON"], id="topojson"),
        pytest.param({"type": "FeatureCollection"}, ['"features"'], id="no-features"),
        pytest.param(
            {"type": "FeatureCollection", "features": {}}, ['"features"'], id="features-not-a-list"
        ),
        pytest.param({"features": []}, ['no "type"'], id="no-type"),
        pytest.param({"type": ["x"]}, ["type"], id="odd-type"),
    ],
)
def test_not_a_feature_collection(doc: object, message_words: list[str]) -> None:
    with pytest.raises(GeoJSONError) as info:
        parse_feature_collection(doc)
    assert isinstance(info.value, ValueError)
    for word in message_words:
        assert word in str(info.value)


def test_empty_collection() -> None:
    assert parse_feature_collection(collection()) == ([], [])


# --- geometry helpers ------------------------------------------------------------------------


def test_geometry_from_geojson_accepts_polygonal_and_repairs() -> None:
    assert geometry_from_geojson(polygon()).equals(box(5.0, 52.0, 5.1, 52.1))
    assert geometry_from_geojson(feature({"id": "F"})).geom_type == "Polygon"
    assert geometry_from_geojson(polygon(BOWTIE)).is_valid
    multi = {"type": "MultiPolygon", "coordinates": [SQUARE]}
    assert geometry_from_geojson(multi).geom_type == "MultiPolygon"


@pytest.mark.parametrize(
    ("obj", "words"),
    [
        pytest.param({"type": "Point", "coordinates": [5, 52]}, ["Point"], id="point"),
        pytest.param(polygon(RD_SQUARE), ["WGS84"], id="rd"),
        pytest.param(polygon([]), ["empty"], id="empty"),
        pytest.param(None, ["no geometry"], id="none"),
        pytest.param("POLYGON((0 0, 1 0, 1 1, 0 0))", ["string"], id="wkt-string"),
        pytest.param({"type": "Circle", "coordinates": [5, 52]}, ["unknown type"], id="circle"),
    ],
)
def test_geometry_from_geojson_rejects(obj: object, words: list[str]) -> None:
    with pytest.raises(ValueError, match=words[0]) as info:
        geometry_from_geojson(obj)
    for word in words:
        assert word in str(info.value)


def test_wkb_hex_round_trip() -> None:
    geometry = geometry_from_geojson(polygon(BOWTIE))
    text = to_wkb_hex(geometry)
    assert isinstance(text, str)
    assert shapely.equals_exact(from_wkb_hex(text), geometry, tolerance=0)


@pytest.mark.parametrize("bad", ["", "zz", "0101"])
def test_from_wkb_hex_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError, match="WKB"):
        from_wkb_hex(bad)


# --- adjacency -------------------------------------------------------------------------------


def area(area_id: str, x: float, y: float, size: float = 1.0) -> AreaFeature:
    """A square area with its lower-left corner at (x, y)."""
    return AreaFeature(area_id, area_id, box(x, y, x + size, y + size))


@pytest.mark.parametrize(
    ("areas", "want"),
    [
        pytest.param(
            [area("A", 0, 0), area("B", 1, 0)], {"A": {"B"}, "B": {"A"}}, id="shared-edge"
        ),
        pytest.param(
            [area("A", 0, 0), area("B", 1, 1)], {"A": set(), "B": set()}, id="corner-only"
        ),
        pytest.param([area("A", 0, 0), area("B", 3, 0)], {"A": set(), "B": set()}, id="apart"),
        pytest.param(
            [area("A", 0, 0), area("B", 1, 0.5)], {"A": {"B"}, "B": {"A"}}, id="partial-edge"
        ),
        pytest.param([area("A", 0, 0)], {"A": set()}, id="alone"),
        pytest.param([], {}, id="none"),
        pytest.param(
            [area("A", 0, 0), area("B", 1, 0), area("C", 0, 1), area("D", 1, 1)],
            {"A": {"B", "C"}, "B": {"A", "D"}, "C": {"A", "D"}, "D": {"B", "C"}},
            id="2x2-grid-diagonals-not-adjacent",
        ),
        pytest.param([area("A", 0, 0), area("A", 1, 0)], {"A": set()}, id="same-id-twice"),
    ],
)
def test_adjacency(areas: list[AreaFeature], want: dict[str, set[str]]) -> None:
    got = compute_adjacency(areas)
    assert got == want
    for a, neighbours in got.items():
        assert a not in neighbours
        for b in neighbours:
            assert a in got[b]


def test_adjacency_edge_cases() -> None:
    # The same border computed two ways differs in the last bit; it is still one border.
    x = 5.75 + 0.01 + 0.01 + 0.01
    assert x != 5.78
    noisy = [
        AreaFeature("W", "W", box(5.75, 51.0, x, 51.01)),
        AreaFeature("E", "E", box(5.78, 51.0, 5.79, 51.01)),
    ]
    assert compute_adjacency(noisy) == {"W": {"E"}, "E": {"W"}}
    # Overlapping areas share more than a border: neighbours.
    assert compute_adjacency([area("A", 0, 0), area("B", 0.5, 0.5)]) == {
        "A": {"B"},
        "B": {"A"},
    }
    # An enclave shares the border of the hole it fills.
    ring = AreaFeature("R", "R", box(0, 0, 3, 3).difference(box(1, 1, 2, 2)))
    assert compute_adjacency([ring, area("I", 1, 1)]) == {"R": {"I"}, "I": {"R"}}
    # Nested without touching (a buurt well inside a wijk): no shared border.
    assert compute_adjacency([area("W", 0, 0, size=3), area("B", 1, 1)]) == {
        "W": set(),
        "B": set(),
    }


def test_adjacency_of_multipolygon_part() -> None:
    two_parts = AreaFeature("M", "M", shapely.MultiPolygon([box(0, 0, 1, 1), box(5, 0, 6, 1)]))
    got = compute_adjacency([two_parts, area("B", 6, 0), area("C", 2, 0)])
    assert got == {"M": {"B"}, "B": {"M"}, "C": set()}


# --- point lookup ----------------------------------------------------------------------------

GRID = 4
CELL = 0.25
#: A 4x4 grid of squares near Stein, plus one odd triangle overlapping four cells.
GRID_ITEMS: list[tuple[str, Any]] = [
    (
        f"C{i}{j}",
        box(5.75 + i * CELL, 50.9 + j * CELL, 5.75 + (i + 1) * CELL, 50.9 + (j + 1) * CELL),
    )
    for i in range(GRID)
    for j in range(GRID)
] + [("TRI", shapely.Polygon([(5.8, 50.95), (6.2, 51.0), (5.9, 51.4)]))]
INDEX = AreaIndex.build(GRID_ITEMS)

#: Points on grid lines and corners as well as anywhere: the borders are where it matters.
on_lines = st.sampled_from([5.75 + k * CELL for k in range(GRID + 1)])
lons = st.one_of(st.floats(5.6, 6.9), on_lines)
lats = st.one_of(st.floats(50.8, 52.0), st.sampled_from([50.9 + k * CELL for k in range(GRID + 1)]))


def covering(lon: float, lat: float) -> list[str]:
    """Shapely's own answer: ids whose area covers the point, in build order."""
    point = Point(lon, lat)
    return [area_id for area_id, geom in GRID_ITEMS if geom.covers(point)]


@settings(max_examples=300, deadline=None)
@given(lon=lons, lat=lats)
def test_lookup_matches_covers(lon: float, lat: float) -> None:
    assert INDEX.lookup(lon, lat) == covering(lon, lat)


@settings(max_examples=60, deadline=None)
@given(points=st.lists(st.tuples(lons, lats), max_size=40))
def test_lookup_many_matches_lookup(points: list[tuple[float, float]]) -> None:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    assert INDEX.lookup_many(xs, ys) == [covering(x, y) for x, y in points]


def test_point_on_shared_border_lands_in_both() -> None:
    x_border = 5.75 + 3 * CELL  # between columns 2 and 3, clear of the triangle
    assert INDEX.lookup(x_border, 50.9 + 0.1) == ["C20", "C30"]
    # The shared corner of four cells is in all four.
    assert INDEX.lookup(x_border, 50.9 + 3 * CELL) == ["C22", "C23", "C32", "C33"]
    assert INDEX.lookup_many([x_border], [50.9 + 3 * CELL]) == [["C22", "C23", "C32", "C33"]]


def test_lookup_outside_and_empty_index() -> None:
    assert INDEX.lookup(0.0, 0.0) == []
    assert len(INDEX) == GRID * GRID + 1
    empty = AreaIndex.build([])
    assert len(empty) == 0
    assert empty.lookup(5.8, 51.0) == []
    assert empty.lookup_many([5.8], [51.0]) == [[]]
    assert INDEX.lookup_many([], []) == []


def test_lookup_many_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="equally long"):
        INDEX.lookup_many([1.0, 2.0], [1.0])
