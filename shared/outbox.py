"""Delivery outcomes, reach, receipts and the local outbox in Redis.

One Lua script records the outcome, counts it towards the alert's reach, clears the delivery's
in-flight marker and appends the outbox entry, atomically: the (alert, recipient) field is the
idempotency key, so a JetStream redelivery, or a notifier killed between two recipients, never
writes a second outcome (or message) for the same person. Provider receipts are folded into the
recorded outcome by a second script. A third claims a delivery right before its provider request
with an in-flight marker "<owner>|<claimed at, ms of Redis TIME>", and reports what a redelivered
job needs to judge a marker left by a dead notifier: its age and any receipt already in (see
delivery.py for the in-flight protocol).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from shared.autopipe import AutoPipeline
from shared.delivery_stats import BUCKET_TTL_S, TOTAL_KEY, minute_key, minute_of, stat_channel
from shared.schemas import DeliveryAttempted, delivery_id

OUTBOX = "ba:outbox"

# Receipt rules shared by the scripts below: a status only moves forward (sent < delivered <
# read); a failure receipt turns a sent message into "undelivered"; any sign of life, "queued"
# included (the provider has the message then), turns an "unconfirmed" send (notifier died
# mid-request) into "delivered". Reach counters follow.
_RECEIPT_LUA = """
local RANK = {accepted=0, queued=0, sending=0, sent=1, delivered=2, read=3}
local FAILED = {failed=true, undelivered=true}
-- Of two statuses of one message, the one that tells more: a failure, else the later step.
local function furthest(old, new)
  if not old then return new end
  if FAILED[old] then return old end
  if FAILED[new] then return new end
  if (RANK[new] or -1) > (RANK[old] or -1) then return new end
  return old
end
-- Ops counters (shared.delivery_stats): in the minute's bucket the outcome an alert's delivery
-- just took; in the totals the outcome it stands at now (moved from `replaced`, if any).
local function count_outcome(stats, channel, outcome, replaced)
  local field = channel .. '|' .. outcome
  -- A field's first count in a minute sets the bucket's expiry; later ones need not.
  if redis.call('HINCRBY', stats.minute, field, 1) == 1 then
    redis.call('EXPIRE', stats.minute, stats.ttl)
  end
  redis.call('HINCRBY', stats.total, field, 1)
  if replaced then redis.call('HINCRBY', stats.total, channel .. '|' .. replaced, -1) end
end
local function apply_receipt(outcomes, reach, recipient, status, stats)
  local raw = redis.call('HGET', outcomes, recipient)
  if not raw then return 0 end
  local o = cjson.decode(raw)
  local before = o['outcome']
  if FAILED[status] then
    if before == 'delivered' or before == 'unconfirmed' then o['outcome'] = 'undelivered' end
    o['receipt'] = status
  elseif RANK[status] ~= nil then
    local now_rank = RANK[o['receipt']] or -1
    if RANK[status] > now_rank and not FAILED[o['receipt']] then o['receipt'] = status end
    if before == 'unconfirmed' then o['outcome'] = 'delivered' end
  else
    return 0
  end
  redis.call('HSET', outcomes, recipient, cjson.encode(o))
  if o['outcome'] ~= before then
    redis.call('HINCRBY', reach, before, -1)
    redis.call('HINCRBY', reach, o['outcome'], 1)
    count_outcome(stats, o['channel'], o['outcome'], before)
  end
  return 1
end
"""

# KEYS: outcomes hash, outbox stream, reach hash, in-flight key, early receipts hash, stats
#       minute hash, stats totals hash
# ARGV: recipient, outcome JSON, ttl, outbox entry ("" for none), outbox max length, outcome,
#       stats channel, stats ttl
_RECORD_ONCE = (
    _RECEIPT_LUA
    + """
