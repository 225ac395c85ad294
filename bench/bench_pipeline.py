"""Benchmark the whole pipeline against a raw nats-py baseline, on loopback.

Usage: python bench/bench_pipeline.py [--alerts N] [--rate R] [--duration S]

Starts its own nats-server (JetStream, sync_interval always) and redis-server on free ports in
a temporary directory, then:

1. baseline: raw nats-py in this process, three JetStream hops like the pipeline (publish with
   Nats-Msg-Id awaiting the PubAck -> pull consumer fetch(batch), republish, ack -> again ->
   final consumer records the receipt), at saturation;
2. pipeline: ingest, router and notifier as processes; one group with one member; N reports
   posted at a fixed concurrency (throughput, accept->delivery latency), then a paced run at a
   fixed rate (latency at that rate, and whether the system kept up).

Prints figures only: no timing is asserted. Exits 1 only when the run itself broke (an accepted
alert lost or delivered twice, a service that would not start). Every process it starts is
stopped again, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from redis.asyncio import Redis

# httpcore tries `import sniffio` for every lock it creates; when sniffio is not installed each
# failed import searches sys.path again (about a fifth of the client's CPU here). A None entry
# makes the import fail at once, and httpcore then assumes asyncio, which is what this is.
if importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]

# Run as a plain script from a checkout: make the repository importable.
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.lean_http import HttpError, LeanPool, lean_pool  # noqa: E402
from buurtalert import embedded  # noqa: E402
from shared.outbox import OUTBOX, outcomes_key  # noqa: E402

SERVICES = ("ingest", "router", "notifier")
ADMIN_KEY = "bench-admin-key-0123456789"
MSG_ID = "Nats-Msg-Id"
BENCH_ID = "Bench-Id"
# Stein centrum (README example) and a point inside it.
GROUP = {
    "id": "bench-stein-centrum",
    "name": "Stein centrum (bench)",
    "geometry": {
        "type": "Polygon",
        "coordinates": [
            [[5.76, 50.965], [5.775, 50.965], [5.775, 50.975], [5.76, 50.975], [5.76, 50.965]]
        ],
    },
}
MEMBER = {"channel": "sms", "address": "+31612345678"}
POINT = {"lat": 50.9697, "lon": 5.7667}
BASELINE_STREAM = "BENCH_BASELINE"
BASELINE_SUBJECTS = ("bench.v1.hop1", "bench.v1.hop2", "bench.v1.hop3")
# Provider credentials in the caller's environment would send real messages: never pass them on.
PROVIDER_ENV_PREFIXES = ("TWILIO_", "TELEGRAM_", "WHATSAPP_", "SMTP_")
WARMUP_ALERTS = 20
HTTP_ATTEMPTS = 3
#: Idempotency keys are unique per bench run.
RUN_ID = uuid.uuid4().hex[:12]


class BenchBroken(RuntimeError):
    """The run itself broke (not a slow figure): lost or duplicated messages, a dead process."""


# --------------------------------------------------------------------------- small helpers


def pct(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    data = sorted(values)
    if not data:
        return float("nan")
    rank = max(1, min(len(data), round(q / 100.0 * len(data) + 0.5)))
    return data[rank - 1]


def ms(seconds: float) -> str:
    """Seconds as a millisecond figure for the table."""
    return "-" if seconds != seconds else f"{seconds * 1000:.1f}"


def rate(count: int, seconds: float) -> float:
    """count per second, 0 for an empty interval."""
    return count / seconds if seconds > 0 else 0.0


def peak_rss_kib(pid: int) -> int | None:
    """VmHWM (peak resident set) of a live process, in KiB; None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def self_peak_rss_kib() -> int:
    """Peak resident set of this process (the client and the in-process baseline), KiB."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _term_as_interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes the Ctrl-C path: asyncio.run cancels its main task on SIGINT, and outside
    # a loop SIGINT raises KeyboardInterrupt; either way main()'s finally stops every process.
    signal.raise_signal(signal.SIGINT)


# --------------------------------------------------------------------------- processes


def _http_ready(url: str) -> Callable[[], bool]:
    return lambda: embedded.http_ok(url)


@dataclass
class Infra:
    """Every process this bench starts, so that all of them are stopped again."""

    workdir: Path
    log_level: str
    #: Set by --providers: the provider stubs' settings (the parent's own are never passed on).
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    stubs: Any = None  # tests.providers.RemoteStubs with --providers
    nats_url: str = ""
    redis_url: str = ""

    def start_servers(self) -> None:
        """nats-server with JetStream and redis-server on free loopback ports."""
        config = embedded.NatsConfig(
            port=embedded.free_port(),
            monitor_port=embedded.free_port(),
            store_dir=self.workdir / "nats-store",
            max_memory_store="64MB",
            max_file_store="2GB",
        )
        nats_log = self.workdir / "nats.log"
        self.procs["nats-server"] = embedded.start_nats(
            config, self.workdir / "nats.conf", nats_log
        )
        redis_port = embedded.free_port()
        redis_log = self.workdir / "redis.log"
        self.procs["redis-server"] = embedded.start_redis(
            redis_port, self.workdir / "redis-data", redis_log
        )
        embedded.wait_until(
            lambda: embedded.nats_ready(config.monitor_port),
            timeout_s=20,
            what="nats-server",
            proc=self.procs["nats-server"],
            log_path=nats_log,
        )
        embedded.wait_until(
            lambda: embedded.redis_ready(redis_port),
            timeout_s=20,
            what="redis-server",
            proc=self.procs["redis-server"],
            log_path=redis_log,
        )
        self.nats_url = f"nats://127.0.0.1:{config.port}"
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"

    def service_env(self) -> dict[str, str]:
        """Environment of the service processes (as tests/servers.py, minus provider creds)."""
        self.ports = {name: embedded.free_port() for name in SERVICES}
        env = embedded.child_env(
            {
                "BUURTALERT_ENV": "dev",
                "BUURTALERT_NATS_URL": self.nats_url,
                "BUURTALERT_REDIS_URL": self.redis_url,
                "BUURTALERT_DATA_DIR": str(self.workdir),
                "BUURTALERT_HTTP_PORT": str(self.ports["ingest"]),
                "BUURTALERT_ROUTER_PORT": str(self.ports["router"]),
                "BUURTALERT_NOTIFIER_PORT": str(self.ports["notifier"]),
                "BUURTALERT_ADMIN_KEYS": ADMIN_KEY,
                "BUURTALERT_DISPATCH_KEYS": "bench-dispatch-key-0123456789",
                "BUURTALERT_LOG_LEVEL": self.log_level,
                "BUURTALERT_LOG_JSON": "true",
                # One client on 127.0.0.1 sends everything: lift the abuse limits.
                "BUURTALERT_SOURCE_REQUESTS_PER_MINUTE": "100000000",
                "BUURTALERT_SOURCE_BURST": "1000000",
                # Every report is at one spot: measure per-report delivery, not incidents.
                "BUURTALERT_INCIDENT_RADIUS_M": "0",
                # One member receives every report: the hourly cap per person would stop it.
                "BUURTALERT_RESIDENT_ALERTS_PER_HOUR": "100000000",
            }
        )
        env = {k: v for k, v in env.items() if not k.startswith(PROVIDER_ENV_PREFIXES)}
        env.update(self.extra_env)
        return env

    def start_services(self) -> None:
        """Start ingest, router and notifier together; wait until each /readyz is 200."""
        env = self.service_env()
        for name in SERVICES:
            self.procs[name] = embedded.spawn(
                embedded.service_command(name),
                log_path=self.workdir / f"{name}.log",
                env=env,
                cwd=REPO,
            )
        for name in SERVICES:
            embedded.wait_until(
                _http_ready(f"{self.url(name)}/readyz"),
                timeout_s=60,
                what=name,
                proc=self.procs[name],
                log_path=self.workdir / f"{name}.log",
            )

    def url(self, name: str = "ingest") -> str:
        """Base URL of one service."""
        return f"http://127.0.0.1:{self.ports[name]}"

    def check_alive(self) -> None:
        """Fail loudly when a process this bench started has died."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise BenchBroken(
                    f"{name} exited with code {proc.returncode}; see {self.workdir}/{name}.log"
                )

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU time of every process so far (and of this bench process)."""
        ticks = os.sysconf("SC_CLK_TCK")
        out: dict[str, float] = {}
        for name, proc in self.procs.items():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{proc.pid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                out[name] = (int(fields[11]) + int(fields[12])) / ticks
        out["bench client"] = time.process_time()
        return out

    def peak_rss(self) -> dict[str, int | None]:
        """VmHWM of every process, KiB."""
        return {name: peak_rss_kib(proc.pid) for name, proc in self.procs.items()}

    def stop_all(self) -> None:
        """Services first (they drain), then the servers."""
        for name in reversed(list(self.procs)):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                embedded.stop(self.procs[name])
        self.procs.clear()


# --------------------------------------------------------------------------- baseline


@dataclass
class BaselineResult:
    """Raw nats-py, three JetStream hops in one process, at saturation or at a fixed rate."""

    sent: int = 0
    received: int = 0
    duplicates: int = 0
    publish_s: float = 0.0
    total_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    #: Paced runs: how far the sender fell behind its schedule at worst.
    max_behind_s: float = 0.0

    @property
    def throughput(self) -> float:
        """End to end: messages received at the last hop per second."""
        return rate(self.received, self.total_s)


def _bench_id(msg: Msg) -> str:
    return (msg.headers or {}).get(BENCH_ID, "")


async def _relay(
    sub: JetStreamContext.PullSubscription,
    js: JetStreamContext,
    subject: str,
    hop: int,
    batch: int,
    stop: asyncio.Event,
) -> None:
    """Fetch a batch, republish each (own msg id, PubAcks gathered), then ack each."""
    while not stop.is_set():
        try:
            msgs = await sub.fetch(batch, timeout=0.5)
        except nats.errors.TimeoutError:
            continue
        await asyncio.gather(
            *(
                js.publish(
                    subject,
                    m.data,
                    headers={MSG_ID: f"{_bench_id(m)}:{hop}", BENCH_ID: _bench_id(m)},
                )
                for m in msgs
            )
        )
        for m in msgs:
            await m.ack()


async def _sink(
    sub: JetStreamContext.PullSubscription,
    batch: int,
    received: dict[str, float],
    counts: Counter[str],
    sent: dict[str, float],
    published: asyncio.Event,
    caught_up: asyncio.Event,
    stop: asyncio.Event,
) -> None:
    """Record the first receipt time of every message, count repeats, ack."""
    while not stop.is_set():
        try:
            msgs = await sub.fetch(batch, timeout=0.5)
        except nats.errors.TimeoutError:
            continue
        now = time.perf_counter()
        for m in msgs:
            bid = _bench_id(m)
            counts[bid] += 1
            received.setdefault(bid, now)
            await m.ack()
        if published.is_set() and len(received) >= len(sent):
            caught_up.set()


async def run_baseline(
    nats_url: str,
    n: int,
    seconds: float,
    concurrency: int,
    batch: int,
    payload_bytes: int,
    timeout_s: float = 60.0,
    per_s: float | None = None,
) -> BaselineResult:
    """Three hops through JetStream: at saturation, N messages or `seconds` of publishing; or,
    with `per_s`, that many messages a second for `seconds` (at most `concurrency` in flight),
    for the latency at a given rate."""
    conns: list[NatsClient] = [await nats.connect(nats_url, connect_timeout=5) for _ in range(4)]
    pub_nc, hop1_nc, hop2_nc, sink_nc = conns
    admin = pub_nc.jetstream()
    await admin.add_stream(
        StreamConfig(
            name=BASELINE_STREAM,
            subjects=list(BASELINE_SUBJECTS),
            storage=StorageType.FILE,
            duplicate_window=120,
        )
    )
    stop, published, caught_up = asyncio.Event(), asyncio.Event(), asyncio.Event()
    received: dict[str, float] = {}
    counts: Counter[str] = Counter()
    sent: dict[str, float] = {}
    result = BaselineResult()
    tasks: list[asyncio.Task[None]] = []
    try:

        def consumer(durable: str) -> ConsumerConfig:
            return ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=30)

        hop1_js, hop2_js, sink_js = hop1_nc.jetstream(), hop2_nc.jetstream(), sink_nc.jetstream()
        sub1 = await hop1_js.pull_subscribe(
            BASELINE_SUBJECTS[0], "hop1", BASELINE_STREAM, consumer("hop1")
        )
        sub2 = await hop2_js.pull_subscribe(
            BASELINE_SUBJECTS[1], "hop2", BASELINE_STREAM, consumer("hop2")
        )
        sub3 = await sink_js.pull_subscribe(
            BASELINE_SUBJECTS[2], "sink", BASELINE_STREAM, consumer("sink")
        )
        tasks = [
            asyncio.create_task(_relay(sub1, hop1_js, BASELINE_SUBJECTS[1], 2, batch, stop)),
            asyncio.create_task(_relay(sub2, hop2_js, BASELINE_SUBJECTS[2], 3, batch, stop)),
            asyncio.create_task(
                _sink(sub3, batch, received, counts, sent, published, caught_up, stop)
            ),
        ]
        payload = json.dumps({"text": "x" * max(0, payload_bytes - 12)}).encode()
        numbers = iter(range(n))
        started = time.perf_counter()
        stop_publishing = started + seconds

        async def publisher() -> None:
            # Like the edge: one message at a time per worker, each awaiting its PubAck.
            for i in numbers:
                if time.perf_counter() > stop_publishing:
                    return
                bid = f"b{i}"
                sent[bid] = time.perf_counter()
                await admin.publish(
                    BASELINE_SUBJECTS[0], payload, headers={MSG_ID: bid, BENCH_ID: bid}
                )

        async def one(i: int, slots: asyncio.Semaphore) -> None:
            try:
                bid = f"b{i}"
                sent[bid] = time.perf_counter()
                await admin.publish(
                    BASELINE_SUBJECTS[0], payload, headers={MSG_ID: bid, BENCH_ID: bid}
                )
            finally:
                slots.release()

        async def paced_publisher(rate_per_s: float) -> None:
            # Like the paced run against the edge: on a fixed schedule, each awaiting its PubAck.
            slots = asyncio.Semaphore(concurrency)
            pending: set[asyncio.Task[None]] = set()
            for i in range(int(rate_per_s * seconds)):
                delay = started + i / rate_per_s - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await slots.acquire()
                result.max_behind_s = max(
                    result.max_behind_s, time.perf_counter() - (started + i / rate_per_s)
                )
                task = asyncio.create_task(one(i, slots))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.gather(*pending)

        if per_s is None:
            await asyncio.gather(*(publisher() for _ in range(concurrency)))
        else:
            await paced_publisher(per_s)
        result.publish_s = time.perf_counter() - started
        published.set()
        if len(received) >= len(sent):
            caught_up.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(caught_up.wait(), timeout=timeout_s)
        result.sent = len(sent)
        result.received = len(received)
        result.duplicates = sum(c - 1 for c in counts.values() if c > 1)
        if received:
            result.total_s = max(received.values()) - started
        result.latencies = [received[b] - sent[b] for b in received if b in sent]
        return result
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(nats.errors.Error):
            await admin.delete_stream(BASELINE_STREAM)
        for nc in conns:
            with contextlib.suppress(nats.errors.Error):
                await nc.close()


# --------------------------------------------------------------------------- pipeline


@dataclass
class Phase:
    """One load run against the edge and what became of each accepted alert."""

    name: str
    tag: str
    target_rate: float | None = None
    scheduled: int = 0
    sent_at: dict[str, float] = field(default_factory=dict)  # alert_id -> wall time of POST
    http_s: list[float] = field(default_factory=list)  # POST -> 202
    errors: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    first_send: float = float("inf")
    last_accept: float = 0.0
    max_behind_s: float = 0.0
    drained: bool = False
    #: Accepted but routed to nobody (outcome "no_recipients"); expected only in the probe.
    unmatched: set[str] = field(default_factory=set)
    unmatched_expected: bool = False

    @property
    def accepted(self) -> int:
        """Alerts the edge answered 202 for."""
        return len(self.sent_at)

    @property
    def accepted_per_s(self) -> float:
        """202s per second, from the first POST to the last 202."""
        return rate(self.accepted, self.last_accept - self.first_send)


@dataclass
class Outbox:
    """Reads ba:outbox incrementally; first delivery time and entry count per alert id."""

    redis: Redis
    last_id: str = ""
    delivered_at: dict[str, float] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    entries: int = 0

    async def read_new(self) -> int:
        """Read entries added since the last call; how many there were."""
        low = f"({self.last_id}" if self.last_id else "-"
        rows = await self.redis.xrange(OUTBOX, min=low, max="+", count=5000) or []
        for entry_id, fields in rows:
            if entry_id is None or not fields:
                continue
            self.last_id = _text(entry_id)
            self.entries += 1
            entry: dict[str, Any] = json.loads(fields["entry"])
            alert_id = str(entry["alert_id"])
            self.counts[alert_id] += 1
            when = datetime.fromisoformat(entry["delivered_at"]).timestamp()
            self.delivered_at.setdefault(alert_id, when)
        return len(rows)

    async def wait_for(self, alert_ids: Iterable[str], timeout_s: float, stall_s: float) -> bool:
        """Until every id has arrived; gives up at timeout_s, or after stall_s without progress."""
        missing = set(alert_ids) - self.delivered_at.keys()
        deadline = time.monotonic() + timeout_s
        last_progress = time.monotonic()
        while missing:
            now = time.monotonic()
            if now > deadline or now - last_progress > stall_s:
                return False
            if await self.read_new():
                last_progress = time.monotonic()
                missing -= self.delivered_at.keys()
            else:
                await asyncio.sleep(0.05)
        return True


@dataclass
class Outcomes(Outbox):
    """--providers: the notifier's recorded outcome per alert (the provider stub accepted it).

    `delivered_at` is when the notifier recorded the provider's acceptance (wall clock, same
    machine); duplicates at the provider are counted by the stub itself.
    """

    watching: set[str] = field(default_factory=set)

    async def read_new(self) -> int:
        """Look up the outcomes of alerts not delivered yet; how many arrived."""
        ids = [a for a in self.watching if a not in self.delivered_at]
        arrived = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            pipe = self.redis.pipeline(transaction=False)
            for alert_id in chunk:
                pipe.hvals(outcomes_key(alert_id))
            for alert_id, values in zip(chunk, await pipe.execute(), strict=True):
                for value in values:
                    outcome = json.loads(value)
                    if outcome["outcome"] != "delivered":
                        continue
                    self.counts[alert_id] += 1
                    when = datetime.fromisoformat(outcome["attempted_at"]).timestamp()
                    self.delivered_at.setdefault(alert_id, when)
                    arrived += 1
        return arrived

    async def wait_for(self, alert_ids: Iterable[str], timeout_s: float, stall_s: float) -> bool:
        """As Outbox.wait_for, watching these alerts' outcomes."""
        self.watching.update(alert_ids)
        return await super().wait_for(alert_ids, timeout_s, stall_s)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def report_body(i: int) -> dict[str, Any]:
    """A resident report inside the bench group."""
    return {
        "text": f"Bench {i}: man probeert fietsen te openen bij de kerk, rode jas",
        "location": POINT,
        "called_112": True,
    }


