"""Benchmark: one police notice fanned out to 100,000 recipients over four provider stubs.

Usage: python bench/bench_fanout.py [--recipients N] [--window S]

Starts nats-server (JetStream, sync_interval always), redis-server, the provider stubs as their
own process (Telegram 30/s per bot, Twilio 10/s per sender, WhatsApp 80/s, SMTP 20/s: the
documented or default limits, enforced with sliding windows) and one notifier. Then:

1. baseline: raw nats-py `publish_async` of N messages into the same stream (the ceiling for
   queueing N delivery jobs);
2. fan-out: an AlertRouted for one group of N members is published; measured until every
   recipient has a queued job: planning decisions per second (who, which channel, opted out,
   capped, which text) against the baseline;
3. rate-limit decisions: the Redis budget script (all-or-nothing over account and chat) one at a
   time and from 16 concurrent clients;
4. delivery for `--window` seconds: how much of each provider limit was used (busiest window and
   mean rate over the busy period, as the stub counts them) and how many limit violations.

Prints figures only; exits 1 only when the run broke (a duplicate, a service that died).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import nats
from redis.asyncio import Redis

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]

from bench.bench_pipeline import Infra  # noqa: E402
from buurtalert import embedded  # noqa: E402
from shared import subjects  # noqa: E402
from shared.notices import Circle, Notice, NoticeArea  # noqa: E402
from shared.outbox import read_reach  # noqa: E402
from shared.ratelimit import Bucket, Limit, MultiLimiter  # noqa: E402
from shared.registry import Registry  # noqa: E402
from shared.schemas import (  # noqa: E402
    AlertReceived,
    AlertRouted,
    GroupIn,
    MemberIn,
    RouteTarget,
    new_alert_id,
    utcnow,
)
from tests.providers import StubsConfig, spawn_stubs  # noqa: E402

CHANNELS = ("sms", "telegram", "whatsapp", "email")
LIMITS = {
    "telegram.bot": "Telegram 30/s per bot",
    "telegram.chat": "Telegram 1/s per chat",
    "twilio.sender": "Twilio 10/s per sender",
    "whatsapp.throughput": "WhatsApp 80/s per number",
    "smtp.rate": "SMTP relay 20/s",
}


def address(channel: str, i: int) -> str:
    """A distinct valid address per channel."""
    return {
        "sms": f"+3161{i:07d}",
        "whatsapp": f"+3162{i:07d}",
        "telegram": str(1_000_000 + i),
        "email": f"bewoner{i}@example.nl",
    }[channel]


async def load_members(redis_url: str, n: int) -> None:
    """One group with n members spread evenly over the four channels."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    registry = Registry(redis)
    geometry = {
        "type": "Polygon",
        "coordinates": [[[5.76, 50.965], [5.775, 50.965], [5.775, 50.975], [5.76, 50.965]]],
    }
    await registry.put_group(GroupIn(id="bench", name="bench", geometry=geometry))
    sem = asyncio.Semaphore(64)

    async def add(i: int) -> None:
        channel = CHANNELS[i % 4]
        async with sem:
            await registry.add_member(
                "bench",
                MemberIn(channel=channel, address=address(channel, i // 4)),
            )

    await asyncio.gather(*(add(i) for i in range(n)))
    await redis.aclose()


async def baseline(nats_url: str, n: int) -> float:
    """Raw nats-py: publish n messages with Nats-Msg-Id into the stream; messages per second."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream(publish_async_max_pending=2000)
    started = time.perf_counter()
    for start in range(0, n, 1000):
        futures = [
            await js.publish_async(
                f"{subjects.PREFIX}.bench.baseline",
                b'{"x": 1}' * 40,
                headers={subjects.MSG_ID_HEADER: f"base:{i}"},
            )
            for i in range(start, min(n, start + 1000))
        ]
        await asyncio.gather(*futures)
    elapsed = time.perf_counter() - started
    await js.purge_stream("ALERTS", subject=f"{subjects.PREFIX}.bench.baseline")
    await nc.close()
    return n / elapsed


async def fan_out(nats_url: str, redis_url: str, n: int) -> tuple[str, float]:
    """Publish the routed notice; seconds until the notifier acks it (every job queued)."""
    alert_id = new_alert_id()
    now = utcnow()
    notice = Notice(
        notice_id=alert_id,
        sender="bench",
        sent=now,
        category="missing_person",
        headline="Vermist: jongen (8), blauwe jas",
        raw_format="json",
        adjacent_rings=0,
        areas=[NoticeArea(circle=Circle(lat=50.97, lon=5.7675, radius_m=200))],
    )
    alert = AlertReceived(
        alert_id=alert_id,
        kind="notice",
        channel="dispatch",
        text=notice.headline,
        received_at=now,
        notice=notice,
    )
    routed = AlertRouted(alert=alert, routed_at=now, targets=[RouteTarget(group_id="bench")])
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    redis = Redis.from_url(redis_url, decode_responses=True)
    started = time.perf_counter()
    ack = await js.publish(subjects.ROUTED, routed.model_dump_json().encode(), stream="ALERTS")
    # The notifier acks the routed notice only once every recipient has an outcome or a job
    # stored in JetStream (several jobs travel in one message, so messages are not counted).
    while True:
        info = await js.consumer_info("ALERTS", subjects.NOTIFIER_DURABLE)
        acked = info.ack_floor.stream_seq if info.ack_floor else 0
        reach = await read_reach(redis, alert_id)
        if (acked or 0) >= ack.seq and reach.get("planned") == n:
            break
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - started
    await nc.close()
    await redis.aclose()
    return alert_id, elapsed


async def limiter_decisions(redis_url: str, seconds: float = 3.0) -> tuple[float, float]:
    """Budget-script decisions per second: one client in turn, and 16 concurrent clients."""
    redis = Redis.from_url(redis_url, decode_responses=True, max_connections=32)
    limiter = MultiLimiter(redis)
    wide = Limit(capacity=1e9, per_second=1e9)  # never says no: measures the decision itself

    async def loop(worker: int, until: float) -> int:
        done = 0
        while time.perf_counter() < until:
            buckets = [
                Bucket("bench:account", wide, "account"),
                Bucket(f"bench:chat:{worker}:{done % 100}", wide, "chat"),
            ]
            await limiter.acquire(buckets, "resident", "bench:police")
            done += 1
        return done

    one = await loop(0, time.perf_counter() + seconds) / seconds
    many = (
        sum(await asyncio.gather(*(loop(w, time.perf_counter() + seconds) for w in range(16))))
        / seconds
    )
    await redis.aclose()
    return one, many


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--window", type=float, default=20.0, help="seconds of delivery to watch")
    args = parser.parse_args(argv)
    n = args.recipients - args.recipients % 4

    with (
        tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp,
        spawn_stubs(StubsConfig()) as stubs,
    ):
        infra = Infra(Path(tmp), "WARNING")
        try:
            infra.start_servers()
            env = infra.service_env()
            env.update(stubs.env())
            env["BUURTALERT_ACK_WAIT_S"] = "60"
            infra.procs["notifier"] = embedded.spawn(
                embedded.service_command("notifier"),
                log_path=Path(tmp) / "notifier.log",
                env=env,
                cwd=REPO,
            )
            embedded.wait_until(
                lambda: embedded.http_ok(f"{infra.url('notifier')}/readyz"),
                timeout_s=60,
                what="notifier",
                proc=infra.procs["notifier"],
                log_path=Path(tmp) / "notifier.log",
            )
            t0 = time.perf_counter()
            asyncio.run(load_members(infra.redis_url, n))
            load_s = time.perf_counter() - t0
            base = asyncio.run(baseline(infra.nats_url, n))
            cpu_before = infra.cpu_seconds().get("notifier", 0.0)
            alert_id, fan_s = asyncio.run(fan_out(infra.nats_url, infra.redis_url, n))
            fan_cpu = infra.cpu_seconds().get("notifier", 0.0) - cpu_before
            one, many = asyncio.run(limiter_decisions(infra.redis_url))
            stubs.reset()
            time.sleep(args.window)
            summary = stubs.summary()
            infra.check_alive()
        finally:
            infra.stop_all()

    print(f"\nbench_fanout: one police notice to {n:,} recipients ({n // 4:,} per channel)")
    print(f"  registry load: {n:,} members in {load_s:.1f} s")
    print(f"  baseline raw nats-py publish_async: {base:,.0f} msg/s")
    print(
        f"  fan-out: {n:,} recipients planned and queued in {fan_s:.2f} s = "
        f"{n / fan_s:,.0f} decisions/s ({n / fan_s / base:.2f} of the raw publish baseline), "
        f"notifier CPU {fan_cpu:.1f} s ({fan_cpu / n * 1e6:.0f} µs per recipient)"
    )
    print(
        f"  rate-limit decisions (Lua, account+chat): {one:,.0f}/s one at a time, "
        f"{many:,.0f}/s from 16 concurrent clients"
    )
    print(f"  delivery over a {args.window:.0f} s window after the fan-out:")
    usage = summary["usage"]
    violations = summary["violations"]
    for name, label in LIMITS.items():
        u = usage.get(name)
        if not u:
            continue
        print(
            f"    {label:<28} admitted {u['admitted']:>5}, busiest window {u['max_in_window']:>3} "
            f"= {u['peak_share']:.0%} of the limit, mean over the busy period "
            f"{u['mean_share']:.0%}; violations {violations.get(name, 0)}"
        )
    dups = summary["duplicate_deliveries"]
    print(f"  duplicates at the providers: {len(dups)}; alert {alert_id}")
    return 1 if dups else 0


if __name__ == "__main__":
    sys.exit(main())
