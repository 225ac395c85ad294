"""The replicated setups in deploy/ really replicate, on real servers on loopback.

- deploy/nats/cluster/nats-{1,2,3}.conf form a JetStream cluster in which the services' own
  stream set-up (shared.streams, BUURTALERT_STREAM_REPLICAS=3) makes an R3 stream, and an
  acknowledged message survives stopping the stream's leader.
- deploy/redis/replica.conf follows a primary: writes arrive, and the replica refuses writes.

Only host names, ports and data directories are rewritten to loopback and tmp_path; every other
line of the configs is used as committed.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
import redis
from nats.js.api import StreamInfo

from buurtalert import embedded
from shared.settings import BaseServiceSettings
from shared.streams import ensure_streams

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
CLUSTER_DIR = REPO / "deploy" / "nats" / "cluster"
REPLICA_CONF = REPO / "deploy" / "redis" / "replica.conf"
NODES = ("nats-1", "nats-2", "nats-3")


def render_node(text: str, ports: dict[str, dict[str, int]], store: Path) -> str:
    """A node's config with loopback ports and a tmp store instead of hosts and /data."""
    name = re.search(r"^server_name:\s*(\S+)$", text, re.MULTILINE)
    assert name is not None
    own = ports[name.group(1)]
    replacements = {
        r"^listen: 0\.0\.0\.0:4222$": f"listen: 127.0.0.1:{own['client']}",
        r"^http: 0\.0\.0\.0:8222$": f"http: 127.0.0.1:{own['monitor']}",
        r"^(\s*)listen: 0\.0\.0\.0:6222$": rf"\g<1>listen: 127.0.0.1:{own['cluster']}",
        r'^(\s*)store_dir: "/data"$': rf'\g<1>store_dir: "{store}"',
    }
    for pattern, replacement in replacements.items():
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        assert count == 1, f"{pattern} not found once in {name.group(1)}'s config"
    for node, node_ports in ports.items():
        text, count = re.subn(
            rf"nats-route://{node}:6222", f"nats-route://127.0.0.1:{node_ports['cluster']}", text
        )
        assert count == 1, f"no route to {node}"
    return text


@dataclass
class Node:
    """One running cluster node."""

    proc: subprocess.Popen[bytes]
    url: str


@contextmanager
def nats_cluster(workdir: Path) -> Iterator[dict[str, Node]]:
    """The three committed node configs running on loopback; yields name -> node."""
    ports = {
        node: {kind: embedded.free_port() for kind in ("client", "cluster", "monitor")}
        for node in NODES
    }
    nodes: dict[str, Node] = {}
    with ExitStack() as stack:
        for name in NODES:
            conf = workdir / f"{name}.conf"
            text = (CLUSTER_DIR / f"{name}.conf").read_text(encoding="utf-8")
            conf.write_text(render_node(text, ports, workdir / name), encoding="utf-8")
            proc = embedded.spawn(
                [str(embedded.nats_server_binary()), "-c", str(conf)],
                log_path=workdir / f"{name}.log",
            )
            stack.callback(embedded.stop, proc)
            nodes[name] = Node(proc, f"nats://127.0.0.1:{ports[name]['client']}")
        for name in NODES:
            monitor_port = ports[name]["monitor"]
            embedded.wait_until(
                lambda port=monitor_port: embedded.nats_ready(port),  # type: ignore[misc]
                timeout_s=30,
                what=name,
                proc=nodes[name].proc,
                log_path=workdir / f"{name}.log",
            )
        yield nodes


async def wait_for_stream(url: str, stream: str, timeout_s: float = 30.0) -> StreamInfo:
    """Stream info once the stream has a leader and two current replicas."""
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=10)
    try:
        js = nc.jetstream()
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            try:
                info = await js.stream_info(stream)
                cluster = info.cluster
                if (
                    cluster is not None
                    and cluster.leader
                    and cluster.replicas
                    and len(cluster.replicas) == 2
                ):
                    return info
            except (nats.errors.Error, TimeoutError):
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"stream {stream} has no leader with two replicas")
            await asyncio.sleep(0.25)
    finally:
        await nc.close()


