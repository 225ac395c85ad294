"""A three-node JetStream cluster with R3 streams: SIGKILL the stream leader while alerts flow.

Every alert the edge answered 202 reaches each member exactly once. During the leader election
the edge may refuse a report with 503 (nothing stored); the poster retries it with the same
Idempotency-Key, as a client should, so every intended alert is accepted in the end.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats.errors
import pytest
from redis import Redis

from shared.outbox import OUTBOX, outcomes_key
from tests.cluster import NatsCluster, running_nats_cluster
from tests.integration.test_end_to_end import SQUARE, STEIN, wait_for
from tests.servers import System, running_redis

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ALERTS = 300
MEMBERS = ["+31612345681", "+31612345682", "+31612345683"]
STREAM = "ALERTS"
#: A pause after each accepted report: 300 reports take about ten seconds on this machine.
PAUSE_S = 0.02
RETRY_PAUSE_S = 0.2
#: Give up on one report after this long; a failover that takes longer fails the test.
GIVE_UP_S = 30.0


@pytest.fixture
def cluster_system(tmp_path: Path) -> Iterator[System]:
    """Three NATS nodes, redis and the three services, the stream at 3 replicas."""
    with (
        running_nats_cluster(tmp_path / "nats") as cluster,
        running_redis(tmp_path) as redis_url,
    ):
        system = System(
            tmp_path, cluster, redis_url, extra_env={"BUURTALERT_STREAM_REPLICAS": "3"}
        )
        try:
            yield system
        finally:
            system.stop_all()


@dataclass
class Poster:
    """Posts reports one after another; a 503 is retried with the same Idempotency-Key."""

    system: System
    accepted: list[str] = field(default_factory=list)
    rejected: list[float] = field(default_factory=list)  # monotonic time of each 503
    unexpected: list[str] = field(default_factory=list)

    def run(self) -> None:
        """Post ALERTS reports."""
        with self.system.client() as client:
            for i in range(ALERTS):
                self._post_until_accepted(client, i)
                time.sleep(PAUSE_S)

    def _post_until_accepted(self, client: httpx.Client, i: int) -> None:
        body = {"text": f"cluster melding {i}", "location": STEIN, "called_112": True}
        headers = {"Idempotency-Key": f"cluster-test-{i}"}
        deadline = time.monotonic() + GIVE_UP_S
        while time.monotonic() < deadline:
            try:
                resp = client.post("/v1/reports", json=body, headers=headers)
            except httpx.HTTPError as exc:
                # Not a clear answer from the edge: the test reports it as a failure.
                self.unexpected.append(f"report {i}: {type(exc).__name__}")
                return
            if resp.status_code == 202:
                self.accepted.append(resp.json()["alert_id"])
                return
            if resp.status_code == 503 and "nothing was stored" in resp.text:
                self.rejected.append(time.monotonic())
                time.sleep(RETRY_PAUSE_S)
                continue
            self.unexpected.append(f"report {i}: {resp.status_code} {resp.text[:200]}")
            return
        self.unexpected.append(f"report {i}: still refused after {GIVE_UP_S:.0f}s")


def current_replicas(cluster: NatsCluster) -> int:
    """Stream peers (leader included) that are up to date."""
    info = cluster.stream_info(STREAM)
    assert info.cluster is not None
    followers = info.cluster.replicas or []
    return (1 if info.cluster.leader else 0) + sum(1 for p in followers if p.current)


def test_killing_the_stream_leader_loses_and_duplicates_nothing(
    cluster_system: System,
) -> None:
    started = time.monotonic()
    system = cluster_system
    cluster = system.nats
    assert isinstance(cluster, NatsCluster)
    system.start_all()

    info = cluster.stream_info(STREAM)
    assert info.config.num_replicas == 3
    assert current_replicas(cluster) == 3
    # Durable consumers have no replica count of their own: they follow the stream (R3).
    consumers = cluster.consumer_infos(STREAM)
    assert consumers
    for consumer in consumers:
        assert consumer.config.num_replicas in (None, 0, 3), consumer.name
        assert consumer.cluster is not None
        assert len(consumer.cluster.replicas or []) == 2

    admin = system.admin_headers()
    with system.client() as client:
        resp = client.post(
            "/v1/groups", headers=admin, json={"id": "g", "name": "Stein", "geometry": SQUARE}
        )
        assert resp.status_code == 201
        for number in MEMBERS:
            resp = client.post(
                "/v1/groups/g/members", headers=admin, json={"channel": "sms", "address": number}
            )
            assert resp.status_code == 201

    # The hardest node to lose: the one most service clients are connected to, made leader of
    # the stream (every PubAck comes from it) and of every consumer before it is killed.
    connections = {node.name: node.client_connections() for node in cluster.nodes}
    victim = cluster.node(max(connections, key=lambda name: connections[name]))
    cluster.move_leaders(STREAM, victim.name)

    poster = Poster(system)
    thread = threading.Thread(target=poster.run)
    thread.start()
    wait_for(lambda: len(poster.accepted), lambda n: n >= ALERTS // 3, timeout_s=60)

    assert _leader_or_none(cluster) == victim.name
    consumer_leaders = sum(
        1 for c in cluster.consumer_infos(STREAM) if c.cluster and c.cluster.leader == victim.name
    )
    victim.kill()
    killed_at = time.monotonic()
    accepted_at_kill = len(poster.accepted)

    new_leader = wait_for(
        lambda: _leader_or_none(cluster),
        lambda leader: leader is not None and leader != victim.name,
        timeout_s=30,
    )
    failover_s = time.monotonic() - killed_at
    thread.join(timeout=90)
    assert not thread.is_alive()
    assert poster.unexpected == []
    assert len(poster.accepted) == ALERTS
    assert len(set(poster.accepted)) == ALERTS
    assert accepted_at_kill < ALERTS // 2, "the node died after most of the traffic"

    # The survivors still carry the stream at three replicas, one of them down.
    info = cluster.stream_info(STREAM)
    assert info.config.num_replicas == 3
    assert info.cluster is not None
    assert len(info.cluster.replicas or []) == 2

    redis = Redis.from_url(system.redis_url, decode_responses=True)
    accepted = set(poster.accepted)
    expected = len(accepted) * len(MEMBERS)

    def delivered_entries() -> list[tuple[str, str]]:
        pairs = [_entry(fields) for _, fields in redis.xrange(OUTBOX) or []]
        return [pair for pair in pairs if pair[0] in accepted]

    entries = wait_for(delivered_entries, lambda es: len(es) >= expected, timeout_s=60)
    time.sleep(1.0)  # a late redelivery would show up as an extra entry
    entries = delivered_entries()
    per_person = Counter(entries)
    duplicates = sum(n - 1 for n in per_person.values() if n > 1)
    lost = expected - len(per_person)
    outcomes = {alert_id: redis.hlen(outcomes_key(alert_id)) for alert_id in accepted}
    # A 503 whose publish did reach the stream (PubAck lost) comes back as a duplicate on retry.
    stored_before_503 = _metric_sum(system, "ingest_alerts_duplicate_total")
    print(
        f"\naccepted {len(accepted)}, delivered {len(per_person)}, lost {lost}, "
        f"duplicates {duplicates}, rejected-during-failover {len(poster.rejected)} "
        f"(of which stored after all and deduplicated on retry: {stored_before_503:.0f}) "
        f"(killed {victim.name} after {accepted_at_kill} accepted: stream leader, leader of "
        f"{consumer_leaders}/{len(consumers)} consumers, {connections[victim.name]} service "
        f"connections; new stream leader {new_leader} after {failover_s:.1f}s)"
    )
    assert lost == 0
    assert duplicates == 0
    assert {a for a, _ in per_person} == accepted
    assert set(outcomes.values()) == {len(MEMBERS)}
    # A 503 only while the stream had no leader, never before the kill.
    assert all(t >= killed_at for t in poster.rejected)

    # A service (re)started while one of the URLs in BUURTALERT_NATS_URL is dead still connects.
    system.kill("ingest")
    system.start("ingest")
    with system.client() as client:
        resp = client.post(
            "/v1/reports", json={"text": "na herstart", "location": STEIN, "called_112": True}
        )
    assert resp.status_code == 202
    late = resp.json()["alert_id"]
    wait_for(lambda: redis.hlen(outcomes_key(late)), lambda n: n == len(MEMBERS), timeout_s=30)
    redis.close()

    # The killed node comes back, catches up, and the stream has three current replicas again.
    victim.start()
    cluster.wait_healthy()
    wait_for(lambda: current_replicas(cluster), lambda n: n == 3, timeout_s=30)
    took_s = time.monotonic() - started
    print(f"restarted {victim.name}: 3 current replicas again; test took {took_s:.1f}s")


def _leader_or_none(cluster: NatsCluster) -> str | None:
    try:
        info = cluster.stream_info(STREAM)
    except (nats.errors.Error, TimeoutError, OSError):
        return None  # no answer while the election runs
    return info.cluster.leader if info.cluster else None


def _entry(fields: dict[Any, Any] | None) -> tuple[str, str]:
    """(alert_id, recipient) of one outbox stream entry."""
    data = json.loads((fields or {})["entry"])
    return str(data["alert_id"]), str(data["recipient"])


def _metric_sum(system: System, name: str) -> float:
    """Sum of one counter over all its labels on the edge's /metrics."""
    text = httpx.get(f"{system.url()}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))
