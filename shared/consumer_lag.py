"""Consumer lag as a gauge: messages a durable consumer has not settled yet (waiting plus in
progress). Prometheus alerts on it growing (deploy/prometheus/rules.yml); the count comes from
JetStream itself, so it is right whichever replica asks."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats
import nats.errors
from nats.aio.client import Client
from nats.js.errors import NotFoundError
from prometheus_client import Gauge

from shared.broker import ServiceRuntime
from shared.settings import BaseServiceSettings

log = logging.getLogger(__name__)

#: How often JetStream is asked; lag alerts look at minutes, not seconds.
POLL_S = 5.0


def watch_consumer_lag(
    runtime: ServiceRuntime, settings: BaseServiceSettings, durable: str
) -> None:
    """Keep `consumer_pending_messages{consumer=durable}` current while the service runs."""
    gauge = Gauge(
        "consumer_pending_messages",
        "Messages of a durable JetStream consumer not yet settled (pending plus unacked)",
        ["consumer"],
        registry=runtime.metrics,
    ).labels(durable)
    state: dict[str, object] = {}

    async def poll(nc: Client) -> None:
        js = nc.jetstream()
        while True:
            try:
                info = await js.consumer_info(settings.stream_name, durable)
                gauge.set((info.num_pending or 0) + (info.num_ack_pending or 0))
            except NotFoundError:
                pass  # not created yet: the subscriber creates it at start
            except (TimeoutError, nats.errors.Error) as exc:
                log.debug("consumer lag of %s: %s", durable, type(exc).__name__)
            await asyncio.sleep(POLL_S)

    async def start() -> None:
        nc = await nats.connect(
            settings.nats_servers,
            connect_timeout=5,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            name=f"{runtime.service}-lag",
        )
        state["nc"] = nc
        state["task"] = asyncio.create_task(poll(nc))

    async def stop() -> None:
        task = state.get("task")
        if isinstance(task, asyncio.Task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        nc = state.get("nc")
        if isinstance(nc, Client):
            with contextlib.suppress(nats.errors.Error):
                await nc.close()

    runtime.startup.append(start)
    runtime.shutdown.insert(0, stop)
