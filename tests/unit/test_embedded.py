"""The embedded run: config rendering and what is in the way of a start."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from buurtalert import embedded
from buurtalert.supervisor import Supervisor, UpConfig, UpError, load_or_create_key

pytestmark = pytest.mark.unit


def test_nats_config_promises_durability(tmp_path: Path) -> None:
    text = embedded.NatsConfig(port=1, monitor_port=2, store_dir=tmp_path).render()
    assert "sync_interval: always" in text
    assert "max_file_store" in text
    assert "max_memory_store" in text
    assert str(tmp_path) in text
    assert "host: 127.0.0.1" in text


def test_binaries_ship_with_the_python_dependencies() -> None:
    assert embedded.nats_server_binary().exists()
    assert embedded.redis_server_binary().exists()


def test_port_in_use_is_named(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        cfg = UpConfig(data_dir=tmp_path, http_port=busy, router_port=embedded.free_port(),
                       notifier_port=embedded.free_port(), nats_port=embedded.free_port(),
                       nats_monitor_port=embedded.free_port(), redis_port=embedded.free_port())
        with pytest.raises(UpError, match=rf"BUURTALERT_HTTP_PORT\) port {busy}"):
            Supervisor(cfg, say=lambda _m: None)._claim()


def test_stale_pid_file_is_cleared(tmp_path: Path) -> None:
    cfg = UpConfig(data_dir=tmp_path, http_port=embedded.free_port(),
                   router_port=embedded.free_port(), notifier_port=embedded.free_port(),
                   nats_port=embedded.free_port(), nats_monitor_port=embedded.free_port(),
                   redis_port=embedded.free_port())
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "supervisor.pid").write_text("999999")
    said: list[str] = []
    Supervisor(cfg, say=said.append)._claim()
    assert any("stale pid file" in m for m in said)


def test_generated_key_is_private_and_stable(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "admin.key")
    assert len(key) >= 24
    assert (tmp_path / "admin.key").stat().st_mode & 0o077 == 0
    assert load_or_create_key(tmp_path / "admin.key") == key


def test_bad_port_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUURTALERT_REDIS_PORT", "six")
    with pytest.raises(UpError, match="BUURTALERT_REDIS_PORT"):
        UpConfig.from_env()
