"""Fault suite: 10,000 alerts through crashes, restarts and provider errors; none lost or doubled.

`make fault` (outside `make test`). One run, on real servers and provider stubs:

- nats-server with JetStream (`sync_interval: always`, file store under the test's directory,
  restarted on the same port and store); redis-server with its append-only file
  (`appendfsync everysec`, the shipped default: a SIGTERM makes Redis write and fsync the file
  before it exits, and even a SIGKILL keeps every acknowledged write, which is in the kernel's
  page cache by then; only a machine crash could lose the last second, which `always` would
  close at one fsync per write);
- ingest, router and notifier as processes; Twilio, Telegram, WhatsApp and SMTP stubs, each its
  own process, told to answer a share of 429 (with retry-after) and 5xx (4xx for SMTP) all run;
- FAULT_GROUPS groups far apart, 1-3 members each over the four channels; FAULT_ALERTS resident
  reports at FAULT_RATE a second, round robin over the groups, each retried by the client
  (same Idempotency-Key) until the edge answers 202: only those count as accepted;
- a chaos schedule, paced by the share of alerts accepted: router SIGKILLed and restarted
  three times, notifier three times, nats-server and redis-server restarted once each.

Then every intended (alert, recipient) must have exactly one recorded outcome, and no recipient
may have got a message twice at the stubs. It prints and writes to
test-artifacts/fault-suite.json: "accepted N, delivered X, unconfirmed U, failed F, lost L,
duplicates D" (see tests/fault/accounting.py), and fails on L or D (or a misrouted or phantom
delivery), or when neither acceptances nor outcomes grow for FAULT_STALL_S seconds while work
is outstanding.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.addresses import normalise_address, recipient_key
from shared.outbox import inflight_key, outcomes_key
from shared.schemas import MemberChannel, delivery_id
from tests.fault.accounting import Pair, Tally, parse_token, tally, token
from tests.providers import (
    RemoteStubs,
    SmtpConfig,
    StubsConfig,
    TelegramConfig,
    TwilioConfig,
    WhatsAppConfig,
    spawn_stubs,
)
from tests.servers import NatsHandle, RedisHandle, System, running_redis_server

ALERTS = int(os.environ.get("FAULT_ALERTS", "10000"))
RATE = float(os.environ.get("FAULT_RATE", "40"))  # alerts posted per second
GROUPS = int(os.environ.get("FAULT_GROUPS", "100"))
STALL_S = float(os.environ.get("FAULT_STALL_S", "60"))
DRAIN_S = float(os.environ.get("FAULT_DRAIN_S", "900"))  # after the last post, at most

pytestmark = [pytest.mark.fault, pytest.mark.timeout(int(ALERTS / RATE + DRAIN_S + 600))]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
WA_SECRET = "whatsapp-app-secret-0123456789"
#: The members' channels, in turn: SMS the most used (residents without a smartphone).
CHANNEL_CYCLE: tuple[MemberChannel, ...] = (
    "sms",
    "whatsapp",
    "telegram",
    "sms",
    "email",
    "whatsapp",
    "sms",
    "telegram",
    "email",
    "sms",
)
#: (share of alerts accepted, action): spread over the run, one fault at a time.
CHAOS: tuple[tuple[float, str], ...] = (
    (0.06, "kill router"),
    (0.16, "kill notifier"),
    (0.27, "restart nats-server"),
    (0.38, "kill router"),
    (0.49, "kill notifier"),
    (0.60, "restart redis-server"),
    (0.72, "kill router"),
    (0.84, "kill notifier"),
)
#: How long a killed or stopped process stays down before it is started again.
DOWN_S = 1.0
#: Provider faults injected each second: (every n seconds, channel, status, retry_after).
FAULTS: tuple[tuple[int, MemberChannel, int, float | None], ...] = (
    (1, "sms", 503, None),
    (5, "sms", 429, 1.0),
    (1, "whatsapp", 500, None),
    (5, "whatsapp", 429, None),
    (2, "telegram", 502, None),
    (5, "telegram", 429, 1.0),
    (2, "email", 451, None),
)
POST_CONCURRENCY = 32
PROGRESS_EVERY_S = 10.0


class Stalled(AssertionError):
    """Neither acceptances nor outcomes grew for STALL_S seconds while work was outstanding."""


@dataclass(frozen=True)
class Member:
    """One member as the test knows it: where the stubs see it and its recipient key."""

    group: int
    channel: MemberChannel
    address: str
    rkey: str

    @property
    def stub_recipient(self) -> str:
        """The recipient as the provider stub records it."""
        return self.address.lstrip("+") if self.channel == "whatsapp" else self.address.lower()


@dataclass
class Run:
    """What the run saw, as it went."""

    run_id: str
    members: list[Member]
    accepted: dict[int, str] = field(default_factory=dict)  # alert index -> alert id
    refusals: Counter[str] = field(default_factory=Counter)  # posts answered other than 202
    events: list[dict[str, Any]] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)
    recorded: int = 0
    progress: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    by_group: dict[int, list[str]] = field(default_factory=dict)
    posted_at: float | None = None
    drained_at: float | None = None
    stalled: str = ""
    notifier_counters: Counter[str] = field(default_factory=Counter)  # summed over its lives

    def since(self, at: float | None = None) -> float:
        """Seconds since the run began (to `at`, else now)."""
        return round((time.monotonic() if at is None else at) - self.started, 1)

    def __post_init__(self) -> None:
        for m in self.members:
            self.by_group.setdefault(m.group, []).append(m.rkey)

    def intended(self, index: int) -> list[str]:
        """Recipient keys one alert is meant to reach: its group's members."""
        return self.by_group[index % GROUPS]


