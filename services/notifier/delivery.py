"""Delivery workers: one per provider channel, sending the jobs the fan-out queued.

Per channel two durable pull consumers (police, resident) feed one sender. Police jobs are
fetched by their own loop and pre-empt residents in the rate budget (see MultiLimiter), so a
missing-person notice never waits behind a burst of resident reports.

Exactly one message per (alert, recipient, channel):
- right before the provider request the delivery is claimed in Redis with an in-flight marker
  naming this notifier (a token with a heartbeat) and when it was set (Redis TIME);
- the outcome is recorded and the marker cleared in one Lua step, then the job is acked;
- a redelivered job whose outcome exists is acked and skipped; one whose marker names a live
  notifier waits. One whose marker names a dead notifier (killed mid-request) depends on the
  channel:
  - SMS (Twilio) and WhatsApp post receipts that carry our delivery id (StatusCallback `?d=`,
    `biz_opaque_callback_data`) within seconds of accepting a message. (Twilio posts none for
    the initial "queued"; its first, "sent", comes as the message leaves Twilio's queue, which
    is prompt while we keep to the sender's MPS, as the budgets do.) If one has come in (kept
    as an early receipt, since no outcome existed yet) the message did go out: it is recorded
    "delivered" and not resent. If none has and the marker is younger than `receipt_grace_s`,
    the job is handed back to look again a few seconds later. Once the grace is over without a
    receipt the provider never accepted the request (the notifier died before it got there):
    the marker is taken over, atomically and only from that same dead owner, and the message
    sent now (`notifier_resent_after_crash_total`).
  - First of all, every send marks its point of no return: the marker is committed, atomically
    and only if still ours, right before the HTTP request, or for e-mail right before DATA
    (until the end of DATA a relay has accepted nothing). A dead notifier's uncommitted marker
    never reached the provider: it is taken over and the message sent at once.
  - Telegram and e-mail have no receipts, so nothing can tell a sent message from a lost one
    once committed: it is recorded "unconfirmed" and NOT resent, as a second message to a
    person is worse than an unknown. So is a committed marker on SMS and WhatsApp when
    `receipt_grace_s` is 0.
A request of ours that got no answer although it may have reached the provider (a read timeout,
a connection dropped after sending) is judged the same way on SMS and WhatsApp: the marker stays
and the job looks again, so the receipt, not a blind retry, decides whether it is sent again.
The grace must outlast a provider request (`provider_timeout_s`) plus the receipt's way back; a
receipt that comes later than that, or never reaches the edge (e.g. `public_url` not reachable
by the provider), would let a sent message be sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.notifier.channels.base import (
    ChannelSender,
    OutboundMessage,
    SendAbandoned,
    SendPermanent,
    SendTransient,
)
from services.notifier.jobs import packed_retry, publish
from services.notifier.limits import account_bucket, buckets_for, police_flag
from shared import subjects
from shared.errors import TransientError
from shared.observability import latency_histogram, set_correlation_id
from shared.outbox import Claim, OutcomeStore, inflight_key
from shared.ratelimit import Grant, MultiLimiter
from shared.schemas import (
    DeliveryAttempted,
    DeliveryJobs,
    DeliveryRequested,
    MemberChannel,
    Outcome,
    utcnow,
)
from shared.settings import NotifierSettings

log = logging.getLogger(__name__)

HEARTBEAT_S = 3.0
ALIVE_TTL_S = 10
#: Channels whose provider posts receipts carrying our delivery id, so a dead notifier's send
#: can be confirmed, or found never to have reached the provider and sent again.
RECEIPT_CHANNELS: frozenset[MemberChannel] = frozenset({"sms", "whatsapp"})
#: Channels whose adapter marks the point of no return itself (SMTP: right before DATA, after
#: connecting); for the others it is marked right before the HTTP request.
ADAPTER_COMMITS: frozenset[MemberChannel] = frozenset({"email"})
#: While a dead notifier's marker is within its grace, look for the receipt this often.
RECEIPT_POLL_S = 3.0
#: A job whose marker belongs to a live notifier looks again after this long.
HELD_RETRY_S = 2.0
#: A request may leave at most this long after its budget's moment, else it is budgeted
#: afresh. Budgets are spaced 1/(limit_share x limit) apart, so n+1 sends span at least n
#: spacings less the lateness: at limit_share 0.95 no one-second provider window can exceed
#: the limit while lateness stays under 52 ms; this leaves the rest for the request's own way
#: out. Holds across any number of notifier replicas, as the spacing is Redis's.
SEND_LATE_MAX_S = 0.02
#: The most a send starts ahead of its budget's moment (see DeliveryService._lead_s).
MAX_LEAD_S = 0.5
#: Fresh budgets a late request may take before it goes anyway.
LATE_REBUDGETS = 3
#: Messages fetched at a time by one queue's loop.
FETCH_MAX = 4


def alive_key(owner: str) -> str:
    """Set while the notifier with this token runs; its in-flight markers are live."""
    return f"ba:notifier:alive:{owner}"


@dataclass
class DeliveryMetrics:
    """The notifier's delivery metrics, on its registry (bounded labels only)."""

    deliveries: Counter
    accept_to_provider: Histogram
    accept_to_delivery: Histogram
    rate_limited: Counter
    throttled: Counter
    retries: Counter
    pending: Gauge
    in_flight: Gauge
    resent_after_crash: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry, deliveries: Counter) -> DeliveryMetrics:
        """Register the metrics (the deliveries counter is shared with the fan-out)."""
        return cls(
            deliveries=deliveries,
            accept_to_provider=latency_histogram(
                registry,
                "notifier_accept_to_provider_seconds",
                "From acceptance at the edge to the provider request",
                ("channel",),
            ),
            accept_to_delivery=latency_histogram(
                registry,
                "notifier_accept_to_provider_ack_seconds",
                "From acceptance at the edge to the provider accepting the message",
                ("channel",),
            ),
            rate_limited=Counter(
                "notifier_rate_limited_total",
                "Sends that waited for a rate budget (scope: account, chat, group, police; "
                "late: a request held up past its budget's moment took a fresh one)",
                ["channel", "scope"],
                registry=registry,
            ),
            throttled=Counter(
                "notifier_provider_throttled_total",
                "Provider answers of 429 / rate limit hit (honoured with retry_after)",
                ["channel"],
                registry=registry,
            ),
            retries=Counter(
                "notifier_send_retries_total",
                "Sends handed back for a later attempt after a transient failure",
                ["channel", "reason"],
                registry=registry,
            ),
            pending=Gauge(
                "notifier_pending_jobs",
                "Delivery jobs waiting in JetStream or unacknowledged",
                ["channel", "priority"],
                registry=registry,
            ),
            in_flight=Gauge(
                "notifier_provider_requests_in_flight",
                "Provider requests under way",
                ["channel"],
                registry=registry,
            ),
            resent_after_crash=Counter(
                "notifier_resent_after_crash_total",
                "Sends taken over from a dead notifier after its grace passed without a receipt",
                ["channel"],
                registry=registry,
            ),
        )


