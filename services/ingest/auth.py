"""Bearer keys with roles: admin keys manage groups, dispatch keys push notices.

A group admin key (issued by an admin for one group, kept in Redis as a SHA-256 digest only)
lets a group's own beheerder moderate that group and nothing else.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import HTTPException, Request, status
from redis.asyncio import Redis

Role = Literal["admin", "dispatch"]


def key_roles(admin_keys: list[str], dispatch_keys: list[str]) -> list[tuple[str, Role]]:
    """Flatten the configured keys into (key, role) pairs."""
    return [(k, "admin") for k in admin_keys] + [(k, "dispatch") for k in dispatch_keys]


def role_of(presented: str, keys: list[tuple[str, Role]]) -> set[Role]:
    """Roles a presented key has; compares every key in constant time."""
    roles: set[Role] = set()
    for key, role in keys:
        if secrets.compare_digest(presented.encode(), key.encode()):
            roles.add(role)
    return roles


def bearer_token(request: Request) -> str:
    """The bearer token of a request ("" when there is none)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def require(
    role: Role, keys: list[tuple[str, Role]]
) -> Callable[[Request], Coroutine[Any, Any, None]]:
    """A FastAPI dependency: 401 without a known key, 403 with a key of another role."""

    async def dependency(request: Request) -> None:
        token = bearer_token(request)
        if not token:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing bearer key (Authorization: Bearer <key>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        roles = role_of(token, keys)
        if not roles:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "unknown key", headers={"WWW-Authenticate": "Bearer"}
            )
        if role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this key lacks the {role} role")

    return dependency


GROUP_KEYS = "ba:groupkeys"


def _group_keys_of(group_id: str) -> str:
    return f"ba:groupkeys:{group_id}"


def key_digest(key: str) -> str:
    """What is stored of a group key: its SHA-256, so a Redis dump reveals no usable key."""
    return hashlib.sha256(key.encode()).hexdigest()


async def issue_group_key(redis: Redis, group_id: str) -> str:
    """A new key for one group's admins; shown once, stored as a digest."""
    key = "ga_" + secrets.token_urlsafe(32)
    digest = key_digest(key)
    pipe = redis.pipeline(transaction=True)
    pipe.hset(GROUP_KEYS, digest, group_id)
    pipe.sadd(_group_keys_of(group_id), digest)
    await pipe.execute()
    return key


async def revoke_group_keys(redis: Redis, group_id: str) -> int:
    """Revoke every key of one group; how many there were."""
    digests = [
        d.decode() if isinstance(d, bytes) else d
        for d in await redis.smembers(_group_keys_of(group_id))
    ]
    if digests:
        await redis.hdel(GROUP_KEYS, *digests)
    await redis.delete(_group_keys_of(group_id))
    return len(digests)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a deployment admin (every group) or the admin of one group."""

    group_id: str | None = None  # None: a deployment admin key

    def may_manage(self, group_id: str) -> bool:
        """Whether this key may moderate and manage members of a group."""
        return self.group_id is None or self.group_id == group_id


def require_group_admin(
    keys: list[tuple[str, Role]], redis: Redis
) -> Callable[[Request], Coroutine[Any, Any, Principal]]:
    """A FastAPI dependency: an admin key (all groups) or a group admin key (its group)."""

    async def dependency(request: Request) -> Principal:
        token = bearer_token(request)
        if not token:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing bearer key (Authorization: Bearer <key>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        roles = role_of(token, keys)
        if "admin" in roles:
            return Principal()
        group = await redis.hget(GROUP_KEYS, key_digest(token))
        if group is not None:
            return Principal(group.decode() if isinstance(group, bytes) else str(group))
        if roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "this key lacks the admin role")
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "unknown key", headers={"WWW-Authenticate": "Bearer"}
        )

    return dependency


def require_admin(
    keys: list[tuple[str, Role]], redis: Redis
) -> Callable[[Request], Coroutine[Any, Any, None]]:
    """A FastAPI dependency for deployment-wide admin work; a group admin key gets 403."""
    principal_of = require_group_admin(keys, redis)

    async def dependency(request: Request) -> None:
        if (await principal_of(request)).group_id is not None:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, "a group admin key cannot do this; use an admin key"
            )

    return dependency
