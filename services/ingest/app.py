"""The HTTP edge: accepts alerts, stores them in JetStream, serves the admin API."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import Counter

from services.ingest import api, notices_api, privacy_api, webhooks
from services.ingest.auth import key_roles
from services.ingest.conversation import Conversation
from services.ingest.coverage import Coverage, EdgeIndex
from services.ingest.erasure import Eraser
from services.ingest.locating import Locator
from services.ingest.ops_api import install_ops
from services.ingest.ops_map import OpsMapCache
from services.ingest.ops_watch import RoutedWatch
from services.ingest.pages import AreaLayerCache, install_pages
from services.ingest.publishing import AlertPublisher
from shared.broker import create_http_app, create_runtime
from shared.index_cache import IndexCache
from shared.ratelimit import Limit, RateLimiter
from shared.registry import Registry
from shared.settings import IngestSettings


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    """Build the edge's ASGI app (broker runs in its lifespan)."""
    settings = settings or IngestSettings()
    runtime = create_runtime("ingest", settings)
    app = create_http_app(
        runtime,
        title="buurtalert",
        description="Alert routing for Dutch neighbourhood watch. 112 first: buurtalert never "
        "replaces it.",
    )
    rejected = Counter(
        "ingest_rejected_total",
        "Requests refused, by endpoint and reason",
        ["endpoint", "reason"],
        registry=runtime.metrics,
    )
    receipts = Counter(
        "ingest_delivery_receipts_total",
        "Provider status callbacks received",
        ["channel", "status"],
        registry=runtime.metrics,
    )
    registry = Registry(runtime.redis)
    publisher = AlertPublisher(
        runtime.broker, settings.stream_name, settings.publish_timeout_s, runtime.metrics
    )
    keys = key_roles(settings.admin_keys, settings.dispatch_keys)
    limiter = RateLimiter(runtime.redis)
    coverage = Coverage(
        EdgeIndex(IndexCache(registry)), settings.neighbour_distance_m, runtime.metrics
    )
    api.install(
        app,
        registry=registry,
        publisher=publisher,
        keys=keys,
        rejected=rejected,
        limiter=limiter,
        source_limit=Limit.per_minute(settings.source_requests_per_minute, settings.source_burst),
        coverage=coverage,
    )
    notices_api.install(app, publisher=publisher, keys=keys, rejected=rejected)
    area_layers = AreaLayerCache(registry)
    install_pages(app, registry, area_layers)
    watch = RoutedWatch(
        settings.nats_servers,
        settings.stream_name,
        settings.ops_feed_history_s,
        settings.ops_feed_idle_s,
    )
    runtime.shutdown.append(watch.close)
    install_ops(
        app,
        redis=runtime.redis,
        maps=OpsMapCache(area_layers, registry),
        watch=watch,
        keys=keys,
    )
    eraser = Eraser(runtime.redis, registry)
    privacy_api.install(app, keys=keys, redis=runtime.redis, eraser=eraser, rejected=rejected)
    privacy_api.start_retention_sweep(runtime, settings)
    conversation = Conversation(
        runtime.redis,
        publisher,
        limiter,
        Locator(runtime.redis, registry),
        Limit.per_hour(settings.sender_reports_per_hour, settings.sender_burst),
        settings.saar_question_ttl_s,
        rejected,
        coverage,
        eraser.erase,
    )
    webhooks.install(
        app,
        settings=settings,
        redis=runtime.redis,
        conversation=conversation,
        rejected=rejected,
        receipts=receipts,
    )
    return app
