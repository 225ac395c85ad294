"""Notifier service: AlertRouted -> members -> channels, one outcome per recipient."""

from __future__ import annotations

from fastapi import FastAPI

from services.notifier import handlers
from shared.broker import create_http_app, create_runtime
from shared.settings import NotifierSettings


def create_app(settings: NotifierSettings | None = None) -> FastAPI:
    """Build the notifier's ASGI app (broker runs in its lifespan)."""
    settings = settings or NotifierSettings()
    runtime = create_runtime("notifier", settings)
    handlers.register(runtime, settings)
    handlers.register_replies(runtime, settings)
    return create_http_app(runtime, title="buurtalert notifier")
