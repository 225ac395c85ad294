"""Bearer keys with roles: admin keys manage groups, dispatch keys push notices."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from fastapi import HTTPException, Request, status

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