local stats = {minute=KEYS[6], total=KEYS[7], ttl=tonumber(ARGV[8])}
local existing = redis.call('HGET', KEYS[1], ARGV[1])
local replaced = nil
if existing then
  local old = cjson.decode(existing)
  if not (old['outcome'] == 'unconfirmed' and ARGV[6] == 'delivered') then
    return 0
  end
  -- A send we thought lost did complete (its worker was only slow): it was delivered.
  redis.call('HINCRBY', KEYS[3], 'unconfirmed', -1)
  replaced = 'unconfirmed'
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('HINCRBY', KEYS[3], ARGV[6], 1)
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
count_outcome(stats, ARGV[7], ARGV[6], replaced)
if KEYS[4] ~= '' then redis.call('DEL', KEYS[4]) end
if ARGV[4] ~= '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'entry', ARGV[4])
end
local early = redis.call('HGET', KEYS[5], ARGV[1])
if early then
  apply_receipt(KEYS[1], KEYS[3], ARGV[1], early, stats)
  redis.call('HDEL', KEYS[5], ARGV[1])
end
return 1
"""
)

# KEYS: outcomes hash, reach hash, early receipts hash, stats minute hash, stats totals hash
# ARGV: recipient, status, ttl, stats ttl
_RECEIPT = (
    _RECEIPT_LUA
    + """
local stats = {minute=KEYS[4], total=KEYS[5], ttl=tonumber(ARGV[4])}
if apply_receipt(KEYS[1], KEYS[2], ARGV[1], ARGV[2], stats) == 1 then return 1 end
local known = RANK[ARGV[2]] ~= nil or FAILED[ARGV[2]]
if known and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  -- The receipt beat our own record of the send: keep it until the outcome is written. The
  -- edge handles callbacks concurrently, so "delivered" may land before "sent": keep the
  -- furthest, not the last.
  local kept = furthest(redis.call('HGET', KEYS[3], ARGV[1]), ARGV[2])
  redis.call('HSET', KEYS[3], ARGV[1], kept)
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
  return 2
end
return 0
"""
)

# The in-flight marker is "<owner>|<ms>|p", ms from Redis TIME: one clock for every notifier,
# so a marker's age means the same to all of them; "<owner>|<ms>|c" once the owner passed the
# point after which the provider may have the message (see `commit`). Older markers are read
# conservatively: without a third field as committed, without "|" also of unknown age (-1).
_MARKER_LUA = """
local function parse_marker(raw)
  local sep = string.find(raw, '|', 1, true)
  if not sep then return raw, -1, true end
  local rest = string.sub(raw, sep + 1)
  local committed = true
  local sep2 = string.find(rest, '|', 1, true)
  if sep2 then
    committed = string.sub(rest, sep2 + 1) ~= 'p'
    rest = string.sub(rest, 1, sep2 - 1)
  end
  return string.sub(raw, 1, sep - 1), tonumber(rest) or -1, committed
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS: outcomes hash, in-flight key, early receipts hash
# ARGV: recipient, owner token ("" to look without claiming), ttl, dead owner to take over
#       from ("" for none), grace ms (-1: never by age), "uncommitted" to also take over a
#       marker never committed, whatever its age; "c" to set our marker committed at once
# Returns {state, holder, marker age ms (-1 unknown), early receipt status, committed 0/1}.
_CLAIM = (
    _MARKER_LUA
    + """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {'done', '', -1, '', 0} end
local receipt = redis.call('HGET', KEYS[3], ARGV[1]) or ''
local now = now_ms()
local raw = redis.call('GET', KEYS[2])
if raw then
  local holder, at, committed = parse_marker(raw)
  local age = -1
  if at >= 0 then age = math.max(0, now - at) end
  -- A take-over only from the very owner the caller found dead, and only while no receipt
  -- says the provider has the message: when it never got to its point of no return, or once
  -- its grace is over. Otherwise it looks again.
  local take = ARGV[4] ~= '' and holder == ARGV[4] and receipt == ''
  if take then
    local grace = tonumber(ARGV[5])
    take = (ARGV[6] == 'uncommitted' and not committed) or (grace >= 0 and age >= grace)
  end
  if ARGV[2] == '' or not (holder == ARGV[2] or take) then
    return {'held', holder, age, receipt, committed and 1 or 0}
  end
elseif ARGV[2] == '' then
  return {'free', '', -1, receipt, 0}
end
local stage = 'p'
if ARGV[7] == 'c' then stage = 'c' end
redis.call('SET', KEYS[2], ARGV[2] .. '|' .. now .. '|' .. stage, 'EX', tonumber(ARGV[3]))
return {'claimed', '', -1, receipt, 0}
"""
)

