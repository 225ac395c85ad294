"""Notifier service: AlertRouted -> members -> channels, one outcome per recipient."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import Counter

from services.notifier import handlers
from services.notifier.channels.registry import build_senders
from services.notifier.delivery import DeliveryMetrics, DeliveryService
from services.notifier.jobs import JobQueue
from shared import subjects
from shared.broker import create_http_app, create_runtime
from shared.consumer_lag import watch_consumer_lag
from shared.settings import NotifierSettings


def create_app(settings: NotifierSettings | None = None) -> FastAPI:
    """Build the notifier's ASGI app (broker and delivery workers run in its lifespan)."""
    settings = settings or NotifierSettings()
    runtime = create_runtime("notifier", settings)
    deliveries = Counter(
        "notifier_deliveries_total",
        "Recorded delivery outcomes",
        ["channel", "outcome"],
        registry=runtime.metrics,
    )
    senders = build_senders(settings)
    queue = JobQueue(settings, senders)
    delivery = DeliveryService(
        settings, runtime.redis, senders, DeliveryMetrics.create(runtime.metrics, deliveries)
    )
    runtime.startup += [queue.start, delivery.start]
    # Stop fetching jobs before the broker's connection goes; the queue last.
    runtime.shutdown[:0] = [delivery.stop, queue.stop]
    handlers.register(runtime, settings, queue, deliveries)
    handlers.register_replies(runtime, settings, queue)
    watch_consumer_lag(runtime, settings, subjects.NOTIFIER_DURABLE)
    return create_http_app(runtime, title="buurtalert notifier")
