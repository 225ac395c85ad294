"""Real nats-server, redis-server and service processes on free loopback ports, for tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from buurtalert import embedded
from tests.cluster import NatsCluster

SERVICE_NAMES = ("ingest", "router", "notifier")


@dataclass
class NatsHandle:
    """A running nats-server with JetStream."""

    config: embedded.NatsConfig
    conf_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """Client URL."""
        return f"nats://127.0.0.1:{self.config.port}"

    def stop(self) -> None:
        """Stop it gracefully."""
        embedded.stop(self.proc)

    def start(self) -> None:
        """(Re)start it on the same ports and store."""
        self.proc = embedded.start_nats(self.config, self.conf_path, self.log_path)
        embedded.wait_until(
            lambda: embedded.nats_ready(self.config.monitor_port),
            timeout_s=20,
            what="nats-server",
            proc=self.proc,
            log_path=self.log_path,
        )


@contextmanager
def running_nats(workdir: Path) -> Iterator[NatsHandle]:
    """A fresh nats-server for one test."""
    config = embedded.NatsConfig(
        port=embedded.free_port(),
        monitor_port=embedded.free_port(),
        store_dir=workdir / "nats-store",
        max_memory_store="64MB",
        max_file_store="1GB",
    )
    log_path = workdir / "nats.log"
    handle = NatsHandle(
        config,
        workdir / "nats.conf",
        log_path,
        embedded.start_nats(config, workdir / "nats.conf", log_path),
    )
    embedded.wait_until(
        lambda: embedded.nats_ready(config.monitor_port),
        timeout_s=20,
        what="nats-server",
        proc=handle.proc,
        log_path=log_path,
    )
    try:
        yield handle
    finally:
        handle.stop()


@dataclass
class RedisHandle:
    """A running redis-server with its append-only file (appendfsync everysec)."""

    port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """Client URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Stop it gracefully (SIGTERM: Redis writes and fsyncs its append-only file)."""
        embedded.stop(self.proc)

    def start(self) -> None:
        """(Re)start it on the same port and data directory; it reloads the append-only file."""
        self.proc = embedded.start_redis(self.port, self.data_dir, self.log_path)
        embedded.wait_until(
            lambda: embedded.redis_ready(self.port),
            timeout_s=20,
            what="redis-server",
            proc=self.proc,
            log_path=self.log_path,
        )


@contextmanager
def running_redis_server(workdir: Path) -> Iterator[RedisHandle]:
    """A fresh redis-server for one test, restartable on the same port and data."""
    port = embedded.free_port()
    log_path = workdir / "redis.log"
    data_dir = workdir / "redis-data"
    handle = RedisHandle(port, data_dir, log_path, embedded.start_redis(port, data_dir, log_path))
    embedded.wait_until(
        lambda: embedded.redis_ready(port),
        timeout_s=20,
        what="redis-server",
        proc=handle.proc,
        log_path=log_path,
    )
    try:
        yield handle
    finally:
        handle.stop()


@contextmanager
def running_redis(workdir: Path) -> Iterator[str]:
    """A fresh redis-server for one test; yields its URL."""
    with running_redis_server(workdir) as handle:
        yield handle.url


#: The variable that sets each service's HTTP port (health, metrics; the edge's API).
REPLICA_PORT_ENV = {
    "ingest": "BUURTALERT_HTTP_PORT",
    "router": "BUURTALERT_ROUTER_PORT",
    "notifier": "BUURTALERT_NOTIFIER_PORT",
}


@dataclass
class System:
    """The three services as separate processes against real servers."""

    workdir: Path
    nats: NatsHandle | NatsCluster
    redis_url: str
    admin_key: str = "test-admin-key-0123456789"
    dispatch_key: str = "test-dispatch-key-0123456789"
    extra_env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """Environment of every service process."""
        if not self.ports:
            self.ports = {name: embedded.free_port() for name in SERVICE_NAMES}
        env = {
            "BUURTALERT_ENV": "test",
            # One URL, or a cluster's URLs separated by commas.
            "BUURTALERT_NATS_URL": self.nats.url,
            "BUURTALERT_REDIS_URL": self.redis_url,
            "BUURTALERT_DATA_DIR": str(self.workdir),
            "BUURTALERT_HTTP_PORT": str(self.ports["ingest"]),
            "BUURTALERT_ROUTER_PORT": str(self.ports["router"]),
            "BUURTALERT_NOTIFIER_PORT": str(self.ports["notifier"]),
            "BUURTALERT_ADMIN_KEYS": self.admin_key,
            "BUURTALERT_DISPATCH_KEYS": self.dispatch_key,
            "BUURTALERT_ACK_WAIT_S": "2",
            "BUURTALERT_LOG_JSON": "true",
            # Load-bearing tests post hundreds of reports from 127.0.0.1; the limits have
            # their own test.
            "BUURTALERT_SOURCE_REQUESTS_PER_MINUTE": "1000000",
            "BUURTALERT_SOURCE_BURST": "100000",
            "BUURTALERT_SENDER_REPORTS_PER_HOUR": "1000000",
            "BUURTALERT_SENDER_BURST": "100000",
            # Most tests post many reports at one spot and follow each one; incident
            # correlation (which folds them together) has its own test.
            "BUURTALERT_INCIDENT_RADIUS_M": "0",
            # Members here receive hundreds of resident alerts; the hourly cap has its own test.
            "BUURTALERT_RESIDENT_ALERTS_PER_HOUR": "1000000",
        }
        env.update(self.extra_env)
        return embedded.child_env(env)

    def url(self, name: str = "ingest") -> str:
        """Base URL of one service."""
        return f"http://127.0.0.1:{self.ports[name]}"

    def log_path(self, name: str) -> Path:
        """Log file of one service (all its runs appended)."""
        return self.workdir / f"{name}.log"

    def start(self, name: str) -> None:
        """Start one service and wait until /readyz is 200."""
        env = self.env()
        proc = embedded.spawn(embedded.service_command(name), log_path=self.log_path(name), env=env)
        self.procs[name] = proc
        embedded.wait_until(
            lambda: embedded.http_ok(f"{self.url(name)}/readyz"),
            timeout_s=60,
            what=name,
            proc=proc,
            log_path=self.log_path(name),
        )

    def start_replica(self, name: str, index: int) -> str:
        """Start one more instance of a service on a port of its own; its base URL."""
        port = embedded.free_port()
        env = self.env()
        env[REPLICA_PORT_ENV[name]] = str(port)
        log_path = self.workdir / f"{name}-{index}.log"
        key = f"{name}#{index}"
        self.procs[key] = embedded.spawn(
            embedded.service_command(name), log_path=log_path, env=env
        )
        url = f"http://127.0.0.1:{port}"
        embedded.wait_until(
            lambda: embedded.http_ok(f"{url}/readyz"),
            timeout_s=60,
            what=key,
            proc=self.procs[key],
            log_path=log_path,
        )
        return url

    def start_all(self) -> None:
        """Start ingest, router and notifier."""
        for name in SERVICE_NAMES:
            self.start(name)

    def kill(self, name: str) -> None:
        """SIGKILL one service: no drain, no goodbye."""
        proc = self.procs[name]
        proc.kill()
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        """Stop every service gracefully."""
        for proc in self.procs.values():
            embedded.stop(proc)

    def client(self) -> httpx.Client:
        """HTTP client for the edge."""
        return httpx.Client(base_url=self.url("ingest"), timeout=10.0)

    def admin_headers(self) -> dict[str, str]:
        """Authorization header with the admin key."""
        return {"Authorization": f"Bearer {self.admin_key}"}
