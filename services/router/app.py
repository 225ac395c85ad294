"""Router service: AlertReceived -> areas and groups -> AlertRouted."""

from __future__ import annotations

from fastapi import FastAPI

from services.router import handlers
from services.router.index_cache import IndexCache
from shared.broker import create_http_app, create_runtime
from shared.registry import Registry
from shared.settings import RouterSettings


def create_app(settings: RouterSettings | None = None) -> FastAPI:
    """Build the router's ASGI app (broker runs in its lifespan)."""
    settings = settings or RouterSettings()
    runtime = create_runtime("router", settings)
    cache = IndexCache(Registry(runtime.redis))
    handlers.register(runtime, settings, cache)

    async def warm() -> None:
        await cache.get()

    runtime.startup.append(warm)
    return create_http_app(runtime, title="buurtalert router")