def group_square(k: int) -> dict[str, Any]:
    """Group k's area: a ~400 m square on a grid ~2 km apart (no neighbour rule reaches)."""
    lat, lon = group_point(k)
    d = 0.002
    ring = [[lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d], [lon - d, lat + d]]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def group_point(k: int) -> tuple[float, float]:
    """The centre of group k's square, in the Netherlands."""
    return 51.5 + (k // 10) * 0.02, 5.0 + (k % 10) * 0.03


def member_address(channel: MemberChannel, m: int) -> str:
    """A distinct, valid address for the m-th member."""
    return {
        "sms": f"+3161{m:07d}",
        "whatsapp": f"+3162{m:07d}",
        "telegram": str(200_000 + m),
        "email": f"lid{m}@example.nl",
    }[channel]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisHandle]:
    with running_redis_server(tmp_path) as handle:
        yield handle


@pytest.fixture
def stubs() -> Iterator[RemoteStubs]:
    config = StubsConfig(
        twilio=TwilioConfig(per_second=100),
        telegram=TelegramConfig(),  # Telegram's own limits: 30/s per bot, 1/s per chat
        whatsapp=WhatsAppConfig(per_second=80, app_secret=WA_SECRET),
        smtp=SmtpConfig(per_second=100),
    )
    with spawn_stubs(config) as running:
        yield running


@pytest.fixture
def system(
    tmp_path: Path, nats_server: NatsHandle, redis_server: RedisHandle, stubs: RemoteStubs
) -> Iterator[System]:
    sys_ = System(tmp_path, nats_server, redis_server.url)
    sys_.env()  # allocates the ports: the edge's URL is known before it starts
    edge = sys_.url("ingest")
    stubs.configure("whatsapp", webhook_url=f"{edge}/webhooks/whatsapp")
    sys_.extra_env.update(stubs.env())
    sys_.extra_env.update(
        {
            "BUURTALERT_PUBLIC_URL": edge,
            "WHATSAPP_APP_SECRET": WA_SECRET,
            "BUURTALERT_TWILIO_PER_SECOND": "100",
            "BUURTALERT_WHATSAPP_PER_SECOND": "80",
            "BUURTALERT_EMAIL_PER_SECOND": "100",
            "BUURTALERT_ACK_WAIT_S": "5",
            "BUURTALERT_RETRY_BASE_S": "0.2",
            "BUURTALERT_PROVIDER_TIMEOUT_S": "5",
            # Longer than a provider request plus its receipt's way back (the stubs post
            # receipts 50 ms after accepting), so a dead notifier's sent SMS is never resent.
            "BUURTALERT_RECEIPT_GRACE_S": "10",
            "BUURTALERT_LOG_LEVEL": "INFO",
        }
    )
    try:
        yield sys_
    finally:
        sys_.stop_all()


