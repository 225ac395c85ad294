"""Redis-backed registry of areas, groups and members.

Key layout (all under the `ba:` prefix so one Redis can be shared):
  ba:areas                 SET   area ids
  ba:area:{id}             HASH  name, wkb (hex, WGS84), adjacent (JSON list)
  ba:groups                SET   group ids
  ba:group:{id}            HASH  name, area_ids (JSON list), wkb (hex or ""), min_age,
                                 residency_required
  ba:group:{id}:members    HASH  member_id -> Member JSON
  ba:registry:version      INT   bumped on every change, so routers know to rebuild
  ba:memberships:{rkey}    SET   "group_id/member_id" of one person (recipient key) on a channel
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from shared.addresses import recipient_key
from shared.autopipe import AutoPipeline
from shared.schemas import AreaOut, GroupIn, Member, MemberChannel, MemberIn

AREAS = "ba:areas"
GROUPS = "ba:groups"
VERSION = "ba:registry:version"
_CHUNK = 500


def area_key(area_id: str) -> str:
    """Hash key of one area."""
    return f"ba:area:{area_id}"


def group_key(group_id: str) -> str:
    """Hash key of one group."""
    return f"ba:group:{group_id}"


def members_key(group_id: str) -> str:
    """Hash key of one group's members."""
    return f"ba:group:{group_id}:members"


def memberships_key(rkey: str) -> str:
    """Set of the memberships of one person on one channel."""
    return f"ba:memberships:{rkey}"


@dataclass(frozen=True, slots=True)
class StoredArea:
    """An area as stored: geometry as WKB hex."""

    id: str
    name: str
    wkb_hex: str
    adjacent: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StoredGroup:
    """A group as stored."""

    id: str
    name: str
    area_ids: tuple[str, ...]
    wkb_hex: str
    min_age: int
    residency_required: bool = False