async def post_report(pool: LeanPool, i: int, phase: Phase) -> None:
    """POST one report; record send time by alert id, or the error."""
    sent_wall = time.time()
    started = time.perf_counter()
    phase.first_send = min(phase.first_send, sent_wall)
    # A broken exchange leaves it open whether the edge stored the alert; the Idempotency-Key
    # makes the retry safe (same alert id, JetStream de-duplicates), as for any real client.
    headers = {"Idempotency-Key": f"{RUN_ID}-{phase.tag}-{i}"}
    for attempt in range(1, HTTP_ATTEMPTS + 1):
        try:
            resp = await pool.post_json("/v1/reports", report_body(i), headers)
            break
        except HttpError as exc:
            if attempt == HTTP_ATTEMPTS:
                phase.errors[f"HTTP exchange broke off ({exc})"] += 1
                return
            phase.retries[str(exc)] += 1
    if resp.status == 202:
        phase.http_s.append(time.perf_counter() - started)
        phase.sent_at[str(resp.json()["alert_id"])] = sent_wall
        phase.last_accept = max(phase.last_accept, time.time())
    else:
        phase.errors[f"HTTP {resp.status}"] += 1


async def saturate(base_url: str, n: int, concurrency: int, phase: Phase) -> None:
    """N reports, `concurrency` at a time, as fast as the edge answers."""
    phase.scheduled = n
    numbers = iter(range(n))
    async with lean_pool(base_url, concurrency) as pool:

        async def worker() -> None:
            for i in numbers:
                await post_report(pool, i, phase)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def paced(
    base_url: str, per_s: float, duration_s: float, max_in_flight: int, phase: Phase
) -> None:
    """per_s reports a second for duration_s; stops scheduling at 2x duration if behind."""
    total = int(per_s * duration_s)
    phase.scheduled = total
    phase.target_rate = per_s
    slots = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()
    async with lean_pool(base_url, max_in_flight) as pool:

        async def one(i: int) -> None:
            try:
                await post_report(pool, i, phase)
            finally:
                slots.release()

        start = time.perf_counter() + 0.05
        give_up = start + 2 * duration_s + 2
        launched = 0
        while launched < total:
            now = time.perf_counter()
            if now > give_up:
                phase.errors["not sent (sender fell behind)"] += total - launched
                break
            due = min(total, int((now - start) * per_s) + 1) if now >= start else 0
            while launched < due:
                await slots.acquire()
                phase.max_behind_s = max(
                    phase.max_behind_s, time.perf_counter() - (start + launched / per_s)
                )
                task = asyncio.create_task(one(launched))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                launched += 1
            next_due = start + launched / per_s
            await asyncio.sleep(max(0.0, next_due - time.perf_counter()))
        await asyncio.gather(*tasks)