async def test_alerts_survive_crashes_restarts_and_provider_errors(
    system: System, redis_server: RedisHandle, stubs: RemoteStubs, tmp_path: Path
) -> None:
    await asyncio.to_thread(system.start_all)
    members = await asyncio.to_thread(create_groups, system)
    run = Run(run_id=uuid.uuid4().hex[:8], members=members)
    print(
        f"\nfault suite: {ALERTS} alerts at {RATE:g}/s over {GROUPS} groups, "
        f"{len(members)} members {dict(Counter(m.channel for m in members))}; work dir {tmp_path}"
    )
    redis = Redis.from_url(redis_server.url, socket_timeout=5, socket_connect_timeout=2)
    stop_faults = asyncio.Event()
    poster = asyncio.create_task(post_all(system, run))
    chaos = asyncio.create_task(run_chaos(system, redis_server, run))
    faults = asyncio.create_task(inject_faults(stubs, run, stop_faults))
    try:
        await watch(run, redis, poster, chaos)
    except Stalled as exc:
        run.stalled = str(exc)
    finally:
        stop_faults.set()
        for task in (poster, chaos):
            task.cancel()
        await asyncio.gather(poster, chaos, faults, return_exceptions=True)
    for task in (poster, chaos):
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error
    # A late second message (a retry after its outcome) would arrive now: wait, then count.
    await asyncio.sleep(5.0)
    add_counters(run.notifier_counters, await asyncio.to_thread(scrape_counters, system))
    result, report = await account(run, redis, stubs)
    await redis.aclose()
    write_report(report, tmp_path)
    print(json.dumps({k: report[k] for k in ("timings_s", "events", "refusals")}, indent=1))
    print(result.line())
    assert not run.stalled, run.stalled
    assert result.lost == 0, f"lost {result.lost}: {result.lost_examples}"
    assert result.duplicates == 0, f"duplicates {result.duplicates}: {result.duplicate_examples}"
    assert result.misrouted == 0, f"misrouted: {result.misrouted_examples}"
    assert result.phantom == 0, f"delivered but never received: {result.phantom_examples}"
    assert result.accepted == ALERTS
    # No provider limit exceeded, through every kill and restart.
    assert not report["limit_refusals"], report["limit_refusals"][:10]


def create_groups(system: System) -> list[Member]:
    """GROUPS groups with 1-3 members each, channels taken in turn."""
    members: list[Member] = []
    with system.client() as client:
        admin = system.admin_headers()
        for k in range(GROUPS):
            gid = f"fault-{k:03d}"
            body = {"id": gid, "name": f"Buurt {k}", "geometry": group_square(k)}
            resp = client.post("/v1/groups", headers=admin, json=body)
            assert resp.status_code == 201, resp.text
            for _ in range(1 + k % 3):
                m = len(members)
                channel = CHANNEL_CYCLE[m % len(CHANNEL_CYCLE)]
                address = normalise_address(channel, member_address(channel, m))
                resp = client.post(
                    f"/v1/groups/{gid}/members",
                    headers=admin,
                    json={"channel": channel, "address": address},
                )
                assert resp.status_code == 201, resp.text
                members.append(Member(k, channel, address, recipient_key(channel, address)))
    return members


async def post_all(system: System, run: Run) -> None:
    """Post ALERTS reports at RATE a second; each is retried until the edge accepts it."""
    slots = asyncio.Semaphore(POST_CONCURRENCY)
    tasks: set[asyncio.Task[None]] = set()
    limits = httpx.Limits(max_connections=POST_CONCURRENCY, max_keepalive_connections=16)
    async with httpx.AsyncClient(
        base_url=system.url("ingest"), timeout=15.0, limits=limits
    ) as client:
        next_at = time.monotonic()
        for i in range(ALERTS):
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await slots.acquire()
            # Steady: after a pause (slots all busy in an outage) no burst to catch up.
            next_at = max(next_at, time.monotonic() - 1.0 / RATE) + 1.0 / RATE
            task = asyncio.create_task(post_one(client, run, i, slots))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    run.posted_at = time.monotonic()


