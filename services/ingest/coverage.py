"""Whether any group covers a place, so the edge can tell a reporter nobody will hear it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from shared.index_cache import IndexSource
from shared.routing_index import RoutingIndex

OUTSIDE_TEXT = (
    "Let op: deze plek valt buiten de buurten van buurtalert; geen buurtgroep krijgt uw "
    "melding. Bij direct gevaar: bel 112."
)


class EdgeIndex:
    """The routing index for the edge, from an IndexCache (one Redis GET per look).

    A caller that has read the registry version itself, in the same round trip as its rate
    limit (see services.ingest.admission), passes it in: when the index it was last handed has
    that version, no second look is needed. Otherwise (no version, or another one) the cache
    looks, and rebuilds on a change, exactly as before.
    """

    def __init__(self, cache: IndexSource) -> None:
        self.cache = cache
        self._last: RoutingIndex | None = None

    async def get(self, version: int | None = None) -> RoutingIndex:
        """The current index; `version`: the registry version the caller read just now."""
        last = self._last
        if version is not None and last is not None and last.version == version:
            return last
        self._last = index = await self.cache.get()
        return index


class Coverage:
    """Answers "does a group hear about this place?" from the shared routing index."""

    def __init__(self, index: EdgeIndex, near_m: float, metrics: CollectorRegistry) -> None:
        self.index = index
        self.near_m = near_m
        self.uncovered = Counter(
            "ingest_reports_uncovered_total",
            "Reports whose place no group covers (answered to the reporter)",
            ["channel"], registry=metrics,
        )

    async def covers(
        self, lat: float, lon: float, channel: str, version: int | None = None
    ) -> bool:
        """True when at least one group is reached; counts the reports that reach none.

        `version`: the registry version read during this request, if any (saves a look).
        """
        covered = reaches_a_group(await self.index.get(version), lon, lat, self.near_m)
        if not covered:
            self.uncovered.labels(channel).inc()
        return covered


def reaches_a_group(index: RoutingIndex, lon: float, lat: float, near_m: float) -> bool:
    """bool(index.reach(lon, lat, near_m)[1]), without building the targets it does not need.

    A place inside a group is answered by two point look-ups; the distance searches for the
    groups next to it (the costliest part of `reach`) run only when none covers it.
    """
    if index.group_shapes.lookup(lon, lat):
        return True
    if any(index.groups_by_area.get(a) for a in index.areas.lookup(lon, lat)):
        return True
    if near_m <= 0:
        return False
    if any(index.groups_by_area.get(a) for a in index.areas.near(lon, lat, near_m)):
        return True
    return bool(index.group_shapes.near(lon, lat, near_m))
