"""The HTTP edge: accepts alerts, stores them in JetStream, serves the admin API."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import Counter

from services.ingest import api
from services.ingest.auth import key_roles
from services.ingest.publishing import AlertPublisher
from shared.broker import create_http_app, create_runtime
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
    api.install(
        app,
        registry=Registry(runtime.redis),
        publisher=AlertPublisher(
            runtime.broker, settings.stream_name, settings.publish_timeout_s, runtime.metrics
        ),
        keys=key_roles(settings.admin_keys, settings.dispatch_keys),
        rejected=rejected,
    )
    return app