async def post_one(client: httpx.AsyncClient, run: Run, i: int, slots: asyncio.Semaphore) -> None:
    """One report, until 202; 503s and broken connections are retried with the same key."""
    lat, lon = group_point(i % GROUPS)
    body = {
        "text": f"Verdacht persoon loopt langs de garages ({token(run.run_id, i)})",
        "location": {"lat": lat, "lon": lon},
        "called_112": True,
    }
    headers = {"Idempotency-Key": f"{run.run_id}-{i}"}
    pause = 0.2
    try:
        while True:
            try:
                resp = await client.post("/v1/reports", json=body, headers=headers)
            except httpx.TransportError as exc:
                run.refusals[type(exc).__name__] += 1
            else:
                if resp.status_code == 202:
                    run.accepted[i] = resp.json()["alert_id"]
                    return
                run.refusals[str(resp.status_code)] += 1
                # Anything but "unavailable, retry" would be a bug in this test's request.
                assert resp.status_code in (429, 500, 502, 503, 504), resp.text
            await asyncio.sleep(pause)
            pause = min(2.0, pause * 2)
    finally:
        slots.release()


async def run_chaos(system: System, redis_server: RedisHandle, run: Run) -> None:
    """Each fault once its share of alerts is accepted; the process comes back before the next."""
    nats = system.nats

    def service(name: str) -> Callable[[], None]:
        def kill() -> None:
            if name == "notifier":
                add_counters(run.notifier_counters, scrape_counters(system))
            system.kill(name)

        return lambda: bounce(kill, lambda: system.start(name))

    actions: dict[str, Callable[[], None]] = {
        "kill router": service("router"),
        "kill notifier": service("notifier"),
        "restart nats-server": lambda: bounce(nats.stop, nats.start),
        "restart redis-server": lambda: bounce(redis_server.stop, redis_server.start),
    }
    for share, action in CHAOS:
        while True:
            if len(run.accepted) >= share * ALERTS:
                break
            await asyncio.sleep(0.2)
        began, accepted_before = time.monotonic(), len(run.accepted)
        await asyncio.to_thread(actions[action])
        event = {
            "action": action,
            "at_s": run.since(began),
            "accepted_before": accepted_before,
            "back_after_s": round(time.monotonic() - began, 1),
        }
        run.events.append(event)
        print(f"[{run.since():7.1f}s] chaos: {event}")


#: Notifier counters worth keeping across its restarts (each life starts them at zero).
COUNTERS = (
    "notifier_send_retries_total",
    "notifier_provider_throttled_total",
    "notifier_resent_after_crash_total",
    "notifier_deliveries_total",
)


def scrape_counters(system: System) -> Counter[str]:
    """The notifier's COUNTERS samples now ({} when it does not answer)."""
    try:
        text = httpx.get(system.url("notifier") + "/metrics", timeout=5.0).text
    except httpx.HTTPError:
        return Counter()
    found: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith(COUNTERS):
            name, _, value = line.rpartition(" ")
            found[name] += int(float(value))
    return found


def add_counters(total: Counter[str], more: Counter[str]) -> None:
    """Sum counter samples (Counter.update would drop nothing but reads less clearly)."""
    for name, value in more.items():
        total[name] += value


def bounce(down: Callable[[], None], up: Callable[[], None]) -> None:
    """Take a process down (SIGKILL or SIGTERM), wait DOWN_S, start it, wait until ready."""
    down()
    time.sleep(DOWN_S)
    up()


async def inject_faults(stubs: RemoteStubs, run: Run, stop: asyncio.Event) -> None:
    """Queue provider errors every second: a share of requests gets 429 or 5xx (SMTP 451).

    A channel's errors are queued only once the previous ones were answered: while nothing is
    sent (a notifier down) they would pile up and then hit one job's every retry in a row.
    """
    tick = 0
    while not stop.is_set():
        due = [rule for rule in FAULTS if tick % rule[0] == 0]
        for channel in {rule[1] for rule in due}:
            if await asyncio.to_thread(stubs.faults_pending, channel):
                run.injected[f"{channel}:skipped"] += 1
                continue
            for _, rule_channel, status, retry_after in due:
                if rule_channel == channel:
                    await asyncio.to_thread(stubs.fail_next, channel, 1, status, retry_after)
                    run.injected[f"{channel}:{status}"] += 1
        tick += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)


