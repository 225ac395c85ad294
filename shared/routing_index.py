"""The routing index: areas and group shapes in STRtrees, the area -> groups map, adjacency.

Shared because both the router (where an alert goes) and the edge (whether a report's place is
covered at all, to answer the reporter) need it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.geo import AreaIndex, from_wkb_hex
from shared.registry import StoredArea, StoredGroup
from shared.schemas import Relation, RouteTarget


@dataclass(frozen=True)
class RoutingIndex:
    """Areas and group polygons in STRtrees, plus the area -> groups map."""

    areas: AreaIndex
    group_shapes: AreaIndex
    groups_by_area: dict[str, tuple[str, ...]] = field(default_factory=dict)
    adjacency: dict[str, tuple[str, ...]] = field(default_factory=dict)
    version: int = 0

    @classmethod
    def build(
        cls, areas: Sequence[StoredArea], groups: Sequence[StoredGroup], version: int = 0
    ) -> RoutingIndex:
        """Build the index from registry rows."""
        area_items = [(a.id, from_wkb_hex(a.wkb_hex)) for a in areas if a.wkb_hex]
        shape_items = [(g.id, from_wkb_hex(g.wkb_hex)) for g in groups if g.wkb_hex]
        by_area: defaultdict[str, list[str]] = defaultdict(list)
        for group in groups:
            for area_id in group.area_ids:
                by_area[area_id].append(group.id)
        return cls(
            areas=AreaIndex.build(area_items),
            group_shapes=AreaIndex.build(shape_items),
            groups_by_area={k: tuple(sorted(v)) for k, v in by_area.items()},
            adjacency={a.id: a.adjacent for a in areas},
            version=version,
        )

    def match(self, lon: float, lat: float) -> tuple[list[str], list[str]]:
        """Areas containing the point, and the groups (by area or own polygon) covering it."""
        area_ids = sorted(self.areas.lookup(lon, lat))
        group_ids = set(self.group_shapes.lookup(lon, lat))
        for area_id in area_ids:
            group_ids.update(self.groups_by_area.get(area_id, ()))
        return area_ids, sorted(group_ids)

    def reach(
        self, lon: float, lat: float, near_m: float
    ) -> tuple[list[str], list[RouteTarget]]:
        """Areas containing the point, and groups told "in your area" or "next to it".

        A report within `near_m` of a neighbouring area also reaches that area's groups, as
        adjacent: what happens at the edge of one buurt is seen from the next.
        """
        area_ids, inside = self.match(lon, lat)
        relation: dict[str, Relation] = dict.fromkeys(inside, "in_area")
        if near_m > 0:
            for area_id in self.areas.near(lon, lat, near_m):
                for group_id in self.groups_by_area.get(area_id, ()):
                    relation.setdefault(group_id, "adjacent")
            for group_id in self.group_shapes.near(lon, lat, near_m):
                relation.setdefault(group_id, "adjacent")
        targets = [RouteTarget(group_id=g, relation=r) for g, r in sorted(relation.items())]
        return area_ids, targets
