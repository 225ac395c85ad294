"""Fixtures: real servers on free loopback ports, torn down after each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.log_scan import (  # noqa: F401
    _note_service_processes,
    pytest_sessionfinish,
    pytest_terminal_summary,
)
from tests.servers import NatsHandle, System, running_nats, running_redis

#: The handbook's data folder beside the repository (never copied into it).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsHandle]:
    """A fresh nats-server with JetStream (sync_interval always) for one test."""
    with running_nats(tmp_path) as handle:
        yield handle


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A fresh redis-server (append-only) for one test."""
    with running_redis(tmp_path) as url:
        yield url


@pytest.fixture
def system(tmp_path: Path, nats_server: NatsHandle, redis_url: str) -> Iterator[System]:
    """Real servers plus the three services; start them with system.start_all()."""
    sys_ = System(tmp_path, nats_server, redis_url)
    try:
        yield sys_
    finally:
        sys_.stop_all()
