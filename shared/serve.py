"""Serve a service's ASGI app with uvicorn; SIGTERM and SIGINT stop it gracefully."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI


def serve(app: FastAPI, host: str, port: int) -> None:
    """Run the app in the foreground until signalled."""
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,  # logging is configured by the broker factory
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        # uvloop and httptools (dependencies) when installed, else asyncio and h11.
        loop="auto",
        http="auto",
    )
