"""The ops feed: routed alerts folded into incidents and notices, newest first (pure).

Built from the `alerts.v1.routed` events (see ops_watch): a resident report joins the item of
its incident (or is an item of its own without one); every notice message (Alert, Update,
Cancel) is an item, so reach is per notice. Items keep ids, categories, topics, areas, groups
and counts only: never a message body, a sender or an address.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import shapely

from shared.incident_topics import topic
from shared.notices import area_geometries
from shared.schemas import AlertRouted

#: Reports are shown at about 100 m: enough to see where, not whose door.
REPORT_DECIMALS = 3
#: Alerts of one incident whose reach is summed (the first messages of a long incident).
MAX_REACH_IDS = 20
FAILED_OUTCOMES = frozenset({"failed_permanent", "failed_transient", "undelivered"})


@dataclass
class FeedItem:
    """One incident (its reports together) or one notice message."""

    key: str
    type: str  # "incident" or "notice"
    first_at: datetime
    last_at: datetime
    alert_ids: list[str] = field(default_factory=list)  # its alerts, oldest first (reach)
    area_ids: list[str] = field(default_factory=list)
    group_ids: list[str] = field(default_factory=list)
    adjacent_groups: int = 0
    point: tuple[float, float] | None = None  # lon, lat
    reports: int = 0
    channels: Counter[str] = field(default_factory=Counter)
    held: int = 0
    topic: str = "unknown"
    notice: dict[str, Any] = field(default_factory=dict)
    outline: dict[str, Any] | None = None
    seen: set[str] = field(default_factory=set)  # report alert ids counted

    def as_json(self) -> dict[str, Any]:
        """The item as the feed endpoint sends it (reach and names are added there)."""
        out: dict[str, Any] = {
            "type": self.type,
            "id": self.key,
            "first_at": self.first_at.isoformat(),
            "last_at": self.last_at.isoformat(),
            "alert_ids": list(self.alert_ids),
            "area_ids": list(self.area_ids),
            "groups": list(self.group_ids),
            "adjacent_groups": self.adjacent_groups,
            "point": list(self.point) if self.point else None,
        }
        if self.type == "incident":
            out |= {
                "reports": self.reports,
                "channels": dict(self.channels),
                "held": self.held,
                "topic": self.topic,
            }
        else:
            out |= {"notice": dict(self.notice), "outline": self.outline}
        return out


def _merge(into: list[str], values: Iterable[str]) -> None:
    seen = set(into)
    for v in values:
        if v not in seen:
            into.append(v)
            seen.add(v)


def _outline(event: AlertRouted) -> tuple[dict[str, Any] | None, tuple[float, float] | None]:
    """A notice's own area, simplified to a few dozen points, and a point inside it."""
    notice = event.alert.notice
    geom = area_geometries(notice.areas, circle_segments=24) if notice else None
    if geom is None or geom.is_empty:
        return None, None
    minx, miny, maxx, maxy = geom.bounds
    simple = shapely.simplify(geom, max(maxx - minx, maxy - miny) / 200, preserve_topology=True)
    inside = shapely.point_on_surface(geom)
    outline: dict[str, Any] = shapely.geometry.mapping(
        shapely.set_precision(simple, 1e-5)
    )
    return outline, (round(inside.x, 5), round(inside.y, 5))


class FeedBook:
    """Recent feed items, at most `max_items`, the least recently active dropped first."""

    def __init__(self, max_items: int = 300) -> None:
        self.max_items = max_items
        self._items: dict[str, FeedItem] = {}
        self.events = 0

    def add(self, event: AlertRouted) -> FeedItem:
        """Fold one routed event in; a redelivered or repeated event changes no count."""
        self.events += 1
        alert = event.alert
        at = event.routed_at
        went_out = bool(event.targets) and not event.merged and not event.held_reason
        if alert.notice is not None:
            item = self._items.get(alert.alert_id)
            if item is None:
                outline, inside = _outline(event)
                notice = alert.notice
                item = FeedItem(
                    key=alert.alert_id,
                    type="notice",
                    first_at=at,
                    last_at=at,
                    outline=outline,
                    point=inside,
                    notice={
                        "category": notice.category,
                        "msg_type": notice.msg_type,
                        "status": notice.status,
                        "references": list(notice.references),
                        "audience": notice.audience,
                        "adjacent_rings": notice.adjacent_rings,
                        "expired": notice.expired,
                        "expires": notice.expires.isoformat() if notice.expires else None,
                    },
                )
        else:
            key = f"incident:{event.incident_id}" if event.incident_id else alert.alert_id
            item = self._items.get(key)
            if item is None:
                item = FeedItem(key=key, type="incident", first_at=at, last_at=at)
            if alert.location is not None and item.point is None:
                item.point = (
                    round(alert.location.lon, REPORT_DECIMALS),
                    round(alert.location.lat, REPORT_DECIMALS),
                )
            kind = topic(alert.text)
            if item.topic == "unknown":
                item.topic = kind.value
        self._count(item, event, went_out)
        item.last_at = max(item.last_at, at)
        item.first_at = min(item.first_at, at)
        _merge(item.area_ids, event.area_ids)
        _merge(item.group_ids, [t.group_id for t in event.targets])
        item.adjacent_groups = max(
            item.adjacent_groups, sum(1 for t in event.targets if t.relation == "adjacent")
        )
        if alert.alert_id not in item.alert_ids:
            item.alert_ids.append(alert.alert_id)
        # Re-inserted last: the dict's order is the order of last activity.
        self._items.pop(item.key, None)
        self._items[item.key] = item
        while len(self._items) > self.max_items:
            del self._items[next(iter(self._items))]
        return item

    def _count(self, item: FeedItem, event: AlertRouted, went_out: bool) -> None:
        if item.type != "incident":
            return
        alert = event.alert
        if alert.alert_id in item.seen:
            if went_out and item.held:  # released by an admin after being held
                item.held -= 1
            return
        item.seen.add(alert.alert_id)
        item.reports = max(item.reports + 1, event.incident_count)
        item.channels[alert.channel] += 1
        if event.held_reason:
            item.held += 1

    def items(self, limit: int) -> list[FeedItem]:
        """The most recently active items first."""
        ordered = sorted(self._items.values(), key=lambda i: i.last_at, reverse=True)
        return ordered[:limit]

    def __len__(self) -> int:
        return len(self._items)


def reach_summary(alert_reaches: Iterable[Mapping[str, int]]) -> dict[str, Any] | None:
    """Reached X of Y over some alerts' reach hashes (None when none has any record yet)."""
    planned = 0
    outcomes: Counter[str] = Counter()
    any_record = False
    for counts in alert_reaches:
        if not counts:
            continue
        any_record = True
        for k, v in counts.items():
            if k == "planned":
                planned += int(v)
            elif int(v):
                outcomes[k] += int(v)
    if not any_record:
        return None
    settled = sum(outcomes.values())
    nobody = sum(outcomes[k] for k in ("no_recipients", "held", "merged"))
    return {
        "planned": planned,
        "reached": outcomes["delivered"],
        "failed": sum(v for k, v in outcomes.items() if k in FAILED_OUTCOMES),
        "pending": max(0, planned - (settled - nobody)),
        "outcomes": dict(outcomes),
    }
