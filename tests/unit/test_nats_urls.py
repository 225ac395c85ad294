"""BUURTALERT_NATS_URL: one URL or a cluster's URLs separated by commas."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.settings import BaseServiceSettings, RouterSettings, split_nats_urls

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


@pytest.mark.parametrize(
    ("value", "servers"),
    [
        ("nats://127.0.0.1:4222", ["nats://127.0.0.1:4222"]),
        (
            "nats://n1:4222,nats://n2:4222,nats://n3:4222",
            ["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"],
        ),
        (" nats://n1:4222 , nats://n2:4222 ,", ["nats://n1:4222", "nats://n2:4222"]),
        ("tls://user:pw@n1:4222,tls://n2", ["tls://user:pw@n1:4222", "tls://n2"]),
    ],
)
def test_split_nats_urls(value: str, servers: list[str]) -> None:
    assert split_nats_urls(value) == servers


@pytest.mark.parametrize("value", ["", " ", ",", " , ,"])
def test_split_nats_urls_refuses_an_empty_list(value: str) -> None:
    with pytest.raises(ValueError, match="names no server"):
        split_nats_urls(value)


def test_settings_read_a_server_list_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUURTALERT_NATS_URL", "nats://a:1,nats://b:2,nats://c:3")
    settings = RouterSettings()
    assert settings.nats_url == "nats://a:1,nats://b:2,nats://c:3"
    assert settings.nats_servers == ["nats://a:1", "nats://b:2", "nats://c:3"]


def test_settings_default_is_one_local_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUURTALERT_NATS_URL", raising=False)
    assert BaseServiceSettings().nats_servers == ["nats://127.0.0.1:4222"]


def test_settings_refuse_an_empty_server_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUURTALERT_NATS_URL", " , ")
    with pytest.raises(ValidationError, match="names no server"):
        RouterSettings()