async def setup_group(base_url: str) -> None:
    """One group with its own polygon and one SMS member (no credentials: the outbox)."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0, headers=headers) as client:
        resp = await client.post("/v1/groups", json=GROUP)
        if resp.status_code not in (200, 201):
            raise BenchBroken(f"POST /v1/groups: {resp.status_code} {resp.text}")
        resp = await client.post(f"/v1/groups/{GROUP['id']}/members", json=MEMBER)
        if resp.status_code != 201:
            raise BenchBroken(f"POST members: {resp.status_code} {resp.text}")


async def probe_routing(base_url: str, outbox: Outbox, phase: Phase, timeout_s: float = 20) -> None:
    """One report at a time until one is delivered: the router has picked up the new group.

    Routers re-read the registry within 0.25 s of a change, so a report posted right after the
    group was created may be routed to nobody; that is by design, not a lost alert.
    """
    deadline = time.monotonic() + timeout_s
    async with lean_pool(base_url, 1) as pool:
        for i in itertools.count():
            if time.monotonic() > deadline:
                break
            await post_report(pool, i, phase)
            if phase.sent_at and await outbox.wait_for(
                list(phase.sent_at)[-1:], timeout_s=2, stall_s=2
            ):
                return
    raise BenchBroken(f"no report reached the outbox within {timeout_s:.0f}s of creating the group")


@dataclass
class PipelineResult:
    """The phases of the pipeline run and the outbox as read at the end."""

    probe: Phase
    warmup: Phase
    saturation: Phase
    paced: Phase
    outbox: Outbox
    saturation_delivered_s: float = 0.0
    #: CPU seconds each process spent during the saturation run (until all were delivered).
    saturation_cpu: dict[str, float] = field(default_factory=dict)

    @property
    def phases(self) -> tuple[Phase, ...]:
        """Every phase, in the order they ran."""
        return (self.probe, self.warmup, self.saturation, self.paced)


async def run_pipeline(infra: Infra, args: argparse.Namespace) -> PipelineResult:
    """Warm-up, saturation and paced runs; waits for every accepted alert in the outbox."""
    base = infra.url("ingest")
    await setup_group(base)
    redis = Redis.from_url(infra.redis_url, decode_responses=True)
    try:
        outbox = Outcomes(redis) if args.providers else Outbox(redis)
        wait_s = max(60.0, args.alerts / 50.0)

        probe = Phase("probe (router sees the new group)", "probe", unmatched_expected=True)
        await probe_routing(base, outbox, probe)
        warmup = Phase("warm-up", "warmup")
        await saturate(base, WARMUP_ALERTS, 4, warmup)
        await outbox.wait_for(warmup.sent_at, timeout_s=30, stall_s=15)
        infra.check_alive()

        sat = Phase(f"saturation, {args.concurrency} concurrent", "saturation")
        cpu_before = infra.cpu_seconds()
        await saturate(base, args.alerts, args.concurrency, sat)
        sat.drained = await outbox.wait_for(sat.sent_at, timeout_s=wait_s, stall_s=15)
        cpu_after = infra.cpu_seconds()
        infra.check_alive()

        pace = Phase(f"paced {args.rate:g}/s for {args.duration:g}s", "paced")
        await paced(base, args.rate, args.duration, args.max_in_flight, pace)
        pace.drained = await outbox.wait_for(pace.sent_at, timeout_s=wait_s, stall_s=15)
        infra.check_alive()

        # Late duplicates (a redelivery) would land after the first copy: one more look.
        await asyncio.sleep(0.5)
        while await outbox.read_new():
            pass
        result = PipelineResult(probe, warmup, sat, pace, outbox)
        result.saturation_cpu = {
            name: cpu_after[name] - cpu_before[name] for name in cpu_after if name in cpu_before
        }
        for phase in result.phases:
            for alert_id in phase.sent_at.keys() - outbox.delivered_at.keys():
                if await redis.hexists(outcomes_key(alert_id), "-"):
                    phase.unmatched.add(alert_id)
        times = [outbox.delivered_at[a] for a in sat.sent_at if a in outbox.delivered_at]
        if times:
            result.saturation_delivered_s = max(times) - sat.first_send
        return result
    finally:
        await redis.aclose()


# --------------------------------------------------------------------------- report


def latencies(phase: Phase, outbox: Outbox) -> list[float]:
    """Accept->delivery: the outbox entry's delivered_at minus the time the POST was sent."""
    return [
        outbox.delivered_at[a] - t for a, t in phase.sent_at.items() if a in outbox.delivered_at
    ]


