"""The neighbour rule on exact shapes: a report near a border also reaches the next area."""

from __future__ import annotations

import pytest
from shapely.geometry import box

from shared.geo import to_wkb_hex
from shared.registry import StoredArea, StoredGroup
from shared.routing_index import RoutingIndex

pytestmark = pytest.mark.unit

LAT = 51.0
M_PER_DEG_LON = 111_320 * 0.6293203910498375  # cos(51°)


def index() -> RoutingIndex:
    west = box(5.0, 50.99, 5.01, 51.01)
    east = box(5.01, 50.99, 5.02, 51.01)
    return RoutingIndex.build(
        [StoredArea("W", "West", to_wkb_hex(west), ("E",)),
         StoredArea("E", "Oost", to_wkb_hex(east), ("W",))],
        [StoredGroup("gw", "West", ("W",), "", 18), StoredGroup("ge", "Oost", ("E",), "", 18)],
    )


@pytest.mark.parametrize(
    ("metres_from_border", "near_m", "expected"),
    [(100, 150, {"gw": "in_area", "ge": "adjacent"}),
     (140, 150, {"gw": "in_area", "ge": "adjacent"}),
     (160, 150, {"gw": "in_area"}),
     (400, 150, {"gw": "in_area"}),
     (100, 0, {"gw": "in_area"}),
     (100, 50, {"gw": "in_area"})],
)
def test_distance_to_the_neighbour_decides(
    metres_from_border: float, near_m: float, expected: dict[str, str]
) -> None:
    lon = 5.01 - metres_from_border / M_PER_DEG_LON
    areas, targets = index().reach(lon, LAT, near_m)
    assert areas == ["W"]
    assert {t.group_id: t.relation for t in targets} == expected


def test_on_the_border_both_are_in_area() -> None:
    _areas, targets = index().reach(5.01, LAT, 150)
    assert {t.group_id: t.relation for t in targets} == {"gw": "in_area", "ge": "in_area"}
