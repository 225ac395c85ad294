"""The one broker factory: broker, metrics registry, middleware, logging, health endpoints.

Every service (ingest, router, notifier) builds its runtime here, so the three entry points
cannot drift apart in how they connect, measure, log or answer /healthz, /readyz, /metrics.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from faststream.nats import NatsBroker
from faststream.nats.prometheus import NatsPrometheusMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.asyncio import BlockingConnectionPool, Redis

from shared.observability import configure_logging
from shared.settings import BaseServiceSettings
from shared.streams import ensure_streams

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]


@dataclass
class ServiceRuntime:
    """What a service process holds: its broker, metrics registry and Redis client."""

    service: str
    settings: BaseServiceSettings
    broker: NatsBroker
    metrics: CollectorRegistry
    redis: Redis
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)
    startup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


def create_runtime(service: str, settings: BaseServiceSettings) -> ServiceRuntime:
    """Build broker, metrics registry, middleware and logging for one service."""
    configure_logging(service, settings.log_level, settings.log_json)
    metrics = CollectorRegistry(auto_describe=True)
    broker = NatsBroker(
        settings.nats_servers,
        middlewares=[NatsPrometheusMiddleware(registry=metrics, app_name=service)],
        logger=logging.getLogger(f"buurtalert.{service}.broker"),
        # FastStream logs "Received" and "Processed" for every message at this level; at INFO
        # that doubled each service's own per-alert line (and its cost). Errors stay at ERROR.
        log_level=logging.DEBUG,
        graceful_timeout=10.0,
        # Keep reconnecting forever, to any server of the list (and those the cluster
        # announces): a restarted nats-server or a lost cluster node must not take a service down.
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
    )
    redis = Redis(connection_pool=redis_pool(settings))
    runtime = ServiceRuntime(service, settings, broker, metrics, redis)
    runtime.readiness["nats"] = lambda: broker.ping(timeout=1.0)
    runtime.readiness["redis"] = lambda: _redis_ping(redis)
    return runtime


def redis_pool(settings: BaseServiceSettings) -> BlockingConnectionPool:
    """A bounded pool that makes callers wait for a free connection instead of failing.

    redis-py's default pool raises "Too many connections" past its cap; under a burst of
    requests that turned into errors. Waiting (up to `redis_pool_timeout_s`) is back-pressure.
    """
    return BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
        decode_responses=True,
        health_check_interval=10,
        socket_connect_timeout=5,
        socket_timeout=10,
        retry_on_timeout=True,
    )


def _freeze_startup_objects() -> None:
    """Keep what start-up built (modules, schemas, app, broker) out of every later GC pass.

    Per message FastStream, pydantic and the clients allocate many short-lived objects, so the
    cyclic GC runs often, and each full pass walked everything start-up had built too: about a
    seventh of the router's CPU under load. Frozen objects are never collected (they live as
    long as the process anyway); collecting first keeps start-up's garbage out of the freeze.
    A youngest generation of 10,000 instead of 700 objects: most per-message objects are freed
    by reference counting before a pass would see them, so passes run far less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


async def _redis_ping(redis: Redis) -> bool:
    try:
        return bool(await redis.ping())
    except Exception:  # noqa: BLE001 - readiness answers "no", whatever the cause
        return False


def create_http_app(runtime: ServiceRuntime, *, title: str, description: str = "") -> FastAPI:
    """A FastAPI app that runs the broker in its lifespan and serves the health endpoints."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await ensure_streams(runtime.settings)
        for hook in runtime.startup:
            await hook()
        await runtime.broker.start()
        _freeze_startup_objects()
        log.info("%s started", runtime.service)
        try:
            yield
        finally:
            await runtime.broker.stop()
            for hook in runtime.shutdown:
                await hook()
            await runtime.redis.aclose()
            log.info("%s stopped", runtime.service)

    app = FastAPI(title=title, description=description, version="1", lifespan=lifespan)

    @app.get("/healthz", tags=["ops"], summary="Process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": runtime.service}

    @app.get("/readyz", tags=["ops"], summary="Dependencies reachable; ready for traffic")
    async def readyz() -> JSONResponse:
        results = {name: await check() for name, check in runtime.readiness.items()}
        ok = all(results.values())
        return JSONResponse(
            {"ready": ok, "service": runtime.service, "checks": results},
            status_code=200 if ok else 503,
        )

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(runtime.metrics), media_type=CONTENT_TYPE_LATEST)

    return app
