"""Settling a JetStream message: ack, retry with backoff, or dead-letter. Never drop silently."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from faststream import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, NatsMessage, PullSub
from prometheus_client import CollectorRegistry, Counter

from shared import subjects
from shared.errors import Deferred, PermanentError, TransientError
from shared.observability import set_correlation_id
from shared.settings import ConsumerSettings

log = logging.getLogger(__name__)

Stage = Literal["router", "notifier"]
Handler = TypeVar("Handler", bound=Callable[[NatsMessage], Awaitable[None]])


def durable_subscriber(
    broker: NatsBroker,
    settings: ConsumerSettings,
    subject: str,
    durable: str,
    *,
    title: str,
    description: str,
) -> Callable[[Handler], Handler]:
    """A durable JetStream pull subscriber settled by hand (see Settler).

    One definition for every consumer: acks only after the work is stored, redelivery after
    `ack_wait_s`, and no server-side delivery cap (Settler dead-letters after `max_deliver`).
    """
    subscriber = broker.subscriber(
        subject,
        stream=JStream(settings.stream_name, declare=False),
        durable=durable,
        pull_sub=PullSub(batch_size=settings.batch_size, timeout=1.0),
        config=ConsumerConfig(ack_wait=settings.ack_wait_s, max_deliver=-1),
        ack_policy=AckPolicy.MANUAL,
        decoder=_body_as_is,
        title=title,
        description=description,
    )

    context = broker.context

    def attach(handler: Handler) -> Handler:
        # The message comes from FastStream's context rather than a `msg: NatsMessage`
        # parameter: that parameter is a Context field, which fast_depends resolves in a worker
        # thread (anyio.to_thread) for every message, about 0.1 ms of CPU each. A plain body
        # parameter (`Any`: never validated against a type) costs no thread hop.
        async def consume(body: Any) -> None:
            await handler(context.get_local("message"))

        consume.__name__ = getattr(handler, "__name__", "consume")
        consume.__qualname__ = getattr(handler, "__qualname__", consume.__name__)
        consume.__doc__ = handler.__doc__
        subscriber(consume)
        return handler

    return attach


async def _body_as_is(msg: NatsMessage) -> Any:
    # FastStream's own decoder runs json.loads over every body that has no content type; the
    # handlers parse the body themselves (pydantic), so each message was parsed twice. Async:
    # FastStream would run a plain function in a worker thread.
    return msg.body


def backoff_s(num_delivered: int, retry_after_s: float | None = None) -> float:
    """Delay before the next delivery: the provider's word if given, else exponential, capped."""
    if retry_after_s is not None:
        return max(0.0, retry_after_s)
    return float(min(30.0, 0.5 * 2 ** max(0, num_delivered - 1)))


class Settler:
    """Runs one message's work and settles the message by the typed outcome."""

    def __init__(
        self,
        stage: Stage,
        broker: NatsBroker,
        settings: ConsumerSettings,
        metrics: CollectorRegistry,
    ) -> None:
        self.stage = stage
        self.broker = broker
        self.settings = settings
        self.dead_letters, self.retries = _stage_counters(stage, metrics)

    async def run(self, msg: NatsMessage, work: Callable[[], Awaitable[None]]) -> None:
        """Do the work, then ack; on failure nak with delay or dead-letter."""
        # Producers publish with the alert id as correlation id (FastStream's header).
        set_correlation_id(msg.correlation_id)
        try:
            await work()
        except Deferred as exc:
            # A deliberate wait (SAAR hold), bounded by its own deadline, not by max_deliver.
            await msg.nack(delay=max(0.05, exc.delay_s))
            return
        except PermanentError as exc:
            await self._dead_letter(msg, "permanent", str(exc))
            return
        except TransientError as exc:
            delivered = _num_delivered(msg)  # parsed from the reply subject: only when needed
            await self._retry_or_park(msg, delivered, "transient", str(exc), exc.retry_after_s)
            return
        except Exception as exc:
            delivered = _num_delivered(msg)
            log.exception("%s: unexpected error on delivery %d", self.stage, delivered)
            await self._retry_or_park(msg, delivered, "unexpected", type(exc).__name__, None)
            return
        await msg.ack()

    async def _retry_or_park(
        self, msg: NatsMessage, delivered: int, reason: str, detail: str, after: float | None
    ) -> None:
        if delivered >= self.settings.max_deliver:
            await self._dead_letter(msg, f"{reason}_exhausted", detail)
            return
        self.retries.labels(reason).inc()
        delay = backoff_s(delivered, after)
        log.warning(
            "%s: retry in %.1fs after %s (delivery %d)", self.stage, delay, reason, delivered
        )
        await msg.nack(delay=delay)

    async def _dead_letter(self, msg: NatsMessage, reason: str, detail: str) -> None:
        seq = _stream_seq(msg)
        await self.broker.publish(
            msg.body,
            subjects.dead_letter(self.stage),
            headers={
                subjects.MSG_ID_HEADER: f"dead:{self.stage}:{seq}",
                "Buurtalert-Reason": reason,
                "Buurtalert-Detail": detail[:200],
            },
            stream=self.settings.stream_name,
        )
        self.dead_letters.labels(reason).inc()
        log.error("%s: dead-lettered stream seq %s: %s", self.stage, seq, reason)
        await msg.reject()


def _stage_counters(stage: Stage, metrics: CollectorRegistry) -> tuple[Counter, Counter]:
    # Several consumers of one stage share its counters (a registry refuses a name twice);
    # they are kept on the registry itself so they live and die with it.
    cache: dict[str, tuple[Counter, Counter]] = metrics.__dict__.setdefault("_ba_settlers", {})
    if stage not in cache:
        cache[stage] = (
            Counter(
                f"{stage}_dead_letters_total",
                "Messages parked on the dead-letter subject",
                ["reason"],
                registry=metrics,
            ),
            Counter(
                f"{stage}_retries_total",
                "Messages handed back for redelivery",
                ["reason"],
                registry=metrics,
            ),
        )
    return cache[stage]


def _num_delivered(msg: NatsMessage) -> int:
    try:
        return int(msg.raw_message.metadata.num_delivered or 1)
    except Exception:  # noqa: BLE001 - core NATS messages carry no metadata
        return 1


def _stream_seq(msg: NatsMessage) -> int:
    try:
        return int(msg.raw_message.metadata.sequence.stream)
    except Exception:  # noqa: BLE001
        return 0
