"""The delivery's Redis scripts on a real redis-server: budgets, caps, claims, receipts."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from shared.outbox import OutcomeStore, read_outcomes, read_reach
from shared.ratelimit import Bucket, Limit, MultiLimiter, RecipientCap
from shared.schemas import DeliveryAttempted, Outcome, utcnow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def attempt(outcome: Outcome, recipient: str = "sms:aa", alert: str = "a1") -> DeliveryAttempted:
    return DeliveryAttempted(
        alert_id=alert, recipient=recipient, channel="sms", outcome=outcome, attempted_at=utcnow()
    )


async def marker(redis: Redis, key: str) -> str:
    """The raw in-flight marker ("" when there is none)."""
    raw = await redis.get(key)
    return raw.decode() if isinstance(raw, bytes) else str(raw or "")


async def test_buckets_are_taken_all_or_nothing(redis_url: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    limiter = MultiLimiter(redis)
    bot = Bucket("tg:account", Limit(5, 0.01), "account")
    chat = Bucket("tg:chat:x", Limit(1, 0.01), "chat")
    assert (await limiter.acquire([bot, chat], "resident", "tg:police")).allowed
    denied = await limiter.acquire([bot, chat], "resident", "tg:police")
    assert not denied.allowed
    assert denied.denied_by == "chat"
    assert denied.wait_s > 10
    # The chat said no, so the bot's token was not spent: another chat can go at once.
    other = Bucket("tg:chat:y", Limit(1, 0.01), "chat")
    assert (await limiter.acquire([bot, other], "resident", "tg:police")).allowed
    await redis.aclose()


async def test_police_pre_empts_residents_in_the_budget(redis_url: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    limiter = MultiLimiter(redis, flag_ttl_ms=300)
    account = Bucket("sms:account", Limit(1, 1000), "account")
    assert (await limiter.acquire([account], "police", "sms:police")).allowed
    await asyncio.sleep(0.01)
    blocked = await limiter.acquire([account], "resident", "sms:police")
    assert not blocked.allowed
    assert blocked.denied_by == "police"
    assert (await limiter.acquire([account], "police", "sms:police")).allowed
    await asyncio.sleep(0.35)  # police traffic over: residents go again
    assert (await limiter.acquire([account], "resident", "sms:police")).allowed
    await redis.aclose()


async def test_sends_are_spaced_at_the_planned_rate_across_clients(redis_url: str) -> None:
    clients = [Redis.from_url(redis_url, decode_responses=True) for _ in range(3)]
    limiters = [MultiLimiter(c) for c in clients]
    bucket = Bucket("wa:account", Limit(1, 50), "account")
    granted: list[float] = []

    async def worker(limiter: MultiLimiter) -> None:
        while len(granted) < 40:
            grant = await limiter.acquire([bucket], "resident", "wa:police")
            if grant.allowed:
                granted.append(time.monotonic())
            else:
                await asyncio.sleep(grant.wait_s)

    await asyncio.gather(*(worker(lim) for lim in limiters))
    granted.sort()
    # No one-second window may hold more than the rate (plus the one-token bucket).
    worst = max(sum(1 for t in granted if s <= t < s + 0.5) for s in granted)
    assert worst <= 26
    for c in clients:
        await c.aclose()


async def test_a_reservation_charges_every_bucket_at_the_moment_it_is_sent(
    redis_url: str,
) -> None:
    # Found by the fault suite: the bot's budget made a Telegram message wait 0.2 s, but its
    # chat's budget was charged at once, so the chat's next message went 1 s after "now",
    # only 0.8 s after the first actually left: over Telegram's 1 per second per chat.
    redis = Redis.from_url(redis_url, decode_responses=True)
    limiter = MultiLimiter(redis, max_reserve_s=1.0)
    bot = Bucket("tg:account", Limit(1, 5), "account")  # one every 0.2 s
    chat = Bucket("tg:chat:x", Limit(1, 1), "chat")  # one a second
    other = Bucket("tg:chat:y", Limit(1, 1), "chat")
    assert (await limiter.acquire([bot, other], "police", "tg:police")).allowed
    first = await limiter.acquire([bot, chat], "police", "tg:police")
    assert first.allowed
    assert 0.15 < first.wait_s <= 0.2  # the bot's: sent 0.2 s from now
    await asyncio.sleep(0.9)  # a second after "now", but only 0.7 s after that send
    second = await limiter.acquire([bot, chat], "police", "tg:police")
    assert not second.allowed or second.wait_s >= 0.25, second
    assert second.denied_by in ("chat", "")
    await redis.aclose()


async def test_penalise_honours_a_providers_retry_after(redis_url: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    limiter = MultiLimiter(redis)
    bucket = Bucket("tg:account", Limit(1, 100), "account")
    await limiter.penalise(bucket, 0.5)
    grant = await limiter.acquire([bucket], "police", "tg:police")
    assert not grant.allowed
    assert 0.4 < grant.wait_s <= 0.5
    await redis.aclose()


async def test_recipient_cap_is_a_sliding_window_and_idempotent_per_alert(redis_url: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    cap = RecipientCap(redis, per_hour=2)
    people = ["sms:p1", "sms:p2"]
    assert await cap.allow("a1", people) == set(people)
    assert await cap.allow("a1", people) == set(people)  # a redelivery asks again: same answer
    assert await cap.allow("a2", ["sms:p1"]) == {"sms:p1"}
    assert await cap.allow("a3", people) == {"sms:p2"}  # p1 had two this hour
    assert await cap.allow("a3", people) == {"sms:p2"}
    await redis.aclose()


async def test_claim_protocol_and_outcome_upgrades(redis_url: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    store = OutcomeStore(redis, ttl_s=3600)
    await store.plan("a1", 2)
    assert (await store.inspect("a1", "sms:aa")).state == "free"
    assert (await store.claim("a1", "sms:aa", "owner1")).state == "claimed"
    held = await store.claim("a1", "sms:aa", "owner2")
    assert (held.state, held.holder, held.receipt) == ("held", "owner1", "")
    # The first notifier died mid-request; the second records "unconfirmed", sends nothing.
    assert await store.record(attempt("unconfirmed"), inflight="ba:inflight:a1.sms:aa")
    assert await redis.exists("ba:inflight:a1.sms:aa") == 0
    assert (await store.claim("a1", "sms:aa", "owner2")).state == "done"
    assert (await store.inspect("a1", "sms:aa")).state == "done"
    # The slow first send did complete after all: "delivered" replaces "unconfirmed", once.
    assert await store.record(attempt("delivered"))
    assert not await store.record(attempt("delivered"))
    assert not await store.record(attempt("failed_permanent"))
    assert await read_reach(redis, "a1") == {"planned": 2, "delivered": 1}
    assert [o.outcome for o in await read_outcomes(redis, "a1")] == ["delivered"]
    await redis.aclose()


async def test_the_marker_carries_its_age_on_the_redis_clock(redis_url: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    store = OutcomeStore(redis, ttl_s=3600)
    assert (await store.claim("a3", "sms:bb", "owner1")).state == "claimed"
    owner, at_ms, stage = (await marker(redis, "ba:inflight:a3.sms:bb")).split("|")
    seconds, micros = await redis.time()
    assert (owner, stage) == ("owner1", "p")
    assert 0 <= seconds * 1000 + micros // 1000 - int(at_ms) < 1000
    await asyncio.sleep(0.3)
    look = await store.inspect("a3", "sms:bb")
    assert (look.state, look.holder) == ("held", "owner1")
    assert look.age_s is not None
    assert 0.25 <= look.age_s < 5, look
    # Looking claims nothing: the marker is unchanged.
    assert await marker(redis, "ba:inflight:a3.sms:bb") == f"owner1|{at_ms}|p"
    # A marker written before markers carried their time: holder known, age unknown.
    await redis.set("ba:inflight:a3.sms:old", "owner0")
    legacy = await store.inspect("a3", "sms:old")
    assert (legacy.state, legacy.holder, legacy.age_s) == ("held", "owner0", None)
    await redis.aclose()


async def test_take_over_only_from_the_same_dead_owner_after_its_grace(redis_url: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    store = OutcomeStore(redis, ttl_s=3600)
    key = "ba:inflight:a4.sms:cc"
    assert (await store.claim("a4", "sms:cc", "dead")).state == "claimed"
    # Within the grace: not yet, however dead the holder.
    young = await store.claim("a4", "sms:cc", "new", take_over_from="dead", grace_s=30)
    assert (young.state, young.holder) == ("held", "dead")
    # Named the wrong holder: no take-over even when old enough.
    other = await store.claim("a4", "sms:cc", "new", take_over_from="someone", grace_s=0)
    assert (other.state, other.holder) == ("held", "dead")
    assert (await marker(redis, key)).startswith("dead|")
    await asyncio.sleep(0.25)
    taken = await store.claim("a4", "sms:cc", "new", take_over_from="dead", grace_s=0.2)
    assert taken.state == "claimed"
    assert (await marker(redis, key)).startswith("new|")
    # A second notifier that judged the same dead owner loses: the marker is no longer its.
    late = await store.claim("a4", "sms:cc", "third", take_over_from="dead", grace_s=0)
    assert (late.state, late.holder) == ("held", "new")
    fresh = await store.inspect("a4", "sms:cc")
    assert fresh.age_s is not None
    assert fresh.age_s < 0.2  # the grace starts again
    # The presumed-dead owner cannot clear its successor's marker; the successor can.
    assert not await store.release("a4.sms:cc", "dead")
    assert await redis.exists(key) == 1
    assert await store.release("a4.sms:cc", "new")
    assert await redis.exists(key) == 0
    await redis.aclose()


async def test_an_uncommitted_marker_is_taken_over_at_once_a_committed_one_never(
    redis_url: str,
) -> None:
    """E-mail: a dead notifier that never reached DATA sent nothing; one that did may have."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    store = OutcomeStore(redis, ttl_s=3600)
    key = "ba:inflight:a7.email:ii"
    assert (await store.claim("a7", "email:ii", "dead")).state == "claimed"
    assert (await store.inspect("a7", "email:ii")).committed is False
    assert (await marker(redis, key)).endswith("|p")
    taken = await store.claim(
        "a7", "email:ii", "new", take_over_from="dead", grace_s=3600, only_uncommitted=True
    )
    assert taken.state == "claimed"  # at once: no grace needed
    # The presumed-dead owner wakes up: its commit fails, so it must not send.
    assert not await store.commit("a7.email:ii", "dead")
    assert await store.commit("a7.email:ii", "new")
    look = await store.inspect("a7", "email:ii")
    assert (look.state, look.holder, look.committed) == ("held", "new", True)
    assert (await marker(redis, key)).endswith("|c")
    assert 0 < await redis.ttl(key) <= 3600  # the commit keeps the marker's expiry
    # Committed, and no grace (no receipts on this channel): never taken over.
    kept = await store.claim(
        "a7", "email:ii", "third", take_over_from="new", grace_s=None, only_uncommitted=True
    )
    assert (kept.state, kept.holder, kept.committed) == ("held", "new", True)
    # An HTTP request leaves right after its claim: the claim can commit at once.
    at_once = await store.claim("a7", "telegram:ll", "dead", commit=True)
    assert at_once.state == "claimed"
    assert (await marker(redis, "ba:inflight:a7.telegram:ll")).endswith("|c")
    never = await store.claim(
        "a7", "telegram:ll", "new", take_over_from="dead", grace_s=None, only_uncommitted=True
    )
    assert (never.state, never.committed) == ("held", True)
    # A marker from before markers were committed counts as committed: it may have been sent.
    await redis.set("ba:inflight:a7.email:kk", "old|1700000000000")
    old = await store.claim(
        "a7", "email:kk", "new", take_over_from="old", grace_s=None, only_uncommitted=True
    )
    assert (old.state, old.committed) == ("held", True)
    # Without only_uncommitted the grace rule applies as before (SMS, WhatsApp).
    assert (await store.claim("a7", "sms:jj", "dead")).state == "claimed"
    assert await store.commit("a7.sms:jj", "dead")
    late = await store.claim("a7", "sms:jj", "new", take_over_from="dead", grace_s=0)
    assert late.state == "claimed"
    await redis.aclose()