async def watch(
    run: Run, redis: Redis, poster: asyncio.Task[None], chaos: asyncio.Task[None]
) -> None:
    """Follow acceptances and outcomes until every intended pair has one; raise on a stall."""
    incomplete: dict[str, int] = {}  # alert id -> intended recipients, until all recorded
    seen: set[int] = set()
    complete = 0
    last_change = time.monotonic()
    last_figures = (-1, -1)
    last_print = 0.0
    while True:
        for task in (poster, chaos):
            if task.done() and task.exception() is not None:
                return
        for i, alert_id in list(run.accepted.items()):
            if i not in seen:
                seen.add(i)
                incomplete[alert_id] = len(run.intended(i))
        try:
            partial, finished = await count_outcomes(redis, incomplete)
        except RedisError:
            partial, finished = run.recorded - complete, []  # Redis restarting: look again
        for alert_id in finished:
            complete += incomplete.pop(alert_id)
        run.recorded = complete + partial
        intended = sum(len(run.intended(i)) for i in seen)
        now = time.monotonic()
        figures = (len(run.accepted), run.recorded)
        if figures != last_figures:
            last_figures, last_change = figures, now
        if now - last_print >= PROGRESS_EVERY_S:
            last_print = now
            sample = {
                "t_s": run.since(),
                "accepted": len(run.accepted),
                "recorded": run.recorded,
                "intended": intended,
                "refusals": sum(run.refusals.values()),
            }
            run.progress.append(sample)
            print(f"[{run.since():7.1f}s] {sample}")
        if poster.done() and chaos.done() and not incomplete:
            run.drained_at = now
            return
        if now - last_change > STALL_S:
            raise Stalled(
                f"no progress for {STALL_S:g}s at {run.since()}s: accepted {len(run.accepted)}"
                f"/{ALERTS}, outcomes {run.recorded}/{intended}, {len(incomplete)} alerts "
                f"incomplete, e.g. {sorted(incomplete)[:5]}"
            )
        if run.posted_at is not None and now - run.posted_at > DRAIN_S:
            raise Stalled(f"not drained {DRAIN_S:g}s after the last post")
        await asyncio.sleep(2.0)


async def count_outcomes(redis: Redis, incomplete: dict[str, int]) -> tuple[int, list[str]]:
    """Outcomes recorded for alerts not yet complete, and which of them are now complete."""
    partial = 0
    finished: list[str] = []
    ids = list(incomplete)
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        async with redis.pipeline(transaction=False) as pipe:
            for alert_id in chunk:
                pipe.hlen(outcomes_key(alert_id))
            counts = await pipe.execute()
        for alert_id, n in zip(chunk, counts, strict=True):
            if int(n) >= incomplete[alert_id]:
                finished.append(alert_id)
            else:
                partial += int(n)
    return partial, finished


