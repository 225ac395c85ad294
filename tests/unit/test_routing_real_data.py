"""Routing on the real CBS buurten of 2014: reports and notices reach the right groups.

The data lives beside the repository (../shared/data/, see PROVENANCE.md) and is never copied
into it; these tests skip with that reason when it is absent. Parsed once per module.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from services.router.matching import notice_reach, rings
from shared.geo import compute_adjacency, parse_feature_collection, to_wkb_hex
from shared.notices import Circle, Notice, NoticeArea
from shared.registry import StoredArea, StoredGroup
from shared.routing_index import RoutingIndex

pytestmark = pytest.mark.unit

BUURTEN = Path(__file__).resolve().parents[3] / "shared" / "data" / "nl_buurten_2014.geojson"
GEMEENTEN = {"Stein": "0971", "Leudal": "1640", "Eersel": "0770"}


@pytest.fixture(scope="module")
def nl() -> RoutingIndex:
    """Every buurt with one group of its own ("g-<buurt code>")."""
    if not BUURTEN.is_file():
        pytest.skip(f"real buurt data not found at {BUURTEN} (kept beside the repository in "
                    "../shared/data/, never copied into it)")
    features, _problems = parse_feature_collection(json.loads(BUURTEN.read_bytes()))
    adjacency = compute_adjacency(features)
    areas = [StoredArea(f.id, f.name, to_wkb_hex(f.geometry), tuple(sorted(adjacency[f.id])))
             for f in features]
    groups = [StoredGroup(f"g-{f.id}", f.name, (f.id,), "", 18) for f in features]
    return RoutingIndex.build(areas, groups, version=1)


def missing_person_at(lat: float, lon: float, radius_m: float = 30) -> Notice:
    # No adjacent_rings given: a missing person reaches one ring of neighbours by default.
    return Notice.model_validate({
        "notice_id": "n1", "sender": "politie", "sent": datetime.now(UTC),
        "category": "missing_person", "headline": "Vermist", "raw_format": "json",
        "areas": [NoticeArea(circle=Circle(lat=lat, lon=lon, radius_m=radius_m))]})


def buurten_of(index: RoutingIndex, gemeente: str) -> list[str]:
    return sorted(a for a in index.adjacency if a.startswith(f"BU{gemeente}"))


def geometry(index: RoutingIndex, area_id: str) -> shapely.Geometry:
    return index.areas._geoms[index.areas.ids.index(area_id)]


@pytest.mark.parametrize("gemeente", list(GEMEENTEN.values()))
def test_missing_person_reaches_exactly_the_buurt_and_its_neighbours(
    nl: RoutingIndex, gemeente: str
) -> None:
    checked = 0
    for buurt in buurten_of(nl, gemeente):
        shape = geometry(nl, buurt)
        inner = shape.buffer(-0.001)  # about 70-110 m inside, clear of every border
        if inner.is_empty:
            continue
        point = inner.representative_point()
        reach = notice_reach(missing_person_at(point.y, point.x), nl)
        assert reach.area_ids == [buurt]
        expected = {f"g-{buurt}": "in_area"} | {f"g-{n}": "adjacent" for n in nl.adjacency[buurt]}
        assert {t.group_id: t.relation for t in reach.targets} == expected
        checked += 1
    assert checked >= 5, f"too few buurten of GM{gemeente} were large enough to test"


@pytest.mark.parametrize("gemeente", list(GEMEENTEN.values()))
def test_a_report_deep_inside_a_buurt_reaches_only_its_group(
    nl: RoutingIndex, gemeente: str
) -> None:
    for buurt in buurten_of(nl, gemeente):
        inner = geometry(nl, buurt).buffer(-0.004)  # roughly 280-440 m from every border
        if inner.is_empty:
            continue
        point = inner.representative_point()
        areas, targets = nl.reach(point.x, point.y, 150)
        assert areas == [buurt]
        assert [(t.group_id, t.relation) for t in targets] == [(f"g-{buurt}", "in_area")]


def test_a_report_near_a_border_also_reaches_the_neighbour_as_adjacent(nl: RoutingIndex) -> None:
    rng = random.Random(971)
    tried = 0
    for buurt in buurten_of(nl, GEMEENTEN["Stein"]):
        shape = geometry(nl, buurt)
        for neighbour in nl.adjacency[buurt]:
            border = shape.boundary.intersection(geometry(nl, neighbour).boundary)
            if border.length == 0:
                continue
            on_border = border.interpolate(rng.random(), normalized=True)
            # Step about 40 m from the shared border into this buurt.
            towards = shapely.Point(shape.representative_point())
            step = 0.0004 / max(1e-9, on_border.distance(towards))
            point = shapely.Point(on_border.x + (towards.x - on_border.x) * step,
                                  on_border.y + (towards.y - on_border.y) * step)
            if not shape.contains(point) or geometry(nl, neighbour).covers(point):
                continue
            _areas, targets = nl.reach(point.x, point.y, 150)
            relations = {t.group_id: t.relation for t in targets}
            assert relations[f"g-{buurt}"] == "in_area"
            assert relations[f"g-{neighbour}"] == "adjacent"
            tried += 1
    assert tried >= 10


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=1, max_value=3))
def test_ring_k_contains_ring_k_minus_1(nl: RoutingIndex, pick: int, k: int) -> None:
    ids = sorted(nl.adjacency)
    core = {ids[pick % len(ids)]}
    outer = rings(core, nl.adjacency, k)
    inner = rings(core, nl.adjacency, k - 1)
    reach_k = set().union(core, *outer)
    reach_k_1 = set().union(core, *inner)
    assert reach_k_1 <= reach_k
    for ring in outer:  # rings are disjoint, and each is adjacent to what it surrounds
        assert not ring & core
    for before, ring in zip([core, *outer], outer, strict=False):
        assert all(any(n in before for n in nl.adjacency[a]) for a in ring)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=5.6, max_value=5.9), st.floats(min_value=50.9, max_value=51.3))
def test_point_matching_agrees_with_shapely(nl: RoutingIndex, lon: float, lat: float) -> None:
    hits = shapely.intersects(nl.areas._geoms, shapely.Point(lon, lat))  # brute force, all areas
    expected = sorted(a for a, hit in zip(nl.areas.ids, hits, strict=True) if hit)
    assert sorted(nl.areas.lookup(lon, lat)) == expected