async def test_nats_cluster_configs_keep_an_r3_stream(tmp_path: Path) -> None:
    """R3 stream from the services' own set-up; a PubAcked message outlives its leader."""
    with nats_cluster(tmp_path) as nodes:
        urls = {name: node.url for name, node in nodes.items()}
        settings = BaseServiceSettings(
            nats_url=urls["nats-1"], stream_replicas=3, stream_name="DEPLOYR3"
        )
        # The meta leader is elected shortly after start-up; the services retry likewise.
        for _ in range(60):
            try:
                await ensure_streams(settings)
                break
            except (nats.errors.Error, TimeoutError):
                await asyncio.sleep(0.5)
        else:
            pytest.fail("ensure_streams never succeeded against the cluster")
        info = await wait_for_stream(urls["nats-2"], "DEPLOYR3")
        assert info.config.num_replicas == 3

        nc = await nats.connect(urls["nats-3"])
        try:
            ack = await nc.jetstream().publish(
                "alerts.v1.received.web", b"r3 survives", stream="DEPLOYR3"
            )
        finally:
            await nc.close()
        assert ack.stream == "DEPLOYR3"

        leader = info.cluster.leader  # type: ignore[union-attr]
        assert leader in nodes
        embedded.stop(nodes[leader].proc)
        survivor = next(node for node in NODES if node != leader)
        nc = await nats.connect(urls[survivor], max_reconnect_attempts=10)
        try:
            js = nc.jetstream()
            for _ in range(60):
                try:
                    message = await js.get_msg("DEPLOYR3", ack.seq)
                    break
                except (nats.errors.Error, TimeoutError):
                    await asyncio.sleep(0.5)  # a new leader is being elected
            else:
                pytest.fail("no new stream leader after stopping the old one")
            assert message.data == b"r3 survives"
            new_info = await js.stream_info("DEPLOYR3")
            assert new_info.cluster is not None
            assert new_info.cluster.leader not in {None, leader}
        finally:
            await nc.close()


def test_redis_replica_conf_follows_the_primary(tmp_path: Path) -> None:
    """A replica started from replica.conf copies the primary's writes and refuses its own."""
    primary_port = embedded.free_port()
    replica_port = embedded.free_port()
    primary = embedded.start_redis(primary_port, tmp_path / "primary", tmp_path / "primary.log")
    with ExitStack() as stack:
        stack.callback(embedded.stop, primary)
        embedded.wait_until(
            lambda: embedded.redis_ready(primary_port), timeout_s=20, what="primary", proc=primary
        )
        text = REPLICA_CONF.read_text(encoding="utf-8")
        replacements = {
            r"^replicaof redis 6379$": f"replicaof 127.0.0.1 {primary_port}",
            r"^bind 0\.0\.0\.0$": "bind 127.0.0.1",
            r"^port 6379$": f"port {replica_port}",
            r"^dir /data$": f"dir {tmp_path / 'replica'}",
        }
        for pattern, replacement in replacements.items():
            text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
            assert count == 1, pattern
        (tmp_path / "replica").mkdir()
        conf = tmp_path / "replica.conf"
        conf.write_text(text, encoding="utf-8")
        replica = embedded.spawn(
            [str(embedded.redis_server_binary()), str(conf)], log_path=tmp_path / "replica.log"
        )
        # redis-server 6.2 as a replica can hang in its shutdown after the first AOF rewrite;
        # nothing of it is needed afterwards, so do not wait the default 10 s for it.
        stack.callback(embedded.stop, replica, 2.0)
        embedded.wait_until(
            lambda: embedded.redis_ready(replica_port),
            timeout_s=20,
            what="replica",
            proc=replica,
            log_path=tmp_path / "replica.log",
        )
        writer = redis.Redis(port=primary_port, decode_responses=True)
        reader = redis.Redis(port=replica_port, decode_responses=True)
        stack.callback(writer.close)
        stack.callback(reader.close)
        writer.set("member:1", "sms")
        embedded.wait_until(
            lambda: reader.get("member:1") == "sms",
            timeout_s=20,
            what="replication",
            proc=replica,
            log_path=tmp_path / "replica.log",
        )
        replication = reader.info("replication")
        assert replication["role"] == "slave"
        assert replication["master_link_status"] == "up"
        with pytest.raises(redis.exceptions.ReadOnlyError):
            reader.set("member:2", "telegram")