async def account(run: Run, redis: Redis, stubs: RemoteStubs) -> tuple[Tally, dict[str, Any]]:
    """Reconcile intended pairs with recorded outcomes and the stubs' ledgers."""
    outcomes: dict[str, dict[str, str]] = {}
    records: dict[Pair, dict[str, Any]] = {}
    details: Counter[str] = Counter()
    ids = list(run.accepted.values())
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        async with redis.pipeline(transaction=False) as pipe:
            for alert_id in chunk:
                pipe.hgetall(outcomes_key(alert_id))
            rows = await pipe.execute()
        for alert_id, row in zip(chunk, rows, strict=True):
            recorded: dict[str, str] = {}
            for rkey, raw in row.items():
                attempt = json.loads(raw)
                recorded[_text(rkey)] = attempt["outcome"]
                records[(alert_id, _text(rkey))] = attempt
                if attempt.get("detail"):
                    details[f"{attempt['outcome']}: {attempt['detail']}"] += 1
            outcomes[alert_id] = recorded
    by_stub = {(m.channel, m.stub_recipient): m.rkey for m in run.members}
    received: Counter[Pair] = Counter()
    arrivals: dict[Pair, list[dict[str, Any]]] = {}
    unmatched = 0
    messages = await asyncio.to_thread(stubs.received)
    for msg in messages:
        index = parse_token(msg.text, run.run_id)
        accepted_as = run.accepted.get(index) if index is not None else None
        rkey = by_stub.get((msg.channel, msg.recipient.lower()))
        if accepted_as is None or rkey is None:
            unmatched += 1
            continue
        received[(accepted_as, rkey)] += 1
        arrivals.setdefault((accepted_as, rkey), []).append(
            {
                "arrived_s": round(msg.arrived_at - run.started, 3),
                "provider_id": msg.provider_id,
                "delivery_id": msg.delivery_id,
            }
        )
    intended = {alert_id: run.intended(i) for i, alert_id in run.accepted.items()}
    channel_of = {m.rkey: m.channel for m in run.members}
    result = tally(intended, outcomes, received, channel_of=channel_of, unmatched=unmatched)
    summary = await asyncio.to_thread(stubs.summary)
    index_of = {alert_id: i for i, alert_id in run.accepted.items()}
    suspects = [
        (kind, (pair[0], pair[1]))
        for kind, pairs in (
            ("duplicate", result.duplicate_examples),
            ("lost", result.lost_examples),
            ("phantom", result.phantom_examples),
            ("misrouted", result.misrouted_examples),
        )
        for pair in pairs
    ]
    evidence = []
    for kind, pair in suspects:
        marker = await redis.get(inflight_key(delivery_id(*pair)))
        evidence.append(
            {
                "kind": kind,
                "alert_id": pair[0],
                "alert_index": index_of.get(pair[0]),
                "recipient": pair[1],
                "channel": channel_of.get(pair[1]),
                "outcome": records.get(pair),
                "messages": arrivals.get(pair, []),
                "inflight_marker": None if marker is None else _text(marker),
            }
        )
    end = run.drained_at or time.monotonic()
    report: dict[str, Any] = {
        "result": result.as_json(),
        "stalled": run.stalled,
        "config": {
            "alerts": ALERTS,
            "rate_per_s": RATE,
            "groups": GROUPS,
            "members": dict(Counter(m.channel for m in run.members)),
            "stall_s": STALL_S,
            "chaos": [a for _, a in CHAOS],
            "down_s": DOWN_S,
            "redis_appendfsync": "everysec",
            "nats_sync_interval": "always",
        },
        "timings_s": {
            "posting": run.since(run.posted_at) if run.posted_at else None,
            "drained": run.since(run.drained_at) if run.drained_at else None,
            "drain_after_last_post": round(end - run.posted_at, 1) if run.posted_at else None,
            "total": run.since(),
        },
        "events": run.events,
        "refusals": dict(run.refusals),
        "faults_injected": dict(run.injected),
        "outcome_details": dict(details),
        "evidence": evidence,
        "notifier_counters": dict(sorted(run.notifier_counters.items())),
        "stubs": {
            key: summary.get(key)
            for key in (
                "requests_by_channel",
                "received_by_channel",
                "violations",
                "faults_pending",
                "callbacks",
            )
        },
        # When each refusal by a provider limit happened (seconds since the run began, as the
        # chaos events), and the admitted sends of that key around it.
        "limit_refusals": [
            {**item, "at": run.since(float(item["at"]))} for item in summary.get("refusals", [])
        ],
        "progress": run.progress,
    }
    return result, report


def write_report(report: dict[str, Any], workdir: Path) -> None:
    """test-artifacts/fault-suite.json, and the servers' and services' logs beside it (the
    evidence when something was lost; pytest's own temporary directories are pruned)."""
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "fault-suite.json").write_text(json.dumps(report, indent=2))
    logs = ARTIFACTS / "fault-suite-logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    for path in workdir.glob("*.log"):
        shutil.copy(path, logs / path.name)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
