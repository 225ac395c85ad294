"""A real three-node NATS JetStream cluster on free loopback ports, for tests.

Each node has its own store directory and server_name; all share one cluster name and list
every node as a route. A node can be SIGKILLed and started again on the same ports and store.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import nats
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo, StreamInfo

from buurtalert import embedded

CLUSTER_NAME = "buurtalert-test"

T = TypeVar("T")


@dataclass
class ClusterNode:
    """One nats-server of the cluster."""

    name: str
    config: embedded.NatsConfig
    cluster_port: int
    route_ports: list[int]
    conf_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Client URL of this node."""
        return f"nats://127.0.0.1:{self.config.port}"

    @property
    def running(self) -> bool:
        """True while the process lives."""
        return self.proc is not None and self.proc.poll() is None

    def render(self) -> str:
        """The single-node config (JetStream, sync_interval always) plus name and cluster."""
        routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in self.route_ports)
        return (
            f"server_name: {self.name}\n"
            + self.config.render()
            + "cluster {\n"
            f"  name: {CLUSTER_NAME}\n"
            f"  listen: 127.0.0.1:{self.cluster_port}\n"
            f"  routes: [{routes}]\n"
            "}\n"
        )

    def start(self) -> None:
        """Start the process (same ports and store as before); does not wait."""
        self.config.store_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.render())
        self.proc = embedded.spawn(
            [str(embedded.nats_server_binary()), "-c", str(self.conf_path)],
            log_path=self.log_path,
        )

    def kill(self) -> None:
        """SIGKILL: no lame-duck mode, no leadership hand-over."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop gracefully."""
        if self.proc is not None:
            embedded.stop(self.proc)

    def jsz(self) -> dict[str, object]:
        """This node's /jsz monitoring document."""
        url = f"http://127.0.0.1:{self.config.monitor_port}/jsz"
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            data: dict[str, object] = json.loads(resp.read())
        return data

    def client_connections(self) -> int:
        """Client connections this node holds (the services' clients)."""
        url = f"http://127.0.0.1:{self.config.monitor_port}/connz"
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return int(json.loads(resp.read())["num_connections"])

    def healthy(self) -> bool:
        """/healthz is 200: JetStream up, meta group joined, its streams and consumers current."""
        return embedded.http_ok(f"http://127.0.0.1:{self.config.monitor_port}/healthz")


@dataclass
class NatsCluster:
    """Three nats-server processes forming one JetStream cluster."""

    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        """BUURTALERT_NATS_URL for the cluster: every node, comma-separated."""
        return ",".join(node.url for node in self.nodes)

    @property
    def servers(self) -> list[str]:
        """Every node's client URL."""
        return [node.url for node in self.nodes]

    def node(self, name: str) -> ClusterNode:
        """The node with this server_name."""
        return next(node for node in self.nodes if node.name == name)

    def meta_leader(self) -> str | None:
        """server_name of the JetStream meta leader, as a running node sees it."""
        for node in self.nodes:
            if not node.running:
                continue
            try:
                meta = node.jsz().get("meta_cluster")
            except (OSError, ValueError):
                continue
            if isinstance(meta, dict) and meta.get("leader"):
                return str(meta["leader"])
        return None

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Wait until there is a meta leader and every running node answers /healthz 200."""
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            if node.running:
                embedded.wait_until(
                    node.healthy,
                    timeout_s=max(0.1, deadline - time.monotonic()),
                    what=f"nats-server {node.name}",
                    proc=node.proc,
                    log_path=node.log_path,
                )
        embedded.wait_until(
            lambda: self.meta_leader() is not None,
            timeout_s=max(0.1, deadline - time.monotonic()),
            what="JetStream meta leader",
        )

    def stream_info(self, stream: str) -> StreamInfo:
        """$JS.API.STREAM.INFO for one stream, asked of whichever running node answers."""
        return asyncio.run(self._ask(lambda js: js.stream_info(stream)))

    def consumer_infos(self, stream: str) -> list[ConsumerInfo]:
        """$JS.API.CONSUMER.INFO of every consumer on the stream."""
        return asyncio.run(self._ask(lambda js: js.consumers_info(stream)))

    def move_leaders(self, stream: str, to: str, timeout_s: float = 20.0) -> None:
        """Make node `to` the leader of the stream and of every consumer on it."""

        async def step_down(nc: Client, subject: str) -> None:
            body = json.dumps({"placement": {"preferred": to}}).encode()
            reply = json.loads((await nc.request(subject, body, timeout=5)).data)
            if not reply.get("success"):
                raise RuntimeError(f"{subject}: {reply}")

        async def lead_all(js: JetStreamContext) -> bool:
            info = await js.stream_info(stream)
            consumers = await js.consumers_info(stream)
            leaders = [info.cluster.leader if info.cluster else None]
            leaders += [c.cluster.leader if c.cluster else None for c in consumers]
            return all(leader == to for leader in leaders)

        async def move() -> None:
            nc = await nats.connect(self.servers_up(), connect_timeout=2, allow_reconnect=False)
            js = nc.jetstream(timeout=2)
            try:
                deadline = time.monotonic() + timeout_s
                while not await _answered(lead_all(js)):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{to} did not become leader of {stream}")
                    info = await _answered(js.stream_info(stream))
                    if info and info.cluster and info.cluster.leader not in (None, to):
                        await step_down(nc, f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}")
                    for c in await _answered(js.consumers_info(stream)) or []:
                        if c.cluster and c.cluster.leader not in (None, to):
                            await step_down(
                                nc, f"$JS.API.CONSUMER.LEADER.STEPDOWN.{stream}.{c.name}"
                            )
                    await asyncio.sleep(0.5)
            finally:
                await nc.close()

        asyncio.run(move())

    def servers_up(self) -> list[str]:
        """Client URLs of the nodes that are running."""
        return [n.url for n in self.nodes if n.running]

    async def _ask(self, question: Callable[[JetStreamContext], Awaitable[T]]) -> T:
        nc = await nats.connect(self.servers_up(), connect_timeout=2, allow_reconnect=False)
        try:
            return await question(nc.jetstream(timeout=2))
        finally:
            await nc.close()

    def start(self) -> None:
        """Start every node that is not running and wait until the cluster is healthy."""
        for node in self.nodes:
            if not node.running:
                node.start()
        self.wait_healthy()

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()


@contextmanager
def running_nats_cluster(workdir: Path, size: int = 3) -> Iterator[NatsCluster]:
    """A fresh JetStream cluster of `size` nodes for one test, torn down after."""
    cluster_ports = [embedded.free_port() for _ in range(size)]
    cluster = NatsCluster()
    for i in range(size):
        name = f"n{i + 1}"
        cluster.nodes.append(
            ClusterNode(
                name=name,
                config=embedded.NatsConfig(
                    port=embedded.free_port(),
                    monitor_port=embedded.free_port(),
                    store_dir=workdir / name / "store",
                    max_memory_store="64MB",
                    max_file_store="1GB",
                ),
                cluster_port=cluster_ports[i],
                route_ports=[p for p in cluster_ports if p != cluster_ports[i]],
                conf_path=workdir / name / "nats.conf",
                log_path=workdir / name / "nats.log",
            )
        )
    try:
        for node in cluster.nodes:
            node.start()
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop()


async def _answered(question: Awaitable[T]) -> T | None:
    # While an election runs JetStream API requests time out or find no responder.
    try:
        return await question
    except (nats.errors.Error, TimeoutError):
        return None
