"""`buurtalert up`: nats-server, redis-server and the three services, in the foreground.

SIGINT or SIGTERM stops every process it started. After a crash, the next start stops what the
crashed run left behind (pid files under the data dir) or says plainly what is in the way.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from buurtalert import embedded
from buurtalert.embedded import EmbeddedError

# The edge starts last, so its /readyz answering 200 means the whole system is up.
SERVICES = ("router", "notifier", "ingest")
RESTARTS_PER_MINUTE = 5


class UpError(RuntimeError):
    """Something is in the way of starting; the message says what and what to do."""


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        raise UpError(f"{name}={raw!r} is not a port number") from None


@dataclass(frozen=True)
class UpConfig:
    """Where everything lives and listens; every value can be set by environment."""

    data_dir: Path
    host: str = "127.0.0.1"
    http_port: int = 8080
    router_port: int = 8081
    notifier_port: int = 8082
    nats_port: int = 4222
    nats_monitor_port: int = 8222
    redis_port: int = 6379

    @classmethod
    def from_env(cls) -> UpConfig:
        """Read BUURTALERT_* variables."""
        return cls(
            data_dir=Path(os.environ.get("BUURTALERT_DATA_DIR", ".buurtalert")).resolve(),
            http_port=_env_int("BUURTALERT_HTTP_PORT", 8080),
            router_port=_env_int("BUURTALERT_ROUTER_PORT", 8081),
            notifier_port=_env_int("BUURTALERT_NOTIFIER_PORT", 8082),
            nats_port=_env_int("BUURTALERT_NATS_PORT", 4222),
            nats_monitor_port=_env_int("BUURTALERT_NATS_MONITOR_PORT", 8222),
            redis_port=_env_int("BUURTALERT_REDIS_PORT", 6379),
        )

    @property
    def run_dir(self) -> Path:
        """Pid files."""
        return self.data_dir / "run"

    @property
    def log_dir(self) -> Path:
        """One log file per process."""
        return self.data_dir / "logs"

    def ports(self) -> dict[str, int]:
        """Every port this run listens on, by what uses it."""
        return {
            "nats (BUURTALERT_NATS_PORT)": self.nats_port,
            "nats monitor (BUURTALERT_NATS_MONITOR_PORT)": self.nats_monitor_port,
            "redis (BUURTALERT_REDIS_PORT)": self.redis_port,
            "ingest/edge (BUURTALERT_HTTP_PORT)": self.http_port,
            "router (BUURTALERT_ROUTER_PORT)": self.router_port,
            "notifier (BUURTALERT_NOTIFIER_PORT)": self.notifier_port,
        }

    def service_port(self, name: str) -> int:
        """HTTP port of one service."""
        return {
            "ingest": self.http_port,
            "router": self.router_port,
            "notifier": self.notifier_port,
        }[name]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def load_or_create_key(path: Path) -> str:
    """A random API key kept in a 0600 file, so the dev run has real keys and no placeholder."""
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


@dataclass
class Child:
    """One process the supervisor owns and restarts."""

    name: str
    start: Callable[[], subprocess.Popen[bytes]]
    ready: Callable[[], bool]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)


class Supervisor:
    """Starts, watches, restarts and stops the embedded system."""

    def __init__(self, config: UpConfig, say: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.say = say or _say
        self.children: list[Child] = []
        self._stopping = False
        self._claimed = False

    # --- before starting ---------------------------------------------------------------------

    def _claim(self) -> None:
        cfg = self.config
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        lock = cfg.run_dir / "supervisor.pid"
        pid = _read_pid(lock)
        if pid and pid != os.getpid() and _pid_alive(pid) and "buurtalert" in _cmdline(pid):
            raise UpError(
                f"buurtalert is already running from {cfg.data_dir} (pid {pid}). "
                f"Stop it first (kill {pid}), or use another BUURTALERT_DATA_DIR."
            )
        if pid:
            self.say(f"· removing stale pid file of an earlier run (pid {pid} is gone)")
        lock.write_text(str(os.getpid()))
        self._claimed = True
        for pid_file in sorted(cfg.run_dir.glob("*.pid")):
            if pid_file == lock:
                continue
            child_pid = _read_pid(pid_file)
            if child_pid and _pid_alive(child_pid) and _is_ours(_cmdline(child_pid)):
                self.say(f"· stopping leftover {pid_file.stem} (pid {child_pid}) of an earlier run")
                _terminate_pid(child_pid)
            pid_file.unlink(missing_ok=True)
        busy = [
            f"{what} port {port}"
            for what, port in cfg.ports().items()
            if embedded.port_in_use(port, cfg.host)
        ]
        if busy:
            raise UpError(
                "in use by another program: "
                + "; ".join(busy)
                + ". Stop that program or choose other ports with the variables named."
            )

    # --- children ----------------------------------------------------------------------------

    def _children(self) -> list[Child]:
        cfg = self.config
        nats_conf = embedded.NatsConfig(
            port=cfg.nats_port,
            monitor_port=cfg.nats_monitor_port,
            store_dir=cfg.data_dir / "nats",
            host=cfg.host,
        )
        logs = cfg.log_dir
        admin_key = os.environ.get("BUURTALERT_ADMIN_KEYS") or load_or_create_key(
            cfg.data_dir / "admin.key"
        )
        dispatch_key = os.environ.get("BUURTALERT_DISPATCH_KEYS") or load_or_create_key(
            cfg.data_dir / "dispatch.key"
        )
        common = {
            "BUURTALERT_NATS_URL": f"nats://{cfg.host}:{cfg.nats_port}",
            "BUURTALERT_REDIS_URL": f"redis://{cfg.host}:{cfg.redis_port}/0",
            "BUURTALERT_DATA_DIR": str(cfg.data_dir),
            "BUURTALERT_HOST": cfg.host,
            "BUURTALERT_HTTP_PORT": str(cfg.http_port),
            "BUURTALERT_ROUTER_PORT": str(cfg.router_port),
            "BUURTALERT_NOTIFIER_PORT": str(cfg.notifier_port),
            "BUURTALERT_ADMIN_KEYS": admin_key,
            "BUURTALERT_DISPATCH_KEYS": dispatch_key,
            "BUURTALERT_PUBLIC_URL": os.environ.get(
                "BUURTALERT_PUBLIC_URL", f"http://{cfg.host}:{cfg.http_port}"
            ),
        }
        children = [
            Child(
                "nats",
                lambda: embedded.start_nats(
                    nats_conf, cfg.data_dir / "nats.conf", logs / "nats.log"
                ),
                lambda: embedded.nats_ready(cfg.nats_monitor_port, cfg.host),
                logs / "nats.log",
            ),
            Child(
                "redis",
                lambda: embedded.start_redis(
                    cfg.redis_port, cfg.data_dir / "redis", logs / "redis.log", cfg.host
                ),
                lambda: embedded.redis_ready(cfg.redis_port, cfg.host),
                logs / "redis.log",
            ),
        ]
        for name in SERVICES:
            port = cfg.service_port(name)
            children.append(
                Child(
                    name,
                    _service_starter(name, common, logs / f"{name}.log"),
                    _ready_url(f"http://{cfg.host}:{port}/readyz"),
                    logs / f"{name}.log",
                )
            )
        return children

    def _start(self, child: Child, timeout_s: float = 60.0) -> None:
        child.proc = child.start()
        (self.config.run_dir / f"{child.name}.pid").write_text(str(child.proc.pid))
        embedded.wait_until(
            child.ready,
            timeout_s=timeout_s,
            what=child.name,
            proc=child.proc,
            log_path=child.log_path,
        )

    # --- the run -----------------------------------------------------------------------------

    def start_all(self) -> None:
        """Claim the data dir and start every child in order, each ready before the next."""
        self._claim()
        self.children = self._children()
        for child in self.children:
            self.say(f"· starting {child.name} …")
            self._start(child)

    def watch(self, poll_s: float = 0.5) -> int:
        """Restart children that die, until asked to stop; the exit code of the run."""
        while not self._stopping:
            for child in self.children:
                if self._stopping or child.proc is None or child.proc.poll() is None:
                    continue
                code = child.proc.returncode
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < 60] + [now]
                if len(child.restarts) > RESTARTS_PER_MINUTE:
                    self.say(
                        f"✗ {child.name} keeps exiting (last code {code}); see "
                        f"{child.log_path}. Stopping."
                    )
                    return 1
                self.say(f"! {child.name} exited with code {code}; restarting")
                try:
                    self._start(child)
                except EmbeddedError as exc:
                    self.say(f"✗ {exc}")
                    return 1
            time.sleep(poll_s)
        return 0

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        """Signal handler: leave the watch loop."""
        self._stopping = True

    def stop_all(self) -> None:
        """Stop services first (they drain), then redis and nats."""
        self._stopping = True
        if not self._claimed:
            return  # another run owns the data dir: touch nothing of it
        for child in reversed(self.children):
            if child.proc is not None:
                embedded.stop(child.proc)
            (self.config.run_dir / f"{child.name}.pid").unlink(missing_ok=True)
        (self.config.run_dir / "supervisor.pid").unlink(missing_ok=True)

    def banner(self) -> str:
        """Where to look once everything is up."""
        cfg = self.config
        edge = f"http://{cfg.host}:{cfg.http_port}"
        return "\n".join(
            [
                "",
                "buurtalert is running. 112 first: buurtalert never replaces it.",
                f"  edge (reports, admin API)  {edge}",
                f"  ready / API docs           {edge}/readyz   {edge}/docs",
                f"  metrics                    {edge}/metrics  "
                f"http://{cfg.host}:{cfg.router_port}/metrics  "
                f"http://{cfg.host}:{cfg.notifier_port}/metrics",
                f"  admin key                  {cfg.data_dir / 'admin.key'}",
                f"  dispatch key               {cfg.data_dir / 'dispatch.key'}",
                f"  logs                       {cfg.log_dir}/",
                f"  nats                       nats://{cfg.host}:{cfg.nats_port} "
                f"(monitor http://{cfg.host}:{cfg.nats_monitor_port})",
                f"  redis                      redis://{cfg.host}:{cfg.redis_port}/0",
                "Press Ctrl-C to stop everything.",
            ]
        )


def _say(message: str) -> None:
    print(message, flush=True)


def _service_starter(
    name: str, env: dict[str, str], log_path: Path
) -> Callable[[], subprocess.Popen[bytes]]:
    def start() -> subprocess.Popen[bytes]:
        return embedded.spawn(
            embedded.service_command(name), log_path=log_path, env=embedded.child_env(env)
        )

    return start


def _ready_url(url: str) -> Callable[[], bool]:
    def check() -> bool:
        return embedded.http_ok(url)

    return check


def _is_ours(cmdline: str) -> bool:
    return any(m in cmdline for m in ("nats-server", "redis-server", "services."))


def _terminate_pid(pid: int, timeout_s: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.1)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def run_up(config: UpConfig | None = None) -> int:
    """The whole `buurtalert up`: start, print where to look, watch, stop on a signal."""
    config = config or UpConfig.from_env()
    sup = Supervisor(config)
    signal.signal(signal.SIGINT, sup.request_stop)
    signal.signal(signal.SIGTERM, sup.request_stop)
    code = 0
    try:
        sup.start_all()
        print(sup.banner(), flush=True)
        code = sup.watch()
    except (UpError, EmbeddedError) as exc:
        print(f"✗ {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        print("· stopping …", flush=True)
        sup.stop_all()
        print("· stopped", flush=True)
    return code
