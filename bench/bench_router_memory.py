"""Router memory and start-up with the whole registry (all Dutch buurten) loaded.

    python bench/bench_router_memory.py [path-to-geojson]

Starts its own nats-server and redis-server on free loopback ports, imports the areas, then a
router process, and prints import time, index build time and the router's resident memory.
Prints figures only; never fails on them.
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis

from buurtalert import embedded
from buurtalert.areas_import import import_areas
from shared.registry import Registry

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "nl_buurten_2014.geojson"


def _status_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


async def _import(path: Path, url: str) -> tuple[int, int, float]:
    redis = Redis.from_url(url, decode_responses=True)
    try:
        started = time.perf_counter()
        report = await import_areas(path, Registry(redis), progress=False)
        return report.total_areas, report.adjacency_pairs, time.perf_counter() - started
    finally:
        await redis.aclose()


def main() -> int:
    """Run the measurement and print it."""
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    if not path.is_file():
        print(f"no area file at {path} (the real data lives in ../shared/data/)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="buurtalert-bench-") as tmp:
        work = Path(tmp)
        nats_cfg = embedded.NatsConfig(
            port=embedded.free_port(), monitor_port=embedded.free_port(), store_dir=work / "nats"
        )
        nats = embedded.start_nats(nats_cfg, work / "nats.conf", work / "nats.log")
        redis_port = embedded.free_port()
        redis = embedded.start_redis(redis_port, work / "redis", work / "redis.log")
        procs = [nats, redis]
        try:
            embedded.wait_until(
                lambda: embedded.nats_ready(nats_cfg.monitor_port),
                timeout_s=20,
                what="nats-server",
                proc=nats,
            )
            embedded.wait_until(
                lambda: embedded.redis_ready(redis_port),
                timeout_s=20,
                what="redis-server",
                proc=redis,
            )
            url = f"redis://127.0.0.1:{redis_port}/0"
            areas, pairs, import_s = asyncio.run(_import(path, url))
            port = embedded.free_port()
            env = embedded.child_env(
                {
                    "BUURTALERT_NATS_URL": f"nats://127.0.0.1:{nats_cfg.port}",
                    "BUURTALERT_REDIS_URL": url,
                    "BUURTALERT_ROUTER_PORT": str(port),
                    "BUURTALERT_DATA_DIR": str(work),
                    "BUURTALERT_LOG_JSON": "true",
                }
            )
            started = time.perf_counter()
            router = embedded.spawn(
                embedded.service_command("router"), log_path=work / "router.log", env=env
            )
            procs.append(router)
            embedded.wait_until(
                lambda: embedded.http_ok(f"http://127.0.0.1:{port}/readyz"),
                timeout_s=120,
                what="router",
                proc=router,
                log_path=work / "router.log",
            )
            ready_s = time.perf_counter() - started
            time.sleep(2.0)  # let the background refresher settle
            build = re.findall(r"built in ([0-9.]+)s", (work / "router.log").read_text())
            print(f"areas in registry        {areas:,} ({pairs:,} neighbour pairs)")
            print(f"import with adjacency    {import_s:.2f} s   (goal: at most 10 s)")
            print(f"router ready after       {ready_s:.2f} s   (index build {build[-1]} s)")
            print(
                f"router resident memory   {_status_kib(router.pid, 'VmRSS') / 1024:.0f} MiB "
                f"(peak {_status_kib(router.pid, 'VmHWM') / 1024:.0f} MiB; goal: at most 200)"
            )
        finally:
            for proc in reversed(procs):
                embedded.stop(proc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