class Registry:
    """Async access to the registry in Redis (a client with decode_responses=True)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        # The notifier reads the members of every routed alert's groups: gathered per turn.
        self._auto = AutoPipeline(redis)

    async def version(self) -> int:
        """Current registry version; changes whenever areas or groups change."""
        raw = await self.redis.get(VERSION)
        return int(raw) if raw else 0

    async def _bump(self) -> None:
        await self.redis.incr(VERSION)

    # --- areas -------------------------------------------------------------------------------

    async def upsert_areas(self, areas: Sequence[StoredArea]) -> None:
        """Write areas (geometry and adjacency) in pipelined chunks, then bump the version."""
        for start in range(0, len(areas), _CHUNK):
            pipe = self.redis.pipeline(transaction=False)
            for area in areas[start : start + _CHUNK]:
                pipe.hset(
                    area_key(area.id),
                    mapping={
                        "name": area.name,
                        "wkb": area.wkb_hex,
                        "adjacent": json.dumps(list(area.adjacent)),
                    },
                )
                pipe.sadd(AREAS, area.id)
            await pipe.execute()
        await self._bump()

    async def set_adjacency(self, adjacency: dict[str, Iterable[str]]) -> None:
        """Replace the adjacency lists of the given areas."""
        items = list(adjacency.items())
        for start in range(0, len(items), _CHUNK):
            pipe = self.redis.pipeline(transaction=False)
            for area_id, neighbours in items[start : start + _CHUNK]:
                pipe.hset(area_key(area_id), "adjacent", json.dumps(sorted(neighbours)))
            await pipe.execute()
        await self._bump()

    async def area_ids(self) -> set[str]:
        """Ids of all stored areas."""
        return {_text(x) for x in await self.redis.smembers(AREAS)}

    async def all_areas(self) -> list[StoredArea]:
        """Every stored area, read in pipelined chunks."""
        ids = sorted(await self.area_ids())
        out: list[StoredArea] = []
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            pipe = self.redis.pipeline(transaction=False)
            for area_id in chunk:
                pipe.hgetall(area_key(area_id))
            for area_id, data in zip(chunk, await pipe.execute(), strict=True):
                if data:
                    out.append(_area_from_hash(area_id, _texts(data)))
        return out

    async def get_area(self, area_id: str) -> AreaOut | None:
        """One area as the API shows it, or None."""
        data = await self.redis.hgetall(area_key(area_id))
        if not data:
            return None
        area = _area_from_hash(area_id, _texts(data))
        return AreaOut(id=area.id, name=area.name, adjacent=list(area.adjacent))

    # --- groups ------------------------------------------------------------------------------

    async def put_group(self, group: GroupIn, wkb_hex: str = "") -> bool:
        """Create or replace a group; True when it is new."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(GROUPS, group.id)
        pipe.hset(
            group_key(group.id),
            mapping={
                "name": group.name,
                "area_ids": json.dumps(group.area_ids),
                "wkb": wkb_hex,
                "min_age": str(group.min_age),
                "residency_required": "1" if group.residency_required else "",
            },
        )
        pipe.incr(VERSION)
        added, *_ = await pipe.execute()
        return bool(added)

    async def get_group(self, group_id: str) -> StoredGroup | None:
        """One group, or None."""
        data = await self.redis.hgetall(group_key(group_id))
        return _group_from_hash(group_id, _texts(data)) if data else None

    async def all_groups(self) -> list[StoredGroup]:
        """Every stored group."""
        ids = sorted(_text(x) for x in await self.redis.smembers(GROUPS))
        pipe = self.redis.pipeline(transaction=False)
        for group_id in ids:
            pipe.hgetall(group_key(group_id))
        rows = await pipe.execute()
        return [_group_from_hash(g, _texts(d)) for g, d in zip(ids, rows, strict=True) if d]

    # --- members -----------------------------------------------------------------------------

    async def add_member(
        self, group_id: str, member: MemberIn, checked: Sequence[str] = ()
    ) -> Member:
        """Add a member to a group; the group must exist. Birth date and home are not kept."""
        stored = Member(
            member_id=secrets.token_hex(8),
            group_id=group_id,
            checked=list(checked),
            **member.model_dump(exclude={"birth_date", "home", "postcode"}),
        )
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(members_key(group_id), stored.member_id, stored.model_dump_json())
        pipe.sadd(
            memberships_key(recipient_key(stored.channel, stored.address)),
            f"{group_id}/{stored.member_id}",
        )
        await pipe.execute()
        return stored

    async def remove_member(self, group_id: str, member_id: str) -> bool:
        """Remove a member; True when it existed."""
        raw = await self.redis.hget(members_key(group_id), member_id)
        if raw is None:
            return False
        member = Member.model_validate_json(raw)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(members_key(group_id), member_id)
        pipe.srem(
            memberships_key(recipient_key(member.channel, member.address)),
            f"{group_id}/{member_id}",
        )
        await pipe.execute()
        return True

    async def groups_of(self, channel: MemberChannel, address: str) -> list[str]:
        """Ids of the groups one person belongs to on one channel."""
        raw = await self.redis.smembers(memberships_key(recipient_key(channel, address)))
        return sorted({_text(x).split("/", 1)[0] for x in raw})

    async def members(self, group_id: str) -> list[Member]:
        """All members of a group."""
        (raw,) = await self._auto.run(lambda pipe: pipe.hgetall(members_key(group_id)))
        return [Member.model_validate_json(v) for v in raw.values()]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _texts(data: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in data.items()}


def _area_from_hash(area_id: str, data: dict[str, str]) -> StoredArea:
    return StoredArea(
        id=area_id,
        name=data.get("name", area_id),
        wkb_hex=data.get("wkb", ""),
        adjacent=tuple(json.loads(data.get("adjacent") or "[]")),
    )


def _group_from_hash(group_id: str, data: dict[str, str]) -> StoredGroup:
    return StoredGroup(
        id=group_id,
        name=data.get("name", group_id),
        area_ids=tuple(json.loads(data.get("area_ids") or "[]")),
        wkb_hex=data.get("wkb", ""),
        min_age=int(data.get("min_age") or 18),
        residency_required=bool(data.get("residency_required")),
    )
