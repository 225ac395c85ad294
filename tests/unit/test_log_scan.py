"""The log scan finds what must never be logged, and passes what may be."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.log_scan import LogScan

pytestmark = pytest.mark.unit

SECRET = "sk-test-0123456789abcdef"


def scan_lines(tmp_path: Path, lines: list[str]) -> list[str]:
    """What a scan of a notifier log holding these lines reports."""
    log = tmp_path / "scanned-by-this-test.log"  # not a name the session scan picks up
    log.write_text("\n".join(lines) + "\n")
    scan = LogScan()
    scan.note_process(
        ["/usr/bin/python", "-m", "services.notifier"],
        log,
        {"TWILIO_AUTH_TOKEN": SECRET, "BUURTALERT_LOG_JSON": "true", "PATH": "/usr/bin"},
    )
    _, findings = scan.scan(scan.files(None))
    return [f.what for f in findings]


def rec(level: str, msg: str, **extra: object) -> str:
    return json.dumps({"level": level, "service": "notifier", "msg": msg, **extra})


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (rec("info", "sent to +31612345678"), "phone number (e164)"),
        (rec("warning", "bad number 0612345678"), "phone number (nl_mobile)"),
        (rec("info", "wa 31612345678 replied"), "phone number (wa_id)"),
        (rec("error", f"auth failed with {SECRET}"), "secret"),
        (rec("info", "x", text="Inbraak bij de bakker"), "message body field 'text'"),
        (rec("info", "Melding: 112 is gebeld."), "message body"),
        ("Traceback: To=+31612345678", "phone number (e164)"),
    ],
)
def test_leaks_are_found(tmp_path: Path, line: str, expected: str) -> None:
    assert any(w.startswith(expected) for w in scan_lines(tmp_path, [line]))


def test_masked_in_the_report(tmp_path: Path) -> None:
    found = scan_lines(tmp_path, [rec("info", f"token {SECRET}")])
    assert found
    assert SECRET not in " ".join(found)


@pytest.mark.parametrize(
    "line",
    [
        rec("debug", "sent to +31612345678"),  # debug is off in production
        rec("info", "delivery delivered", delivery_id="a1b2.sms:0612345678abcdef01"),
        rec("info", "accepted alert", alert_id="0f3e06123456789a", ts="2026-12-03T21:06:12+00:00"),
        rec("info", "stream seq 1706123456789"),
        # Hex ids that begin like a number: an alert id seen in the fault suite's logs.
        rec("info", "accepted alert", alert_id="0655501881c75fb8b94edb38a665ed68"),
        rec("info", "x", alert_id="31612345678abcdef", ref="+31612345678ab"),
    ],
)
def test_harmless_lines_pass(tmp_path: Path, line: str) -> None:
    assert scan_lines(tmp_path, [line]) == []


def test_only_service_processes_are_noted(tmp_path: Path) -> None:
    scan = LogScan()
    scan.note_process(
        ["/bin/nats-server", "-c", "x.conf"], tmp_path / "nats.log", {"K_TOKEN": SECRET}
    )
    assert scan.logs == set()
    assert scan.secrets == set()