@dataclass(frozen=True, slots=True)
class _Budget:
    """A granted budget: a moment at or after `asked_at + wait_s` (Redis decided in between)."""

    asked_at: float  # monotonic, right before the budget was asked for
    answered_at: float  # monotonic, when the grant came back
    wait_s: float  # a reservation: how long after Redis's moment the send may go

    async def sleep(self, lead_s: float = 0.0) -> None:
        """Sleep until lead_s before the budget is surely due (never early with lead 0)."""
        delay = self.answered_at + self.wait_s - lead_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def late_s(self) -> float:
        """How late a request leaving now is, counted from the earliest the budget's moment
        can be (so never under-counted)."""
        return time.monotonic() - (self.asked_at + self.wait_s)


class _Batch:
    """One fetched message and how many of its jobs are still under way.

    The message is acked once every job in it is settled (an outcome recorded, or the job
    queued again as a message of its own); kept in progress meanwhile. If any job could be
    neither, the message is handed back whole: its settled jobs are skipped next time.
    """

    def __init__(self, msg: Msg, jobs: int, keep_alive_s: float) -> None:
        self.msg = msg
        self.open = jobs
        self.abandoned = False
        self._beat = asyncio.create_task(self._keep_alive(keep_alive_s))

    async def _keep_alive(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            await _settle(self.msg.in_progress())

    async def finish_one(self, *, abandoned: bool = False) -> None:
        """One job is settled (or abandoned); settle the message after the last."""
        self.abandoned = self.abandoned or abandoned
        self.open -= 1
        if self.open > 0:
            return
        self._beat.cancel()
        if self.abandoned:
            await _settle(self.msg.nak(delay=1.0))
        else:
            await _settle(self.msg.ack())

    async def hand_back(self, delay_s: float) -> bool:
        """Hand a message of one job back unchanged, to come again after delay_s."""
        if self.open != 1:
            return False
        self.open = 0
        self._beat.cancel()
        await _settle(self.msg.nak(delay=delay_s))
        return True


@dataclass(slots=True)
class _Lease:
    """One job of a fetched message, and the ways to be done with it."""

    job: DeliveryRequested
    batch: _Batch
    service: DeliveryService
    settled: bool = False  # done, abandoned or handed back: each lease is finished once

    @property
    def attempts(self) -> int:
        """Provider requests for this job, the one under way included."""
        return self.job.prior_attempts + 1

    async def done(self) -> None:
        """The job has its outcome (or needs none)."""
        if not self.settled:
            self.settled = True
            await self.batch.finish_one()

    async def abandon(self) -> None:
        """Neither settled nor queued again: the message must come back."""
        if not self.settled:
            self.settled = True
            await self.batch.finish_one(abandoned=True)

    async def later(self, delay_s: float, *, attempted: bool = False) -> None:
        """Queue the job again, not to be tried before delay_s from now.

        As a message of its own, carrying its history: JetStream's delivery count starts anew
        with the new message, and a message of many jobs cannot wait for one of them.
        """
        if self.settled:
            return
        job = self.job
        retry = job.model_copy(
            update={
                "prior_attempts": job.prior_attempts + (1 if attempted else 0),
                "requeues": job.requeues + 1,
                "not_before": utcnow() + timedelta(seconds=max(0.0, delay_s)),
            }
        )
        try:
            await self.service.requeue(retry)
        except TransientError:
            await self.abandon()
            return
        await self.done()

    async def not_yet(self, delay_s: float) -> None:
        """A job queued again came before its time: wait without counting an attempt."""
        if not self.settled and await self.batch.hand_back(delay_s):
            self.settled = True
            return
        await self.later(delay_s)


class DeliveryService:
    """Runs the delivery workers of every configured channel in one notifier process."""

    def __init__(
        self,
        settings: NotifierSettings,
        redis: Redis,
        senders: dict[MemberChannel, ChannelSender],
        metrics: DeliveryMetrics,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.senders = senders
        self.metrics = metrics
        self.owner = secrets.token_hex(8)
        self.store = OutcomeStore(redis, settings.outcome_ttl_s, settings.outbox_max_len)
        self.limiter = MultiLimiter(redis, max_reserve_s=settings.budget_reserve_s)
        self.sending: set[str] = set()  # delivery ids this process is sending right now
        # Per channel, how long a send takes from its start to its point of no return (mean).
        self._lead_s: dict[MemberChannel, float] = {}
        self.slots = asyncio.Semaphore(settings.send_concurrency)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sends: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Connect, create the durable consumers and start one loop per queue."""
        if not self.senders:
            return
        await self.redis.set(alive_key(self.owner), "1", ex=ALIVE_TTL_S)
        self._nc = await nats.connect(
            self.settings.nats_servers, max_reconnect_attempts=-1, reconnect_time_wait=1
        )
        js = self._js = self._nc.jetstream()
        self._tasks.append(asyncio.create_task(self._heartbeat()))
        for channel in self.senders:
            for priority in subjects.PRIORITIES:
                sub = await self._subscribe(js, channel, priority)
                self._tasks.append(
                    asyncio.create_task(_forever(self._loop, sub, channel, priority))
                )
            self._tasks.append(asyncio.create_task(self._watch_pending(js, channel)))

    async def stop(self) -> None:
        """Stop fetching, let sends under way finish, disconnect."""
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._sends:
            await asyncio.wait(self._sends, timeout=self.settings.provider_timeout_s + 1)
        for sender in self.senders.values():
            await sender.aclose()
        if self._nc is not None:
            # Not drain(): pull subscriptions whose fetch loops were cancelled never finish
            # draining, and held every shutdown for the whole drain timeout. By now each job is
            # settled or left for redelivery; flush the acks and close.
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await self._nc.flush(timeout=2)
            await self._nc.close()
        with contextlib.suppress(RedisError):
            await self.redis.delete(alive_key(self.owner))

    async def _subscribe(
        self, js: JetStreamContext, channel: MemberChannel, priority: subjects.Priority
    ) -> JetStreamContext.PullSubscription:
        config = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.settings.ack_wait_s,
            max_deliver=-1,  # bounded by max_send_attempts here, recorded as an outcome
            max_ack_pending=max(1000, self.settings.send_concurrency * 4),
        )
        return await js.pull_subscribe(
            subjects.deliver(channel, priority),
            durable=subjects.deliver_durable(channel, priority),
            stream=self.settings.stream_name,
            config=config,
        )

    async def _heartbeat(self) -> None:
        while True:
            with contextlib.suppress(RedisError):
                await self.redis.set(alive_key(self.owner), "1", ex=ALIVE_TTL_S)
            await asyncio.sleep(HEARTBEAT_S)

    async def _watch_pending(self, js: JetStreamContext, channel: MemberChannel) -> None:
        while True:
            for priority in subjects.PRIORITIES:
                try:
                    info = await js.consumer_info(
                        self.settings.stream_name,
                        subjects.deliver_durable(channel, priority),
                    )
                except (NotFoundError, TimeoutError, nats.errors.Error):
                    continue
                waiting = (info.num_pending or 0) + (info.num_ack_pending or 0)
                self.metrics.pending.labels(channel, priority).set(waiting)
            await asyncio.sleep(2.0)

    def _fetch_size(self, channel: MemberChannel) -> int:
        # A message of fan-out jobs holds a couple of seconds of the channel's budget (see
        # jobs.py); a few at a time leave the rest to other replicas, and police jobs have a
        # loop of their own, so they never wait behind these.
        per_second = account_bucket(channel, self.settings).limit.per_second
        return max(1, min(FETCH_MAX, self.settings.batch_size, int(per_second / 4) or 1))

    async def _loop(
        self,
        sub: JetStreamContext.PullSubscription,
        channel: MemberChannel,
        priority: subjects.Priority,
    ) -> None:
        size = self._fetch_size(channel)
        while not self._stopping.is_set():
            try:
                msgs = await sub.fetch(size, timeout=1.0)
            except TimeoutError:  # nats-py raises asyncio's (and its own subclass): no jobs
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.Error) as exc:
                log.warning("deliver %s/%s: fetch: %s", channel, priority, type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                jobs = await self._unpack(msg, channel)
                if not jobs:
                    continue
                batch = _Batch(msg, len(jobs), self.settings.ack_wait_s / 3)
                for job in jobs:
                    set_correlation_id(job.alert_id)  # the send task started here inherits it
                    lease = _Lease(job, batch, self)
                    try:
                        await self._dispatch(lease)
                    except RedisError as exc:
                        log.warning(
                            "deliver %s: redis %s; retry later", channel, type(exc).__name__
                        )
                        await lease.abandon()
                    except Exception:
                        # A bug must not leave the message kept in progress for ever: hand
                        # it back (its settled jobs are skipped next time) and go on.
                        log.exception("deliver %s: dispatch failed; handed back", channel)
                        await lease.abandon()
            set_correlation_id(None)

    async def _unpack(self, msg: Msg, channel: MemberChannel) -> list[DeliveryRequested]:
        """The jobs a message carries; a message that holds none is dead-lettered."""
        try:
            return DeliveryJobs.model_validate_json(msg.data).jobs
        except ValidationError:
            pass
        try:  # one bare job, as queued before jobs travelled together
            return [DeliveryRequested.model_validate_json(msg.data)]
        except ValidationError:
            pass
        log.error("deliver %s: not DeliveryJobs v1; dead-lettered", channel)
        self.metrics.deliveries.labels(channel, "poison").inc()
        try:
            await self._dead_letter(msg)
        except TransientError:
            await _settle(msg.nak(delay=5.0))
            return []
        await _settle(msg.term())
        return []

    async def _dead_letter(self, msg: Msg) -> None:
        """Park an undecodable message on the notifier's dead-letter subject."""
        if self._js is None:
            raise TransientError("not connected")
        seq = msg.metadata.sequence.stream if msg.metadata.sequence else 0
        try:
            await self._js.publish(
                subjects.dead_letter("notifier"),
                msg.data,
                stream=self.settings.stream_name,
                headers={
                    subjects.MSG_ID_HEADER: f"dead:deliver:{seq}",
                    "Buurtalert-Reason": "permanent",
                    "Buurtalert-Detail": "not DeliveryJobs v1",
                },
            )
        except (TimeoutError, nats.errors.Error) as exc:
            raise TransientError(f"dead letter: {type(exc).__name__}") from exc

    async def requeue(self, job: DeliveryRequested) -> None:
        """Queue a job handed back as a message of its own; TransientError if not stored."""
        if self._js is None:
            raise TransientError("not connected")
        await publish(self._js, self.settings, [packed_retry(job)])

    async def _dispatch(self, lease: _Lease) -> None:
        """Look, take a send slot and the rate budget, claim, then start the send.

        The claim comes last, right before the request: a notifier killed while it waited
        for a slot or a budget leaves no in-flight marker, so that job is simply sent later.
        A marker already on the delivery is judged first, before any budget is spent on it.
        """
        job = lease.job
        if job.not_before is not None:
            early_s = (job.not_before - utcnow()).total_seconds()
            if early_s > 0.01:
                await lease.not_yet(early_s)
                return
        if job.delivery_id in self.sending:
            await lease.later(HELD_RETRY_S)  # queued again while we still send it
            return
        look = await self.store.inspect(job.alert_id, job.recipient)
        if look.state == "done":
            await lease.done()  # a repeat of a job already settled
            return
        take_over_from = ""
        if look.state == "held":
            take_over_from = await self._judge_held(lease, look)
            if not take_over_from:
                return
        resend = _resend_detail(take_over_from, self.owner, look.committed)
        await self.slots.acquire()
        started = False
        try:
            budget = await self._wait_for_budget(lease)
            if budget is None:
                return
            # The budget may be a reservation a moment ahead: the send task keeps that time,
            # and this loop goes on to take the next job's budget meanwhile.
            self.sending.add(job.delivery_id)
            task = asyncio.create_task(
                self._claim_and_send(lease, take_over_from, budget, resend)
            )
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
            started = True
        finally:
            if not started:
                self.slots.release()

    async def _claim_and_send(
        self, lease: _Lease, take_over_from: str, budget: _Budget, resend: str = ""
    ) -> None:
        """At the budget's time, claim the delivery and make the provider request.

        `resend` is the outcome's detail when this sends again what an earlier request (a
        stopped notifier's, or our own unanswered one) may not have delivered.
        """
        job = lease.job
        sending = False
        claimed = False
        try:
            # Wake early by what the way to the point of no return usually takes (for e-mail:
            # connecting, EHLO, MAIL, RCPT), so the request leaves on time; the commit hook
            # then waits out the rest.
            await budget.sleep(lead_s=self._lead_s.get(job.channel, 0.0))
            woke_at = time.monotonic()
            # An HTTP request leaves right after the claim: it is kept on time first and the
            # claim commits at once (one round trip); e-mail commits later, before DATA.
            at_claim = job.channel not in ADAPTER_COMMITS
            if at_claim:
                budget = await self._on_time(job, budget)
            claim = await self.store.claim(
                job.alert_id,
                job.recipient,
                self.owner,
                take_over_from=take_over_from,
                grace_s=self._grace_s(job.channel) or None,
                only_uncommitted=True,
                commit=at_claim,
            )
            if claim.state == "done":
                await lease.done()
                return
            if claim.state == "held":
                # Changed since we looked (claimed by another notifier, or the receipt came
                # in): judge it afresh a moment later.
                await lease.later(1.0)
                return
            claimed = True
            if claim.receipt:
                # A receipt came in since we looked: the provider has this message already.
                await self._record(
                    lease,
                    "delivered",
                    detail="confirmed by the provider's receipt; not sent again",
                    attempts=lease.attempts,
                )
                return
            if take_over_from == self.owner:
                self.metrics.retries.labels(job.channel, "unsettled").inc()
            elif take_over_from:
                self.metrics.resent_after_crash.labels(job.channel).inc()
                log.warning(
                    "deliver %s: a stopped notifier's request never reached the provider; "
                    "sending again",
                    job.channel,
                    extra={"delivery_id": job.delivery_id},
                )
            if at_claim:
                # Once more: the claim's round trip may have run late (a CPU or Redis busy, as
                # right after a restart). Committed already, so a crash while waiting for a
                # fresh budget is judged like one mid-request.
                budget = await self._on_time(job, budget, committed=True)
            sending = True
            await self._send(lease, resend, budget, woke_at)
        except RedisError as exc:
            log.warning("deliver %s: redis %s; retry later", job.channel, type(exc).__name__)
            await lease.abandon()
        except SendTransient:
            # Stopping while waiting for a fresh budget before the claim: not sent; the job
            # comes back to this or another notifier.
            await lease.abandon()
        finally:
            if not sending:
                if claimed:
                    with contextlib.suppress(RedisError):
                        await self.store.release(job.delivery_id, self.owner)
                self.sending.discard(job.delivery_id)
                self.slots.release()

    def _committer(
        self, job: DeliveryRequested, budget: _Budget, woke_at: float
    ) -> Callable[[], Awaitable[None]]:
        """The adapter's hook at its point of no return: keep the budget's time, then commit."""

        async def commit() -> None:
            lead = time.monotonic() - woke_at
            self._lead_s[job.channel] = min(
                MAX_LEAD_S, 0.8 * self._lead_s.get(job.channel, lead) + 0.2 * lead
            )
            budget_now = await self._on_time(job, budget)
            try:
                ours = await self.store.commit(job.delivery_id, self.owner)
            except RedisError as exc:
                raise SendTransient("network", "redis unavailable at commit") from exc
            if not ours:
                raise SendAbandoned()
            # Once more: the commit's round trip may have run late (see _claim_and_send).
            await self._on_time(job, budget_now, committed=True)

        return commit

    async def _on_time(
        self, job: DeliveryRequested, budget: _Budget, *, committed: bool = False
    ) -> _Budget:
        """Wait for the budget's moment; if already more than SEND_LATE_MAX_S past it, take a
        fresh budget (the one the request then goes on). `committed`: past the point of no
        return, so a notifier stopping meanwhile sends at once rather than give up.

        Sent late, a request could share a provider window with the requests budgeted after
        it, which leave on time. Called right before the point of no return, as that is when
        the provider counts it (for e-mail: the end of DATA, after connecting and RCPT).
        """
        await budget.sleep()
        for _ in range(LATE_REBUDGETS):
            # Bounded: when Redis itself answers slower than the tolerance, every budget looks
            # late; then the request goes, and a provider's 429 is handled as ever.
            if budget.late_s() <= SEND_LATE_MAX_S:
                break
            self.metrics.rate_limited.labels(job.channel, "late").inc()
            fresh = await self._rebudget(job, give_up_when_stopping=not committed)
            if fresh is None:
                break
            budget = fresh
            await budget.sleep()
        return budget

    def _grace_s(self, channel: MemberChannel) -> float:
        """How long a dead notifier's send may wait for its receipt; 0: never resent."""
        return self.settings.receipt_grace_s if channel in RECEIPT_CHANNELS else 0.0

    async def _judge_held(self, lease: _Lease, look: Claim) -> str:
        """Settle a job whose delivery another notifier marked in flight, or say to resend it.

        Returns the dead holder's token when it never reached its point of no return, or its
        grace is over without a receipt (the caller takes the marker over from exactly that
        holder and sends); "" when the job was settled or handed back here.
        """
        job = lease.job
        # Our own marker on a delivery we are not sending (the caller checked): a request of
        # ours that got no answer, or whose outcome Redis could not take. Judged like a
        # stopped notifier's, as only the receipt can tell whether the provider has it.
        mine = look.holder == self.owner
        if not mine and await self.redis.exists(alive_key(look.holder)):
            await lease.later(HELD_RETRY_S)  # another live notifier is sending it
            return ""
        why = "no answer from the provider" if mine else "notifier stopped mid-request"
        attempts = lease.attempts
        if look.receipt:
            # The provider reported on that message, so it did go out; the record step folds
            # the receipt in (a failure receipt makes it "undelivered").
            await self._record(
                lease,
                "delivered",
                detail=f"{why}; confirmed by the provider's receipt",
                attempts=attempts,
            )
            return ""
        if not look.committed:
            return look.holder  # it stopped before its point of no return: never sent
        grace = self._grace_s(job.channel)
        if grace <= 0 or look.age_s is None:
            # No receipt can ever settle it (Telegram, e-mail, grace off, or a marker from
            # before markers carried their time): a possible duplicate is the worse error.
            await self._record(lease, "unconfirmed", detail=why, attempts=attempts)
            return ""
        if look.age_s < grace:
            # Receipts follow an accepted request within seconds: look again soon, but not
            # past the end of the grace.
            await lease.later(max(0.1, min(RECEIPT_POLL_S, grace - look.age_s)))
            return ""
        return look.holder

    async def _ask_budget(self, job: DeliveryRequested) -> tuple[Grant, _Budget]:
        """One request for the job's budgets; the budget is meaningful only when allowed."""
        asked_at = time.monotonic()
        grant = await self.limiter.acquire(
            buckets_for(job, self.settings), job.priority, police_flag(job.channel)
        )
        return grant, _Budget(asked_at, time.monotonic(), grant.wait_s)

    async def _wait_for_budget(self, lease: _Lease) -> _Budget | None:
        """Take the rate budget, or None when the job was handed back.

        A job is handed back when only its chat's budget is short.
        """
        job = lease.job
        while True:
            grant, budget = await self._ask_budget(job)
            if grant.allowed:
                return budget
            self.metrics.rate_limited.labels(job.channel, grant.denied_by).inc()
            if grant.denied_by in ("chat", "group") and grant.wait_s > 0.5:
                # One busy chat must not hold up everyone else's messages.
                await lease.later(grant.wait_s)
                return None
            await asyncio.sleep(min(grant.wait_s, 1.0))
            if self._stopping.is_set():
                await lease.abandon()
                return None

    async def _rebudget(
        self, job: DeliveryRequested, *, give_up_when_stopping: bool = True
    ) -> _Budget | None:
        """A fresh budget for a request already under way: wait for it, whoever says no.

        When the notifier stops meanwhile: SendTransient, or None (go now) if not to give up.
        """
        while True:
            grant, budget = await self._ask_budget(job)
            if grant.allowed:
                return budget
            if self._stopping.is_set():
                if not give_up_when_stopping:
                    return None
                raise SendTransient("network", "notifier stopping")
            await asyncio.sleep(min(grant.wait_s, 1.0))

    async def _send(self, lease: _Lease, detail: str, budget: _Budget, woke_at: float) -> None:
        job = lease.job
        channel = job.channel
        attempts = lease.attempts
        sender = self.senders[channel]
        self.metrics.in_flight.labels(channel).inc()
        try:
            _observe(self.metrics.accept_to_provider, channel, job)
            outbound = OutboundMessage(
                delivery_id=job.delivery_id,
                channel=channel,
                address=job.address,
                text=job.text,
                subject=job.subject,
                in_session=job.in_session,
                commit=(
                    self._committer(job, budget, woke_at) if channel in ADAPTER_COMMITS else None
                ),
            )
            try:
                sent = await sender.send(outbound)
            except SendPermanent as exc:
                if exc.reason == "outside_window" and outbound.in_session:
                    # The 24-hour window closed since we looked: the template is allowed.
                    sent = await sender.send(dataclasses.replace(outbound, in_session=False))
                else:
                    raise
        except SendAbandoned:
            # Judged dead and taken over while we were slow: the other notifier sends it.
            log.warning("deliver %s: taken over by another notifier; not sent", channel)
            await lease.abandon()
        except SendTransient as exc:
            await self._transient(lease, exc)
        except SendPermanent as exc:
            await self._record(lease, "failed_permanent", detail=exc.reason, attempts=attempts)
        except Exception as exc:  # an adapter bug must not lose the job
            log.exception("deliver %s: unexpected %s", channel, type(exc).__name__)
            await self._transient(lease, SendTransient("network", type(exc).__name__))
        else:
            _observe(self.metrics.accept_to_delivery, channel, job)
            await self._record(
                lease,
                "delivered",
                detail=detail,
                provider_message_id=sent.provider_message_id,
                attempts=attempts,
            )
        finally:
            self.metrics.in_flight.labels(channel).dec()
            self.sending.discard(job.delivery_id)
            self.slots.release()

    async def _transient(self, lease: _Lease, exc: SendTransient) -> None:
        job = lease.job
        attempts = lease.attempts
        if exc.may_have_arrived and job.channel in RECEIPT_CHANNELS:
            await self._await_receipt(lease, exc)
            return
        try:
            await self.store.release(job.delivery_id, self.owner)
            if exc.reason == "rate_limited":
                self.metrics.throttled.labels(job.channel).inc()
                if exc.retry_after_s:
                    await self.limiter.penalise(
                        account_bucket(job.channel, self.settings), exc.retry_after_s
                    )
            if attempts >= self.settings.max_send_attempts:
                await self._record(
                    lease, "failed_transient", detail=f"gave up: {exc.reason}", attempts=attempts
                )
                return
        except RedisError:
            # The marker stays; the message comes back after ack_wait and sorts it out.
            await lease.abandon()
            return
        self.metrics.retries.labels(job.channel, exc.reason).inc()
        delay = retry_delay_s(attempts, exc.retry_after_s, self.settings)
        await lease.later(delay, attempted=True)

    async def _await_receipt(self, lease: _Lease, exc: SendTransient) -> None:
        """No answer, but the provider may have the message: sending it again now could be a
        second SMS. Keep our committed marker and look again: the receipt then settles it,
        or once the receipt grace is over without one it is sent again (see _judge_held)."""
        job = lease.job
        if lease.attempts >= self.settings.max_send_attempts:
            # Out of attempts: "unconfirmed" (cleared marker); a late receipt still turns it
            # into "delivered".
            await self._record(
                lease,
                "unconfirmed",
                detail=f"no answer from the provider ({exc.reason})",
                attempts=lease.attempts,
            )
            return
        self.metrics.retries.labels(job.channel, exc.reason).inc()
        await lease.later(RECEIPT_POLL_S, attempted=True)

    async def _record(
        self,
        lease: _Lease,
        outcome: Outcome,
        *,
        detail: str = "",
        provider_message_id: str = "",
        attempts: int = 1,
    ) -> None:
        job = lease.job
        attempt = DeliveryAttempted(
            alert_id=job.alert_id,
            recipient=job.recipient,
            group_id=job.group_id,
            member_id=job.member_id,
            channel=job.channel,
            outcome=outcome,
            detail=detail,
            attempted_at=utcnow(),
            provider_message_id=provider_message_id,
            attempts=max(1, attempts),
        )
        for pause in (0.2, 1.0, 3.0, None):
            try:
                if await self.store.record(attempt, inflight=inflight_key(job.delivery_id)):
                    self.metrics.deliveries.labels(job.channel, outcome).inc()
                    # Ids and the outcome only: never the address or the text.
                    log.log(
                        logging.DEBUG if outcome == "delivered" else logging.INFO,
                        "delivery %s",
                        outcome,
                        extra={
                            "delivery_id": job.delivery_id,
                            "channel": job.channel,
                            "attempts": attempt.attempts,
                        },
                    )
                break
            except RedisError:
                if pause is None:
                    # Unrecorded: leave the message unacked and the marker in place. Another
                    # notifier then waits while we live and, should we die, judges it like
                    # any dead notifier's marker (receipt, grace, "unconfirmed").
                    await lease.abandon()
                    return
                await asyncio.sleep(pause)
        await lease.done()


def _resend_detail(take_over_from: str, owner: str, committed: bool) -> str:
    """The outcome's detail for a send taken over from an earlier, unsettled request."""
    if not take_over_from:
        return ""
    if take_over_from != owner:
        return "sent again: a stopped notifier's request never reached the provider"
    if committed:
        return "sent again: the provider neither answered nor sent a receipt"
    return "sent again: an earlier request of ours never reached the provider"


async def _forever(loop: Callable[..., Awaitable[None]], *args: Any) -> None:
    """Run a worker loop; if a bug kills it, log and start it again rather than go quiet."""
    while True:
        try:
            await loop(*args)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivery loop failed; restarting in 1 s")
            await asyncio.sleep(1.0)


def retry_delay_s(attempts: int, retry_after_s: float | None, settings: NotifierSettings) -> float:
    """The provider's retry_after when it gave one, else exponential from retry_base_s, capped."""
    if retry_after_s is not None and retry_after_s > 0:
        return min(settings.retry_max_s, retry_after_s)
    return float(min(settings.retry_max_s, settings.retry_base_s * 2 ** max(0, attempts - 1)))


def _observe(histogram: Histogram, channel: str, job: DeliveryRequested) -> None:
    histogram.labels(channel).observe(max(0.0, time.time() - job.accepted_at.timestamp()))


async def _settle(step: Awaitable[None]) -> None:
    """Ack/nak/term; a lost connection here is harmless (JetStream redelivers)."""
    try:
        await step
    except (nats.errors.Error, OSError) as exc:
        log.warning("deliver: settle failed (%s); JetStream will redeliver", type(exc).__name__)
