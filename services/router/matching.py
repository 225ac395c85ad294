"""Pure routing: which areas contain a point, and which groups cover those areas."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shared.notices import Notice, area_codes, area_geometries
from shared.routing_index import RoutingIndex
from shared.schemas import AlertReceived, AlertRouted, Relation, RouteTarget, utcnow


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
