"""Whether any group covers a place, so the edge can tell a reporter nobody will hear it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from shared.index_cache import IndexSource

OUTSIDE_TEXT = (
    "Let op: deze plek valt buiten de buurten van buurtalert; geen buurtgroep krijgt uw "
    "melding. Bij direct gevaar: bel 112."
)


class Coverage:
    """Answers "does a group hear about this place?" from the shared routing index."""

    def __init__(self, index: IndexSource, near_m: float, metrics: CollectorRegistry) -> None:
        self.index = index
        self.near_m = near_m
        self.uncovered = Counter(
            "ingest_reports_uncovered_total",
            "Reports whose place no group covers (answered to the reporter)",
            ["channel"], registry=metrics,
        )

    async def covers(self, lat: float, lon: float, channel: str) -> bool:
        """True when at least one group is reached; counts the reports that reach none."""
        _areas, targets = (await self.index.get()).reach(lon, lat, self.near_m)
        if not targets:
            self.uncovered.labels(channel).inc()
        return bool(targets)
