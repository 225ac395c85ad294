"""Pure routing: which areas contain a point, and which groups cover those areas."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from shared.geo import AreaIndex, from_wkb_hex
from shared.notices import Notice, area_codes, area_geometries
from shared.registry import StoredArea, StoredGroup
from shared.schemas import AlertReceived, AlertRouted, Relation, RouteTarget, utcnow


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


def route_alert(alert: AlertReceived, index: RoutingIndex, near_m: float = 0.0) -> AlertRouted:
    """Decide the areas and groups of one alert (no location: no targets)."""
    if alert.location is None:
        return AlertRouted(alert=alert, routed_at=utcnow())
    area_ids, targets = index.reach(alert.location.lon, alert.location.lat, near_m)
    return AlertRouted(alert=alert, area_ids=area_ids, targets=targets, routed_at=utcnow())


def expand_codes(codes: list[str], known: Iterable[str]) -> set[str]:
    """Area ids named by CBS codes: a GM or WK code names every known area within it."""
    known_ids = set(known)
    out: set[str] = set()
    for code in codes:
        if code in known_ids:
            out.add(code)
            continue
        # BU0971xxxx lies in WK0971xx and GM0971: the digits nest.
        digits = code[2:]
        if code[:2] in ("GM", "WK"):
            out.update(a for a in known_ids if a[:2] in ("BU", "WK") and a[2:].startswith(digits))
    return out


def rings(core: set[str], adjacency: dict[str, tuple[str, ...]], k: int) -> list[set[str]]:
    """Ring 1..k of neighbours around the core areas (each ring excludes everything inside)."""
    seen = set(core)
    frontier = set(core)
    out: list[set[str]] = []
    for _ in range(k):
        ring = {n for a in frontier for n in adjacency.get(a, ()) if n not in seen}
        if not ring:
            break
        out.append(ring)
        seen |= ring
        frontier = ring
    return out


@dataclass(frozen=True)
class NoticeReach:
    """Where a notice applies: core areas, neighbour rings, and the groups they give."""

    area_ids: list[str]
    targets: list[RouteTarget]


def notice_reach(notice: Notice, index: RoutingIndex) -> NoticeReach:
    """Areas and groups a notice reaches: its own area(s) plus `adjacent_rings` of neighbours."""
    geometry = area_geometries(notice.areas)
    core: set[str] = set()
    relation: dict[str, Relation] = {}
    if geometry is not None:
        core.update(index.areas.overlapping(geometry))
        for group_id in index.group_shapes.overlapping(geometry):
            relation[group_id] = "in_area"
    core |= expand_codes(area_codes(notice.areas), index.adjacency.keys())
    for area_id in core:
        for group_id in index.groups_by_area.get(area_id, ()):
            relation[group_id] = "in_area"
    for ring in rings(core, index.adjacency, notice.adjacent_rings):
        for area_id in ring:
            for group_id in index.groups_by_area.get(area_id, ()):
                relation.setdefault(group_id, "adjacent")
    return NoticeReach(
        area_ids=sorted(core),
        targets=[RouteTarget(group_id=g, relation=r) for g, r in sorted(relation.items())],
    )


def route_notice(
    alert: AlertReceived, notice: Notice, index: RoutingIndex, earlier: list[RouteTarget]
) -> AlertRouted:
    """Route a notice; an Update or Cancel also reaches everyone its earlier notices reached."""
    reach = notice_reach(notice, index) if notice.areas else NoticeReach([], [])
    merged: dict[str, Relation] = {t.group_id: t.relation for t in earlier}
    for target in reach.targets:
        if merged.get(target.group_id) != "in_area":
            merged[target.group_id] = target.relation
    return AlertRouted(
        alert=alert,
        area_ids=reach.area_ids,
        targets=[RouteTarget(group_id=g, relation=r) for g, r in sorted(merged.items())],
        routed_at=utcnow(),
    )
