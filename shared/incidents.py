"""Incidents: reports close in place and time are one incident, not a message per reporter.

The first report goes out as usual; later reports of the same incident are merged, and an update
("3 meldingen") goes out at most once per update interval. Kept in Redis (GEO index plus a hash
per incident) so every router replica sees the same incidents; all updates for one alert are
idempotent, so a redelivery cannot count a report twice.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from redis.asyncio import Redis

GEO = "ba:incidents:geo"


def _key(incident_id: str) -> str:
    return f"ba:incident:{incident_id}"


@dataclass(frozen=True, slots=True)
class Correlation:
    """Which incident a report belongs to, how many reports it has, and whether to send."""

    incident_id: str
    count: int
    send: bool


_JOIN = """
-- KEYS[1] incident hash, KEYS[2] its alert set; ARGV: alert_id, now, update interval
local added = redis.call('SADD', KEYS[2], ARGV[1])
local count = redis.call('SCARD', KEYS[2])
local existing = redis.call('HGET', KEYS[1], 'sent:' .. ARGV[1])
if existing then
  return {count, tonumber(existing)}
end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_sent') or '0')
local send = 0
if added == 1 and tonumber(ARGV[2]) - last >= tonumber(ARGV[3]) then
  send = 1
  redis.call('HSET', KEYS[1], 'last_sent', ARGV[2])
end
redis.call('HSET', KEYS[1], 'sent:' .. ARGV[1], send, 'last_at', ARGV[2])
return {count, send}
"""


class IncidentBook:
    """Finds or opens the incident of a report."""

    def __init__(self, redis: Redis, radius_m: float, window_s: float, update_every_s: float):
        self.redis = redis
        self.radius_m = radius_m
        self.window_s = window_s
        self.update_every_s = update_every_s
        self._join = redis.register_script(_JOIN)

    async def correlate(
        self, alert_id: str, lon: float, lat: float, now: float | None = None
    ) -> Correlation:
        """The incident of this report (new or existing), and whether a message goes out."""
        now = time.time() if now is None else now
        known = await self.redis.get(f"ba:incident-of:{alert_id}")
        incident_id = _text(known) if known else await self._nearby_open(lon, lat, now)
        if incident_id is None:
            incident_id = secrets.token_hex(8)
            # The hash first: a neighbour's search must never find the place without it.
            await self.redis.hset(_key(incident_id), "last_at", str(now))
            await self.redis.geoadd(GEO, (lon, lat, incident_id))
        ttl = int(self.window_s * 4)
        await self.redis.set(f"ba:incident-of:{alert_id}", incident_id, ex=ttl)
        count, send = await self._join(
            keys=[_key(incident_id), _key(incident_id) + ":alerts"],
            args=[alert_id, now, self.update_every_s],
        )
        await self.redis.expire(_key(incident_id), ttl)
        await self.redis.expire(_key(incident_id) + ":alerts", ttl)
        return Correlation(incident_id, int(count), bool(int(send)))

    async def _nearby_open(self, lon: float, lat: float, now: float) -> str | None:
        near = await self.redis.geosearch(
            GEO, longitude=lon, latitude=lat, radius=self.radius_m, unit="m", sort="ASC"
        )
        for raw in near:
            incident_id = _text(raw) if isinstance(raw, bytes | str) else str(raw)
            last = await self.redis.hget(_key(incident_id), "last_at")
            if last is not None and now - float(_text(last)) <= self.window_s:
                return incident_id
            if last is None:
                await self.redis.zrem(GEO, incident_id)  # expired: forget its place
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
