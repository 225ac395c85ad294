"""Erasure on request (admin) and the retention sweep the edge runs in the background."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.ingest.auth import Role, require_admin
from services.ingest.erasure import PERSONAL_STREAMS, Eraser
from shared.addresses import AddressError, normalise_address
from shared.broker import ServiceRuntime
from shared.retention import sweep
from shared.schemas import MemberChannel, utcnow
from shared.settings import IngestSettings

log = logging.getLogger(__name__)


class ErasureIn(BaseModel):
    """Who is to be erased: a channel and the address used on it."""

    model_config = ConfigDict(extra="forbid")

    channel: MemberChannel = Field(description="sms, telegram, whatsapp or email")
    address: str = Field(
        min_length=1, max_length=320, description="as for members: phone, chat id or e-mail"
    )


def install(
    app: FastAPI,
    *,
    keys: list[tuple[str, Role]],
    redis: Redis,
    eraser: Eraser,
    rejected: Counter,
) -> None:
    """`POST /v1/erasure` (admin): erase one person, as an opt-out does."""
    router = APIRouter(prefix="/v1")

    @router.post(
        "/erasure",
        tags=["admin"],
        dependencies=[Depends(require_admin(keys, redis))],
    )
    async def post_erasure(body: ErasureIn) -> dict[str, Any]:
        """Erase a person: memberships, outbox entries, join requests, held reports."""
        try:
            address = normalise_address(body.channel, body.address)
        except AddressError as exc:
            rejected.labels("/v1/erasure", "invalid").inc()
            raise HTTPException(422, str(exc)) from exc
        done = await eraser.erase(body.channel, address)
        return {
            "memberships": done.memberships,
            "stream_entries": done.stream_entries,
            "held": done.held,
            "keys": done.keys,
        }

    app.include_router(router)


def start_retention_sweep(runtime: ServiceRuntime, settings: IngestSettings) -> None:
    """Every few minutes drop what is older than the retention period (every edge may run it:
    trimming twice is harmless)."""
    swept = Counter(
        "ingest_retention_removed_total",
        "Entries removed because they outlived the retention period",
        ["kind"],
        registry=runtime.metrics,
    )
    tasks: list[asyncio.Task[None]] = []

    async def once() -> None:
        done = await sweep(
            runtime.redis,
            now=utcnow(),
            keep_s=settings.stream_max_age_s,
            streams=PERSONAL_STREAMS,
        )
        swept.labels("stream_entry").inc(done.stream_entries)
        swept.labels("held").inc(done.held)

    async def forever() -> None:
        while True:
            try:
                await once()
            except RedisError as exc:
                log.warning("retention sweep: %s; next round", type(exc).__name__)
            await asyncio.sleep(settings.retention_sweep_every_s)

    async def start() -> None:
        tasks.append(asyncio.create_task(forever()))

    async def stop() -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    runtime.startup.append(start)
    runtime.shutdown.insert(0, stop)