def exactly_once(phase: Phase, outbox: Outbox) -> tuple[int, int, int]:
    """(delivered exactly once, missing, delivered more than once) for a phase's alerts."""
    once = sum(1 for a in phase.sent_at if outbox.counts[a] == 1)
    missing = sum(1 for a in phase.sent_at if outbox.counts[a] == 0)
    return once, missing, phase.accepted - once - missing


def kept_up(phase: Phase, outbox: Outbox) -> tuple[bool, float]:
    """Whether the paced run kept up, and how long delivery ran on after the last 202."""
    times = [outbox.delivered_at[a] for a in phase.sent_at if a in outbox.delivered_at]
    drain = (max(times) - phase.last_accept) if times else float("inf")
    ok = (
        phase.drained
        and not phase.errors
        and phase.accepted == phase.scheduled
        and phase.max_behind_s < 0.5
        and drain < 1.0
    )
    return ok, drain


def print_report(
    args: argparse.Namespace,
    bases: tuple[BaselineResult, BaselineResult],
    base_paced: BaselineResult,
    pipe: PipelineResult,
    rss: dict[str, int | None],
) -> list[str]:
    """Print the table; return the problems that mean the run broke."""
    out = pipe.outbox
    sat, pace = pipe.saturation, pipe.paced
    sat_lat, pace_lat = latencies(sat, out), latencies(pace, out)
    delivered_per_s = rate(
        sum(1 for a in sat.sent_at if a in out.delivered_at), pipe.saturation_delivered_s
    )
    load = os.getloadavg()
    print()
    print(
        f"buurtalert pipeline benchmark — loopback, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        "nats-server with sync_interval: always (as `make run`), file streams"
    )
    print(
        "(the client, the in-process baseline, the servers and the services share the CPUs; "
        "figures are noisy when anything else runs)"
    )
    print()
    row = "{:<60} {:>7} {:>7} {:>11} {:>9} {:>9} {:>9}"

    def latency_row(label: str, sent: int, ok: int, per_s: str, seconds: list[float]) -> None:
        print(
            row.format(
                label,
                sent,
                ok,
                per_s,
                ms(pct(seconds, 50)),
                ms(pct(seconds, 99)),
                ms(max(seconds, default=float("nan"))),
            )
        )

    print(row.format("run", "sent", "ok", "per second", "p50 ms", "p99 ms", "max ms"))
    print("-" * 117)
    for when, base in zip(("before", "after"), bases, strict=True):
        latency_row(
            f"baseline {when}: raw nats-py, 3 JetStream hops (batch {args.batch})",
            base.sent,
            base.received,
            f"{base.throughput:,.0f}",
            base.latencies,
        )
        print(
            row.format(
                "  of which publishing alone (PubAck awaited)",
                base.sent,
                base.sent,
                f"{rate(base.sent, base.publish_s):,.0f}",
                "",
                "",
                "",
            )
        )
    latency_row(
        f"baseline paced {args.rate:g}/s for {args.duration:g}s",
        base_paced.sent,
        base_paced.received,
        f"{rate(base_paced.sent, base_paced.publish_s):,.0f}",
        base_paced.latencies,
    )
    latency_row(
        f"pipeline {sat.name}: POST -> 202",
        sat.scheduled,
        sat.accepted,
        f"{sat.accepted_per_s:,.0f}",
        sat.http_s,
    )
    latency_row(
        "  POST -> outbox (accept -> delivery)",
        sat.accepted,
        len(sat_lat),
        f"{delivered_per_s:,.0f}",
        sat_lat,
    )
    latency_row(
        f"pipeline {pace.name}: POST -> 202",
        pace.scheduled,
        pace.accepted,
        f"{pace.accepted_per_s:,.0f}",
        pace.http_s,
    )
    latency_row(
        "  POST -> outbox (accept -> delivery)",
        pace.accepted,
        len(pace_lat),
        "",
        pace_lat,
    )
    print()
    base_mean = sum(b.throughput for b in bases) / len(bases)
    if base_mean > 0 and all(b.throughput > 0 for b in bases):
        low, high = sorted(delivered_per_s / b.throughput for b in bases)
        print(
            f"ratio pipeline/baseline: delivered {delivered_per_s / base_mean:.3f}, "
            f"accepted {sat.accepted_per_s / base_mean:.3f}  "
            f"({delivered_per_s:,.0f} and {sat.accepted_per_s:,.0f} vs the baselines' mean "
            f"{base_mean:,.0f} msg/s; delivered against each baseline {low:.3f} to {high:.3f})"
        )
    base_drain = base_paced.total_s - base_paced.publish_s
    print(
        f"baseline paced run kept up: "
        f"{'yes' if base_paced.max_behind_s < 0.5 and base_drain < 1.0 else 'NO'}  (target "
        f"{args.rate:g}/s, published {base_paced.sent} at "
        f"{rate(base_paced.sent, base_paced.publish_s):,.0f}/s, sender at most "
        f"{base_paced.max_behind_s * 1000:.0f} ms behind schedule, last receipt "
        f"{base_drain * 1000:.0f} ms after the last PubAck)"
    )
    ok, drain = kept_up(pace, out)
    print(
        f"paced run kept up: {'yes' if ok else 'NO'}  (target {args.rate:g}/s, accepted "
        f"{pace.accepted}/{pace.scheduled} at {pace.accepted_per_s:,.0f}/s, sender at most "
        f"{pace.max_behind_s * 1000:.0f} ms behind schedule, last delivery "
        f"{drain * 1000:.0f} ms after the last 202)"
    )
    print()
    print(
        "peak RSS (VmHWM): "
        + ", ".join(
            f"{name} {'?' if kib is None else f'{kib / 1024:.0f} MiB'}" for name, kib in rss.items()
        )
        + f", bench process (client + baseline) {self_peak_rss_kib() / 1024:.0f} MiB"
    )
    print()

    cpu = pipe.saturation_cpu
    if cpu and sat.accepted:
        print(
            f"CPU per alert in the saturation run ({sum(cpu.values()):.1f} CPU-s for "
            f"{sat.accepted} alerts): "
            + ", ".join(f"{name} {sec / sat.accepted * 1000:.2f} ms" for name, sec in cpu.items())
        )
    print()

    problems: list[str] = []
    print("exactly once (outbox entries per accepted alert_id):")
    for phase in pipe.phases:
        once, missing, dup = exactly_once(phase, out)
        unmatched = len(phase.unmatched)
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(phase.errors.items())) or "none"
        if phase.retries:
            errors += (
                " (retried: "
                + ", ".join(f"{k}: {v}" for k, v in sorted(phase.retries.items()))
                + ")"
            )
        print(
            f"  {phase.name:<36} accepted {phase.accepted:>6}  once {once:>6}  "
            f"missing {missing:>4} (routed to nobody {unmatched})  duplicated {dup:>4}  "
            f"not accepted: {errors}"
        )
        lost = missing - unmatched if phase.unmatched_expected else missing
        if lost:
            problems.append(f"{phase.name}: {lost} accepted alerts never reached the outbox")
        if dup:
            problems.append(f"{phase.name}: {dup} alerts delivered more than once")
        if phase.scheduled and not phase.accepted:
            problems.append(f"{phase.name}: no report was accepted")
    if pipe.probe.unmatched:
        print(
            "  (the probe's alerts routed to nobody were posted before the router re-read the "
            "registry after the group was created: by design, not lost)"
        )
    ours = set().union(*(phase.sent_at for phase in pipe.phases))
    strangers = sum(c for a, c in out.counts.items() if a not in ours)
    print(f"  outbox entries in total {out.entries}, for alerts not accepted here {strangers}")
    runs = (("baseline before", bases[0]), ("baseline paced", base_paced))
    runs += (("baseline after", bases[1]),)
    for name, b in runs:
        print(f"  {name}: sent {b.sent}, received {b.received}, redelivered {b.duplicates}")
    for name, b in runs:
        if b.received < b.sent:
            problems.append(f"{name}: {b.sent - b.received} messages not received")
    if strangers:
        problems.append(f"{strangers} outbox entries for alerts this bench did not get a 202 for")
    return problems


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--alerts", type=int, default=3000, help="reports in the saturation run")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight (saturation)")
    p.add_argument("--rate", type=float, default=200.0, help="reports per second (paced run)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of the paced run")
    p.add_argument("--max-in-flight", type=int, default=256, help="cap in the paced run")
    p.add_argument("--baseline-msgs", type=int, default=20000, help="baseline messages, at most")
    p.add_argument(
        "--baseline-seconds", type=float, default=8.0, help="baseline publishing time, at most"
    )
    p.add_argument("--batch", type=int, default=100, help="fetch batch of the baseline hops")
    p.add_argument("--payload-bytes", type=int, default=700, help="baseline message size")
    p.add_argument("--log-level", default="INFO", help="log level of the services")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, stores)")
    p.add_argument(
        "--providers",
        action="store_true",
        help="deliver over SMS through the Twilio stub (its own process) instead of the outbox; "
        "latency then ends when the provider accepted the message",
    )
    args = p.parse_args(argv)
    for name in ("alerts", "concurrency", "max_in_flight", "baseline_msgs", "batch"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.rate <= 0 or args.duration <= 0 or args.baseline_seconds <= 0:
        p.error("--rate, --duration and --baseline-seconds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run baseline and pipeline, print the figures; 1 when the run broke."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _term_as_interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="buurtalert-bench-"))
    infra = Infra(workdir, args.log_level)
    keep = args.keep
    started = time.monotonic()
    stubs_cm = contextlib.ExitStack()
    try:
        if args.providers:
            from tests.providers import StubsConfig, TwilioConfig, spawn_stubs

            # An account with the throughput to take the whole run: measure the pipeline, not
            # a provider's limit (bench_fanout measures those).
            remote = stubs_cm.enter_context(
                spawn_stubs(
                    StubsConfig(twilio=TwilioConfig(per_second=None, status_callbacks=False))
                )
            )
            infra.extra_env = {**remote.env(), "BUURTALERT_TWILIO_PER_SECOND": "100000"}
            infra.stubs = remote
        print(f"starting nats-server and redis-server in {workdir} ...", flush=True)
        infra.start_servers()
        print(
            f"baseline: up to {args.baseline_msgs} messages or {args.baseline_seconds:g}s of "
            "publishing, through 3 JetStream hops ...",
            flush=True,
        )
        base = asyncio.run(
            run_baseline(
                infra.nats_url,
                args.baseline_msgs,
                args.baseline_seconds,
                args.concurrency,
                args.batch,
                args.payload_bytes,
            )
        )
        print(f"baseline: {args.rate:g}/s for {args.duration:g}s ...", flush=True)
        base_paced = asyncio.run(
            run_baseline(
                infra.nats_url,
                int(args.rate * args.duration),
                args.duration,
                args.max_in_flight,
                args.batch,
                args.payload_bytes,
                per_s=args.rate,
            )
        )
        print("starting ingest, router, notifier ...", flush=True)
        infra.start_services()
        print(
            f"pipeline: {args.alerts} reports at concurrency {args.concurrency}, then "
            f"{args.rate:g}/s for {args.duration:g}s ...",
            flush=True,
        )
        pipe = asyncio.run(run_pipeline(infra, args))
        rss = infra.peak_rss()
        # The baseline is bound by the disk's fsyncs, which drift during a run (seen here:
        # 660 to 1,250 msg/s between runs): measured again after the pipeline, the ratio is
        # taken against the mean of the two.
        print("baseline again, after the pipeline ...", flush=True)
        base_after = asyncio.run(
            run_baseline(
                infra.nats_url,
                args.baseline_msgs,
                args.baseline_seconds,
                args.concurrency,
                args.batch,
                args.payload_bytes,
            )
        )
        problems = print_report(args, (base, base_after), base_paced, pipe, rss)
        if infra.stubs is not None:
            summary = infra.stubs.summary()
            dups = summary["duplicate_deliveries"]
            print(
                f"  Twilio stub: {summary['received_total']} messages accepted, "
                f"{len(dups)} delivery ids accepted more than once; latency above ends at the "
                "notifier's record of the provider's acceptance"
            )
            if dups:
                problems.append(f"{len(dups)} messages reached the provider more than once")
        print(f"\ntotal bench time {time.monotonic() - started:.0f}s")
        if problems:
            keep = True
            print("\nRUN BROKE:\n  " + "\n  ".join(problems), file=sys.stderr)
            print(f"logs kept in {workdir}", file=sys.stderr)
            return 1
        return 0
    except (BenchBroken, embedded.EmbeddedError) as exc:
        keep = True
        print(f"\nRUN BROKE: {exc}\nlogs kept in {workdir}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", file=sys.stderr)
        return 130
    finally:
        infra.stop_all()
        stubs_cm.close()
        if keep:
            print(f"work dir: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
