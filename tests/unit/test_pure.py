"""Pure functions: subjects, settings, addresses, auth, fan-out, texts, backoff."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.ingest.auth import key_roles, role_of
from services.ingest.normalise import alert_id_for, sender_ref, web_report
from services.notifier.fanout import plan_recipients, recipient_key
from services.notifier.texts import render
from shared import subjects
from shared.addresses import AddressError, normalise_address
from shared.consuming import backoff_s
from shared.schemas import (
    AlertReceived,
    AlertRouted,
    GeoPoint,
    Location,
    Member,
    ReportIn,
    RouteTarget,
)
from shared.settings import IngestSettings, NotifierSettings, RouterSettings

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def alert(**kw: object) -> AlertReceived:
    base: dict[str, object] = {
        "alert_id": "a1", "kind": "report", "channel": "web", "text": "Inbraak",
        "location": Location(lat=51.0, lon=5.0), "called_112": True, "received_at": NOW,
    }
    base.update(kw)
    return AlertReceived.model_validate(base)


def member(mid: str, address: str, channel: str = "sms", group: str = "g") -> Member:
    return Member.model_validate(
        {"member_id": mid, "group_id": group, "channel": channel, "address": address})


@pytest.mark.parametrize(
    ("channel", "subject"),
    [("web", "alerts.v1.received.web"), ("sms", "alerts.v1.received.sms"),
     ("dispatch", "alerts.v1.received.dispatch")],
)
def test_received_subjects_are_versioned_and_low_cardinality(channel: str, subject: str) -> None:
    assert subjects.received(channel) == subject  # type: ignore[arg-type]


def test_unknown_channel_subject_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown channel"):
        subjects.received("fax")  # type: ignore[arg-type]


def test_settings_read_contract_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUURTALERT_HTTP_PORT", "9000")
    monkeypatch.setenv("BUURTALERT_ROUTER_PORT", "9001")
    monkeypatch.setenv("BUURTALERT_NOTIFIER_PORT", "9002")
    monkeypatch.setenv("BUURTALERT_ADMIN_KEYS", "k1, k2,,")
    assert IngestSettings().http_port == 9000
    assert IngestSettings().admin_keys == ["k1", "k2"]
    assert RouterSettings().http_port == 9001
    assert NotifierSettings().http_port == 9002


@pytest.mark.parametrize("keys", ["", "changeme", "short"])
def test_prod_refuses_placeholder_keys(monkeypatch: pytest.MonkeyPatch, keys: str) -> None:
    monkeypatch.setenv("BUURTALERT_ENV", "prod")
    monkeypatch.setenv("BUURTALERT_ADMIN_KEYS", keys)
    monkeypatch.setenv("BUURTALERT_DISPATCH_KEYS", "d" * 32)
    with pytest.raises(ValidationError, match="ADMIN_KEYS"):
        IngestSettings()


@pytest.mark.parametrize(
    ("channel", "raw", "expected"),
    [("sms", "06 12345678", "+31612345678"), ("sms", "+31 6 1234 5678", "+31612345678"),
     ("whatsapp", "0031612345678", "+31612345678"), ("telegram", "-100123", "-100123"),
     ("email", "A@Example.ORG", "a@example.org")],
)
def test_addresses_normalise(channel: str, raw: str, expected: str) -> None:
    assert normalise_address(channel, raw) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("channel", "raw"),
    [("sms", "hello"), ("sms", "0612"), ("telegram", "@someone"), ("email", "no-at-sign")],
)
def test_bad_addresses_are_named(channel: str, raw: str) -> None:
    with pytest.raises(AddressError):
        normalise_address(channel, raw)  # type: ignore[arg-type]


def test_roles_of_keys() -> None:
    keys = [*key_roles(["admin-key"], ["dispatch-key", "both"]), ("both", "admin")]
    assert role_of("admin-key", keys) == {"admin"}
    assert role_of("dispatch-key", keys) == {"dispatch"}
    assert role_of("both", keys) == {"admin", "dispatch"}
    assert role_of("nope", keys) == set()


def test_idempotency_key_gives_stable_alert_id() -> None:
    assert alert_id_for("web", "k") == alert_id_for("web", "k")
    assert alert_id_for("web", "k") != alert_id_for("sms", "k")
    assert alert_id_for("web", None) != alert_id_for("web", None)


def test_web_report_keeps_raw_and_hides_sender() -> None:
    report = ReportIn(text="  Inbraak  ", location=GeoPoint(lat=51, lon=5), called_112=False)
    event = web_report(report, received_at=NOW, client="10.1.2.3", idempotency_key=None)
    assert event.text == "Inbraak"
    assert event.sender_ref == sender_ref("web", "10.1.2.3")
    assert "10.1.2.3" not in event.model_dump_json()
    assert event.raw["called_112"] is False
    assert event.location is not None
    assert event.location.source == "coordinates"


def test_fanout_tells_a_person_in_two_groups_once_preferring_in_area() -> None:
    routed = AlertRouted(
        alert=alert(), routed_at=NOW,
        targets=[RouteTarget(group_id="next", relation="adjacent"),
                 RouteTarget(group_id="home", relation="in_area")],
    )
    members = {
        "next": [member("m1", "+31611111111", group="next"),
                 member("m2", "+31622222222", group="next")],
        "home": [member("m3", "+31611111111", group="home")],
    }
    plan = plan_recipients(routed, members)
    assert len(plan) == 2
    by_addr = {r.address: r for r in plan}
    assert by_addr["+31611111111"].relation == "in_area"
    assert by_addr["+31611111111"].group_id == "home"
    assert by_addr["+31622222222"].relation == "adjacent"


@given(st.lists(st.sampled_from(["+31611111111", "+31622222222", "+31633333333"]), max_size=20))
def test_fanout_never_repeats_a_recipient(addresses: list[str]) -> None:
    routed = AlertRouted(alert=alert(), routed_at=NOW,
                         targets=[RouteTarget(group_id="a"), RouteTarget(group_id="b")])
    members = {"a": [member(f"a{i}", x) for i, x in enumerate(addresses)],
               "b": [member(f"b{i}", x) for i, x in enumerate(reversed(addresses))]}
    plan = plan_recipients(routed, members)
    assert len(plan) == len(set(addresses))
    assert len({r.key for r in plan}) == len(plan)


def test_recipient_key_hides_address() -> None:
    key = recipient_key("sms", "+31612345678")
    assert "612345678" not in key
    assert key.startswith("sms:")


@pytest.mark.parametrize(
    ("called", "relation", "must", "must_not"),
    [(True, "in_area", "112 is gebeld", "aangrenzende"),
     (False, "in_area", "Bel zelf 112", "aangrenzende"),
     (True, "adjacent", "kijk vanuit huis", "nog niet gebeld")],
)
def test_texts_carry_saar_and_observe_from_home(
    called: bool, relation: str, must: str, must_not: str
) -> None:
    text = render(alert(called_112=called), relation)  # type: ignore[arg-type]
    assert must in text
    assert must_not not in text


@pytest.mark.parametrize(
    ("delivered", "after", "expected"), [(1, None, 0.5), (2, None, 1.0), (10, None, 30.0),
                                         (3, 7.0, 7.0)],
)
def test_backoff(delivered: int, after: float | None, expected: float) -> None:
    assert backoff_s(delivered, after) == expected


def test_events_are_frozen_and_versioned() -> None:
    event = alert()
    assert event.schema_version == 1
    with pytest.raises(ValidationError):
        event.text = "x"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        alert(received_at=datetime(2026, 1, 1))  # naive datetime refused


def test_notice_to_admins_reaches_one_admin_per_group_and_stays_with_them() -> None:
    from shared.notices import Circle, Notice, NoticeArea

    notice = Notice.model_validate({
        "notice_id": "n", "sender": "gemeente", "sent": NOW, "category": "other",
        "headline": "Beheerdersoverleg", "raw_format": "json", "audience": "admins",
        "areas": [NoticeArea(circle=Circle(lat=51, lon=5, radius_m=100))]})
    routed = AlertRouted(alert=alert(kind="notice", notice=notice, location=None),
                         routed_at=NOW,
                         targets=[RouteTarget(group_id="a"), RouteTarget(group_id="b")])
    members = {
        "a": [member("a1", "+31611111111", group="a"),
              Member.model_validate({"member_id": "a2", "group_id": "a", "channel": "sms",
                                     "address": "+31622222222", "role": "admin"}),
              Member.model_validate({"member_id": "a3", "group_id": "a", "channel": "sms",
                                     "address": "+31633333333", "role": "admin"})],
        "b": [member("b1", "+31644444444", group="b")],  # no admin: nobody in b
    }
    plan = plan_recipients(routed, members)
    assert len(plan) == 1
    assert plan[0].member_id in {"a2", "a3"}
    assert plan_recipients(routed, members) == plan  # same notice, same admin
