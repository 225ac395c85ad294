"""Incidents: reports close in place and time about the same thing are one incident.

A report joins the nearest open incident (within the radius, last report within the window)
that is about the same thing (`shared.incident_topics.same_thing`: same topic, or a report
naming no topic, or both naming none but with overlapping words); otherwise it opens one, so a
fire and a burglary 100 m apart stay two. The first report goes out as usual; later reports of
the same incident are merged, and an update ("3 meldingen") goes out at most once per update
interval. Kept in Redis (GEO index plus a hash per incident with its topic and representative
text) so every router replica sees the same incidents; an incident without a topic takes the
first one that joins it, atomically, and all updates for one alert are idempotent, so a
redelivery cannot count a report twice.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from shared.incident_topics import Topic, same_thing, topic

GEO = "ba:incidents:geo"


def _key(incident_id: str) -> str:
    return f"ba:incident:{incident_id}"


@dataclass(frozen=True, slots=True)
class Correlation:
    """Which incident a report belongs to, how many reports it has, and whether to send."""

    incident_id: str
    count: int
    send: bool


#: Longest representative text kept per incident (reports are short; SMS at most 1600).
TEXT_MAX = 2000

_JOIN = """
-- KEYS[1] incident hash, KEYS[2] its alert set
-- ARGV: alert_id, now, update interval, report topic, report text
-- Returns {count, send}; count 0 means refused (the incident took another topic meanwhile).
local existing = redis.call('HGET', KEYS[1], 'sent:' .. ARGV[1])
if existing then
  redis.call('SADD', KEYS[2], ARGV[1])
  return {redis.call('SCARD', KEYS[2]), tonumber(existing)}
end
local topic = redis.call('HGET', KEYS[1], 'topic')
local known = topic and topic ~= 'unknown'
if ARGV[4] ~= 'unknown' then
  if known and topic ~= ARGV[4] then
    return {0, 0}
  end
  if not known then
    redis.call('HSET', KEYS[1], 'topic', ARGV[4], 'text', ARGV[5])
  end
end
local added = redis.call('SADD', KEYS[2], ARGV[1])
local count = redis.call('SCARD', KEYS[2])
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
        self, alert_id: str, lon: float, lat: float, text: str = "", now: float | None = None
    ) -> Correlation:
        """The incident of this report (new or existing), and whether a message goes out."""
        now = time.time() if now is None else now
        kind = topic(text)
        text = text[:TEXT_MAX]
        refused: set[str] = set()
        known = await self.redis.get(f"ba:incident-of:{alert_id}")
        if known:  # a redelivery: the incident it joined before, which counts it once
            joined = await self._enter(_text(known), alert_id, kind, text, now)
            if joined is not None:
                return joined
            refused.add(_text(known))  # it stopped there before joining; look again
        while (
            incident_id := await self._nearby_open(lon, lat, kind, text, now, refused)
        ) is not None:
            joined = await self._enter(incident_id, alert_id, kind, text, now)
            if joined is not None:
                return joined
            refused.add(incident_id)  # another replica gave it another topic since we looked
        incident_id = secrets.token_hex(8)
        # The hash first: a neighbour's search must never find the place without it.
        await self.redis.hset(
            _key(incident_id), mapping={"last_at": str(now), "topic": kind.value, "text": text}
        )
        await self.redis.geoadd(GEO, (lon, lat, incident_id))
        joined = await self._enter(incident_id, alert_id, kind, text, now)
        if joined is None:  # cannot happen: it has the report's own topic
            raise RuntimeError(f"new incident {incident_id} refused its first report")
        return joined

    async def _enter(
        self, incident_id: str, alert_id: str, kind: Topic, text: str, now: float
    ) -> Correlation | None:
        """Count the report in the incident; None when the incident refused its topic."""
        ttl = int(self.window_s * 4)
        await self.redis.set(f"ba:incident-of:{alert_id}", incident_id, ex=ttl)
        count, send = await self._join(
            keys=[_key(incident_id), _key(incident_id) + ":alerts"],
            args=[alert_id, now, self.update_every_s, kind.value, text],
        )
        if int(count) == 0:
            return None
        await self.redis.expire(_key(incident_id), ttl)
        await self.redis.expire(_key(incident_id) + ":alerts", ttl)
        return Correlation(incident_id, int(count), bool(int(send)))

    async def _nearby_open(
        self, lon: float, lat: float, kind: Topic, text: str, now: float, skip: set[str]
    ) -> str | None:
        """The nearest open incident about the same thing as the report, if any."""
        near = await self.redis.geosearch(
            GEO, longitude=lon, latitude=lat, radius=self.radius_m, unit="m", sort="ASC"
        )
        for raw in near:
            incident_id = _text(raw) if isinstance(raw, bytes | str) else str(raw)
            if incident_id in skip:
                continue
            last, their_topic, their_text = await self.redis.hmget(
                _key(incident_id), ["last_at", "topic", "text"]
            )
            if last is None:
                await self.redis.zrem(GEO, incident_id)  # expired: forget its place
                continue
            if now - float(_text(last)) > self.window_s:
                continue
            # Incidents from before topics (no field) count as unknown with no words: they
            # take any report, as they did then.
            theirs = _topic(their_topic)
            if same_thing(kind, text, theirs, _text(their_text) if their_text else ""):
                return incident_id
        return None


def _topic(value: bytes | str | None) -> Topic:
    try:
        return Topic(_text(value)) if value else Topic.UNKNOWN
    except ValueError:  # a topic from a newer version: we cannot tell, so like unknown
        return Topic.UNKNOWN


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
