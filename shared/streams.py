"""JetStream stream declaration, shared by every service so none depends on start order."""

from __future__ import annotations

import asyncio
import logging

import nats
import nats.errors
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

from shared import subjects
from shared.settings import BaseServiceSettings

log = logging.getLogger(__name__)


def alerts_stream_config(settings: BaseServiceSettings) -> StreamConfig:
    """The ALERTS stream: file storage, limits retention, de-duplication window."""
    return StreamConfig(
        name=settings.stream_name,
        subjects=list(subjects.STREAM_SUBJECTS),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=settings.stream_max_age_s,
        duplicate_window=settings.duplicate_window_s,
        num_replicas=settings.stream_replicas,
        # Expiry closing messages are JetStream schedules: durable, no timer of our own.
        allow_msg_schedules=True,
    )


#: How long a starting service keeps asking JetStream for its stream. On a cluster that just
#: lost its meta leader the JetStream API answers nothing for a few seconds (an election);
#: a service starting then waits it out instead of failing its start.
ENSURE_PATIENCE_S = 30.0


async def ensure_streams(settings: BaseServiceSettings) -> None:
    """Create or update the stream, retrying through a JetStream leader election."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ENSURE_PATIENCE_S
    while True:
        try:
            await _ensure_streams_once(settings)
            return
        except (TimeoutError, nats.errors.TimeoutError, ServiceUnavailableError) as exc:
            if loop.time() >= deadline:
                raise
            log.warning("stream setup: %s; JetStream busy, trying again", type(exc).__name__)
            await asyncio.sleep(1.0)


async def _ensure_streams_once(settings: BaseServiceSettings) -> None:
    nc = await nats.connect(
        settings.nats_servers, connect_timeout=5, max_reconnect_attempts=3, reconnect_time_wait=1
    )
    try:
        js = nc.jetstream()
        config = alerts_stream_config(settings)
        try:
            await js.stream_info(config.name or "")
        except NotFoundError:
            try:
                await js.add_stream(config)
                log.info("created stream %s", config.name)
                return
            except BadRequestError:
                pass  # another replica created it between our two calls
        await js.update_stream(config)
    finally:
        await nc.drain()
