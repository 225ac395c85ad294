"""Router service: AlertReceived -> areas and groups -> AlertRouted."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import FastAPI
from redis.exceptions import RedisError

from services.router import handlers
from services.router.expiry import ExpiryScheduler
from shared import subjects
from shared.broker import create_http_app, create_runtime
from shared.consumer_lag import watch_consumer_lag
from shared.index_cache import IndexCache
from shared.registry import Registry
from shared.settings import RouterSettings


def create_app(settings: RouterSettings | None = None) -> FastAPI:
    """Build the router's ASGI app (broker runs in its lifespan)."""
    settings = settings or RouterSettings()
    runtime = create_runtime("router", settings)
    cache = IndexCache(Registry(runtime.redis))
    expiry = ExpiryScheduler(settings.nats_servers, settings.stream_name)
    runtime.startup.append(expiry.start)
    runtime.shutdown.append(expiry.stop)
    handlers.register(runtime, settings, cache, expiry)
    watch_consumer_lag(runtime, settings, subjects.ROUTER_DURABLE)

    tasks: list[asyncio.Task[None]] = []

    async def refresh_forever() -> None:
        # Rebuild in the background, so the first alert after an import does not wait for it.
        while True:
            await asyncio.sleep(1.0)
            try:
                await cache.get()
            except RedisError as exc:
                logging.getLogger(__name__).warning("index refresh: %s", type(exc).__name__)

    async def start_refresher() -> None:
        await cache.get()
        tasks.append(asyncio.create_task(refresh_forever()))

    async def stop_refresher() -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    runtime.startup.append(start_refresher)
    runtime.shutdown.insert(0, stop_refresher)
    return create_http_app(runtime, title="buurtalert router")