# KEYS: in-flight key; ARGV: owner token. Marks our marker committed: from here on the provider
# may have the message. 0 when the marker is no longer ours (taken over: do not send).
_COMMIT = (
    _MARKER_LUA
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local holder, at = parse_marker(raw)
if holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], holder .. '|' .. at .. '|c', 'KEEPTTL')
return 1
"""
)

# KEYS: in-flight key; ARGV: owner token. Clears the marker only if it is still ours: a
# notifier that was presumed dead and taken over must not clear its successor's marker.
_RELEASE = (
    _MARKER_LUA
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local holder = parse_marker(raw)
if holder ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""
)


@dataclass(frozen=True, slots=True)
class Claim:
    """What a claim (or a look) found.

    state: "done" (an outcome exists), "free" (no marker; only from `inspect`), "held" (another
    notifier's marker) or "claimed" (the marker is now ours). For "held": the holder's token and
    the marker's age in seconds (None when unknown). `receipt` is a provider status that came in
    before any outcome was recorded ("" when none). `committed`: the holder marked the point
    after which the provider may have the message (see `commit`).
    """

    state: str
    holder: str = ""
    age_s: float | None = None
    receipt: str = ""
    committed: bool = False


def outcomes_key(alert_id: str) -> str:
    """Hash of recipient -> DeliveryAttempted JSON for one alert."""
    return f"ba:outcomes:{alert_id}"


def reach_key(alert_id: str) -> str:
    """Hash of one alert's reach: planned recipients and a count per outcome."""
    return f"ba:reach:{alert_id}"


def inflight_key(delivery_id: str) -> str:
    """Set while a provider request for one delivery is under way; names its notifier."""
    return f"ba:inflight:{delivery_id}"


def _early_key(alert_id: str) -> str:
    return f"ba:receipts-early:{alert_id}"


class OutcomeStore:
    """Records exactly one outcome per (alert, recipient), with an optional outbox entry."""

    def __init__(self, redis: Redis, ttl_s: int, outbox_max_len: int = 100_000) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.outbox_max_len = outbox_max_len
        self._script = redis.register_script(_RECORD_ONCE)
        self._receipt = redis.register_script(_RECEIPT)
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)
        self._commit = redis.register_script(_COMMIT)
        # Outcomes of the alerts one fetch brought in are recorded in one pipeline.
        self._auto = AutoPipeline(redis)

    async def record(
        self,
        attempt: DeliveryAttempted,
        outbox_entry: dict[str, Any] | None = None,
        *,
        inflight: str = "",
    ) -> bool:
        """Store the outcome (and outbox entry); False when one was already recorded.

        The one exception: "delivered" replaces "unconfirmed" (the send did complete).
        `inflight` names the in-flight marker to clear in the same step.
        """
        entry = json.dumps(outbox_entry, ensure_ascii=False) if outbox_entry else ""
        written = await self._auto.script(
            self._script,
            [
                outcomes_key(attempt.alert_id),
                OUTBOX,
                reach_key(attempt.alert_id),
                inflight,
                _early_key(attempt.alert_id),
                minute_key(minute_of(time.time())),
                TOTAL_KEY,
            ],
            [
                attempt.recipient,
                attempt.model_dump_json(),
                self.ttl_s,
                entry,
                self.outbox_max_len,
                attempt.outcome,
                stat_channel(attempt.channel, attempt.recipient),
                BUCKET_TTL_S,
            ],
        )
        return bool(written)

    async def claim(
        self,
        alert_id: str,
        recipient: str,
        owner: str,
        *,
        take_over_from: str = "",
        grace_s: float | None = 0.0,
        only_uncommitted: bool = False,
        commit: bool = False,
    ) -> Claim:
        """Take a delivery right before its provider request.

        "done" when it already has an outcome, "held" when another notifier's marker is on
        it, "claimed" when it is ours to send now. With `take_over_from` (a holder found dead)
        the marker is taken over, but only if that same owner still holds it, no receipt for
        it has come in, and it is at least `grace_s` old (None: never by age) or, with
        `only_uncommitted`, was never committed; else "held" again. With `commit` our marker
        is committed at once (the request leaves right after: see `commit`).
        """
        return await self._run_claim(
            alert_id, recipient, owner, take_over_from, grace_s, only_uncommitted, commit
        )

    async def inspect(self, alert_id: str, recipient: str) -> Claim:
        """Look at a delivery without claiming it: "done", "free" or "held"."""
        return await self._run_claim(alert_id, recipient, "", "", 0.0, False, False)

    async def commit(self, delivery_id: str, owner: str) -> bool:
        """Mark our in-flight delivery as past its point of no return, right before it.

        False when the marker is no longer ours (another notifier took it over, judging us
        dead): then the message must not be sent.
        """
        return bool(await self._commit(keys=[inflight_key(delivery_id)], args=[owner]))

    async def _run_claim(
        self,
        alert_id: str,
        recipient: str,
        owner: str,
        take_over_from: str,
        grace_s: float | None,
        only_uncommitted: bool,
        commit: bool,
    ) -> Claim:
        did = delivery_id(alert_id, recipient)
        state, holder, age_ms, receipt, committed = await self._claim(
            keys=[outcomes_key(alert_id), inflight_key(did), _early_key(alert_id)],
            args=[
                recipient,
                owner,
                self.ttl_s,
                take_over_from,
                -1 if grace_s is None else int(grace_s * 1000),
                "uncommitted" if only_uncommitted else "",
                "c" if commit else "p",
            ],
        )
        age = int(age_ms)
        return Claim(
            state=_text(state),
            holder=_text(holder),
            age_s=age / 1000 if age >= 0 else None,
            receipt=_text(receipt),
            committed=bool(int(committed)),
        )

    async def release(self, delivery_id: str, owner: str) -> bool:
        """Clear our in-flight marker after a failed request that will be retried.

        False when the marker is gone or no longer ours (another notifier took it over).
        """
        return bool(await self._release(keys=[inflight_key(delivery_id)], args=[owner]))

    async def plan(self, alert_id: str, recipients: int) -> tuple[bool, set[str]]:
        """Record how many recipients an alert was meant to reach (True the first time), and
        who already has an outcome (a repeated fan-out skips them): one round trip."""
        reach = reach_key(alert_id)
        first, _, done = await self._auto.run(
            lambda pipe: (
                pipe.hsetnx(reach, "planned", recipients),
                pipe.expire(reach, self.ttl_s),
                pipe.hkeys(outcomes_key(alert_id)),
            )
        )
        return bool(first), {_text(k) for k in done}

    async def apply_receipt(self, alert_id: str, recipient: str, status: str) -> int:
        """Fold a provider status into the recorded outcome.

        1 applied, 2 kept until the outcome is recorded (receipt came first), 0 ignored.
        """
        return int(
            await self._receipt(
                keys=[
                    outcomes_key(alert_id),
                    reach_key(alert_id),
                    _early_key(alert_id),
                    minute_key(minute_of(time.time())),
                    TOTAL_KEY,
                ],
                args=[recipient, status.lower(), self.ttl_s, BUCKET_TTL_S],
            )
        )


async def read_outbox(redis: Redis, limit: int = 50) -> list[dict[str, Any]]:
    """Newest outbox entries first."""
    rows = await redis.xrevrange(OUTBOX, count=limit) or []
    out: list[dict[str, Any]] = []
    for entry_id, fields in rows:
        if not fields or entry_id is None:
            continue
        entry = json.loads(fields["entry"])
        entry["outbox_id"] = _text(entry_id)
        out.append(entry)
    return out


async def read_reach(redis: Redis, alert_id: str) -> dict[str, int]:
    """Planned recipients and the count of each outcome of one alert (empty when unknown)."""
    raw = await redis.hgetall(reach_key(alert_id))
    counts = {_text(k): int(v) for k, v in raw.items()}
    return {k: v for k, v in counts.items() if v or k == "planned"}


async def read_outcomes(redis: Redis, alert_id: str) -> list[DeliveryAttempted]:
    """Every recorded outcome of one alert."""
    raw = await redis.hgetall(outcomes_key(alert_id))
    return [DeliveryAttempted.model_validate_json(v) for v in raw.values()]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
