"""Pure routing: which areas contain a point, and which groups cover those areas."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.geo import AreaIndex, from_wkb_hex
from shared.registry import StoredArea, StoredGroup
from shared.schemas import AlertReceived, AlertRouted, RouteTarget, utcnow


@dataclass(frozen=True)
class RoutingIndex:
    """Areas and group polygons in STRtrees, plus the area -> groups map."""

    areas: AreaIndex
    group_shapes: AreaIndex
    groups_by_area: dict[str, tuple[str, ...]] = field(default_factory=dict)
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
            version=version,
        )

    def match(self, lon: float, lat: float) -> tuple[list[str], list[str]]:
        """Areas containing the point, and the groups (by area or own polygon) covering it."""
        area_ids = sorted(self.areas.lookup(lon, lat))
        group_ids = set(self.group_shapes.lookup(lon, lat))
        for area_id in area_ids:
            group_ids.update(self.groups_by_area.get(area_id, ()))
        return area_ids, sorted(group_ids)


def route_alert(alert: AlertReceived, index: RoutingIndex) -> AlertRouted:
    """Decide the areas and groups of one alert (no location: no targets)."""
    if alert.location is None:
        return AlertRouted(alert=alert, routed_at=utcnow())
    area_ids, group_ids = index.match(alert.location.lon, alert.location.lat)
    return AlertRouted(
        alert=alert,
        area_ids=area_ids,
        targets=[RouteTarget(group_id=g, relation="in_area") for g in group_ids],
        routed_at=utcnow(),
    )