async def test_an_early_receipt_is_seen_and_blocks_a_take_over(redis_url: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    store = OutcomeStore(redis, ttl_s=3600)
    await store.plan("a5", 3)
    for recipient in ("sms:dd", "sms:ee", "whatsapp:ff"):
        assert (await store.claim("a5", recipient, "dead")).state == "claimed"
    assert (await store.inspect("a5", "sms:dd")).receipt == ""
    # The dead notifier's request did reach Twilio: its callbacks come in before any outcome,
    # concurrently, so "delivered" may land first; the furthest status is kept.
    assert await store.apply_receipt("a5", "sms:dd", "delivered") == 2
    assert await store.apply_receipt("a5", "sms:dd", "sent") == 2
    assert await store.apply_receipt("a5", "sms:ee", "queued") == 2  # queued counts too
    assert await store.apply_receipt("a5", "whatsapp:ff", "failed") == 2
    assert await store.apply_receipt("a5", "whatsapp:ff", "sent") == 2  # a failure stays
    look = await store.inspect("a5", "sms:dd")
    assert (look.state, look.holder, look.receipt) == ("held", "dead", "delivered")
    assert (await store.inspect("a5", "sms:ee")).receipt == "queued"
    # With a receipt in, the marker is not taken over, however old.
    blocked = await store.claim("a5", "sms:dd", "new", take_over_from="dead", grace_s=0)
    assert (blocked.state, blocked.receipt) == ("held", "delivered")
    for recipient in ("sms:dd", "sms:ee", "whatsapp:ff"):
        key = f"ba:inflight:a5.{recipient}"
        assert await store.record(attempt("delivered", recipient, "a5"), inflight=key)
    by = {o.recipient: o for o in await read_outcomes(redis, "a5")}
    assert (by["sms:dd"].outcome, by["sms:dd"].receipt) == ("delivered", "delivered")
    assert (by["sms:ee"].outcome, by["sms:ee"].receipt) == ("delivered", "queued")
    assert (by["whatsapp:ff"].outcome, by["whatsapp:ff"].receipt) == ("undelivered", "failed")
    assert await redis.hlen("ba:receipts-early:a5") == 0
    assert await read_reach(redis, "a5") == {"planned": 3, "delivered": 2, "undelivered": 1}
    await redis.aclose()


async def test_receipts_move_forward_and_may_arrive_first(redis_url: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    store = OutcomeStore(redis, ttl_s=3600)
    await store.plan("a2", 3)
    # A receipt that beats our own record of the send is kept and applied on record.
    assert await store.apply_receipt("a2", "sms:early", "delivered") == 2
    assert await store.record(attempt("delivered", "sms:early", "a2"))
    assert await store.record(attempt("delivered", "sms:late", "a2"))
    assert await store.apply_receipt("a2", "sms:late", "read") == 1
    assert await store.apply_receipt("a2", "sms:late", "sent") == 1  # never moves back
    assert await store.record(attempt("unconfirmed", "sms:lost", "a2"))
    assert await store.apply_receipt("a2", "sms:lost", "queued") == 1  # it was sent after all
    assert await store.apply_receipt("a2", "sms:x", "bogus") == 0  # not a status we know
    by = {o.recipient: o for o in await read_outcomes(redis, "a2")}
    assert (by["sms:early"].outcome, by["sms:early"].receipt) == ("delivered", "delivered")
    assert (by["sms:late"].outcome, by["sms:late"].receipt) == ("delivered", "read")
    assert (by["sms:lost"].outcome, by["sms:lost"].receipt) == ("delivered", "queued")
    assert await store.apply_receipt("a2", "sms:late", "failed") == 1
    assert await store.apply_receipt("a2", "sms:lost", "undelivered") == 1
    reach = await read_reach(redis, "a2")
    assert reach == {"planned": 3, "delivered": 1, "undelivered": 2}, reach
    await redis.aclose()
