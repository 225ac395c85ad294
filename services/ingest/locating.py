"""Where a resident's message is about: shared location, a postcode in the text, or home area."""

from __future__ import annotations

from redis.asyncio import Redis

from shared import gazetteer
from shared.geo import from_wkb_hex
from shared.registry import Registry, area_key
from shared.schemas import Location, MemberChannel

_LAST_LOCATION_TTL_S = 600


def last_location_key(sender_ref: str) -> str:
    """Where a sender's last shared location waits for the report that follows it."""
    return f"ba:lastloc:{sender_ref}"


class Locator:
    """Resolves a location: shared just before, postcode or address in the text, home area."""

    def __init__(self, redis: Redis, registry: Registry) -> None:
        self.redis = redis
        self.registry = registry

    async def remember_shared(self, sender_ref: str, location: Location) -> None:
        """Keep a location shared on its own, for the report that follows it."""
        await self.redis.set(
            last_location_key(sender_ref), location.model_dump_json(), ex=_LAST_LOCATION_TTL_S
        )

    async def locate(
        self, sender_ref: str, text: str, channel: MemberChannel, identity: str
    ) -> Location | None:
        """The best location we have for this message, with its source; None if nothing."""
        raw = await self.redis.get(last_location_key(sender_ref))
        if raw is not None:
            return Location.model_validate_json(raw)
        found = await gazetteer.lookup(self.redis, gazetteer.find_postcodes(text))
        if found is not None:
            _code, lat, lon = found
            return Location(lat=lat, lon=lon, source="postcode")
        address = await gazetteer.lookup_address(self.redis, text)
        if address is not None:
            _key, lat, lon = address
            return Location(lat=lat, lon=lon, source="address")
        return await self._home_area(channel, identity)

    async def _home_area(self, channel: MemberChannel, identity: str) -> Location | None:
        for group_id in await self.registry.groups_of(channel, identity):
            group = await self.registry.get_group(group_id)
            if group is None:
                continue
            wkb = group.wkb_hex
            if not wkb and group.area_ids:
                raw = await self.redis.hget(area_key(group.area_ids[0]), "wkb")
                wkb = (raw.decode() if isinstance(raw, bytes) else str(raw)) if raw else ""
            if wkb:
                point = from_wkb_hex(wkb).representative_point()
                return Location(lat=point.y, lon=point.x, source="home_area")
        return None
