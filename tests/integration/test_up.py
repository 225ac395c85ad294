"""`buurtalert up` (what `make run` runs): ready, delivers, stops everything, survives a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from buurtalert import embedded
from tests.integration.test_end_to_end import SQUARE, STEIN, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PORT_VARS = ("BUURTALERT_HTTP_PORT", "BUURTALERT_ROUTER_PORT", "BUURTALERT_NOTIFIER_PORT",
             "BUURTALERT_NATS_PORT", "BUURTALERT_NATS_MONITOR_PORT", "BUURTALERT_REDIS_PORT")


def up_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUURTALERT_")}
    env.update({var: str(embedded.free_port()) for var in PORT_VARS})
    env["BUURTALERT_DATA_DIR"] = str(data_dir)
    return env


def start_up(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "buurtalert", "up"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"buurtalert up exited {proc.returncode}:\n{log.read_text()}")
        try:
            return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False
    wait_for(ready, bool, timeout_s=90)


def children_pids(data_dir: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in (data_dir / "run").glob("*.pid")
            if p.stem != "supervisor"}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_up_runs_delivers_and_stops_everything_on_sigint(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = up_env(data)
    log = tmp_path / "up.log"
    base = f"http://127.0.0.1:{env['BUURTALERT_HTTP_PORT']}"
    proc = start_up(env, log)
    try:
        wait_ready(base, proc, log)
        banner = wait_for(log.read_text, lambda t: "Press Ctrl-C" in t, timeout_s=10)
        assert f"edge (reports, admin API)  {base}" in banner
        key = (data / "admin.key").read_text().strip()
        admin = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.post("/v1/groups", headers=admin, json={
                "id": "g", "name": "Stein", "geometry": SQUARE}).status_code == 201
            assert client.post("/v1/groups/g/members", headers=admin, json={
                "channel": "sms", "address": "0612345678"}).status_code == 201
            alert_id = client.post("/v1/reports", json={
                "text": "Inbraak bezig", "location": STEIN, "called_112": True,
            }).json()["alert_id"]
            wait_for(lambda: client.get("/v1/outbox", headers=admin).json(),
                     lambda es: [e["alert_id"] for e in es] == [alert_id])
        for port_var in ("BUURTALERT_HTTP_PORT", "BUURTALERT_ROUTER_PORT",
                         "BUURTALERT_NOTIFIER_PORT"):
            metrics = httpx.get(f"http://127.0.0.1:{env[port_var]}/metrics", timeout=5).text
            assert "faststream_" in metrics
        pids = children_pids(data)
        assert set(pids) == {"nats", "redis", "ingest", "router", "notifier"}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert [name for name, pid in pids.items() if alive(pid)] == []
        assert not (data / "run" / "supervisor.pid").exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_second_up_after_a_crash_recovers_and_keeps_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = up_env(data)
    log = tmp_path / "up.log"
    base = f"http://127.0.0.1:{env['BUURTALERT_HTTP_PORT']}"
    first = start_up(env, log)
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_ready(base, first, log)
        key = (data / "admin.key").read_text().strip()
        admin = {"Authorization": f"Bearer {key}"}
        assert httpx.post(f"{base}/v1/groups", headers=admin, timeout=10, json={
            "id": "kept", "name": "Kept", "geometry": SQUARE}).status_code == 201
        first.kill()  # the supervisor dies without cleaning up
        first.wait(timeout=10)
        time.sleep(0.5)
        second = start_up(env, log)
        wait_ready(base, second, log)
        # The same key and the group survived (Redis AOF under the data dir).
        assert (data / "admin.key").read_text().strip() == key
        resp = httpx.post(f"{base}/v1/groups/kept/members", headers=admin, timeout=10,
                          json={"channel": "telegram", "address": "12345"})
        assert resp.status_code == 201, resp.text
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()


def test_up_names_a_port_in_use(tmp_path: Path) -> None:
    env = up_env(tmp_path / "data")
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", int(env["BUURTALERT_REDIS_PORT"])))
        busy.listen()
        done = subprocess.run([sys.executable, "-m", "buurtalert", "up"], env=env,
                              capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "BUURTALERT_REDIS_PORT" in done.stderr
