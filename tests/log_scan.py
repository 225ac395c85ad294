"""A pytest plugin: scan every service log the test run wrote for personal data and secrets.

Services must never log a phone number, a token or a message body at info level or above
(GUIDE section 4). Every service process the tests start goes through `embedded.spawn`; this
plugin notes each one's log file and the secrets in its environment, and when the session ends
reads every line at info level or above (and every line that is not JSON, such as a traceback)
and looks for:

- phone numbers: E.164 (`+31612345678`), Dutch mobile (`0612345678`), WhatsApp ids (`316...`);
- the values of environment variables named like a key, token, secret or password;
- message bodies: the fixed sentences every alert text carries, and JSON fields named like a body.

A finding fails the session, with file, line and what was found (the value itself masked), and
the summary goes to test-artifacts/log-scan.json.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from buurtalert import embedded
from services.notifier.texts import TEXTS

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
SERVICE_LOG_NAMES = ("ingest", "router", "notifier")
#: Levels a production deployment logs (the default BUURTALERT_LOG_LEVEL is INFO).
SCANNED_LEVELS = frozenset({"info", "warning", "error", "critical"})
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|AUTH)", re.IGNORECASE)
#: Shorter values ("1", "true") would match by accident; real secrets are longer.
MIN_SECRET_LEN = 8

PHONE_PATTERNS = {
    "e164": re.compile(r"(?<![\w+])\+[1-9]\d{7,14}(?!\w)"),
    # Not inside a longer word: hex ids (alert ids, hashes) may start with "06" and 8 digits.
    "nl_mobile": re.compile(r"(?<![\w.:/-])06\d{8}(?!\w)"),
    "wa_id": re.compile(r"(?<![\w.:/-])316\d{8}(?!\w)"),
}
BODY_FIELDS = frozenset({"text", "body", "Body", "message_text", "headline", "description"})


def _body_fragments() -> tuple[str, ...]:
    """Sentences every outgoing alert text contains in one of them (Dutch or English)."""
    out: list[str] = []
    for texts in TEXTS.values():
        out += [texts.called_112, texts.not_called_112, texts.adjacent, texts.reminder_112]
    return tuple(out)


@dataclass
class Finding:
    """One line that leaks something."""

    path: str
    line: int
    what: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"path": self.path, "line": self.line, "what": self.what}


@dataclass
class LogScan:
    """What the run's service processes wrote, and what must not be in it."""

    logs: set[Path] = field(default_factory=set)
    secrets: set[str] = field(default_factory=set)

    def note_process(self, args: list[str], log_path: Path, env: dict[str, str] | None) -> None:
        """Remember a service's log file and the secrets it was given."""
        if not _is_service(args):
            return
        self.logs.add(log_path)
        for name, value in (env or {}).items():
            if SECRET_NAME.search(name) and len(value) >= MIN_SECRET_LEN:
                self.secrets.add(value)

    def files(self, basetemp: Path | None) -> list[Path]:
        """Noted logs plus any service log under the run's temporary directory."""
        found = set(self.logs)
        if basetemp is not None and basetemp.is_dir():
            for name in SERVICE_LOG_NAMES:
                found.update(basetemp.rglob(f"{name}.log"))
        return sorted(p for p in found if p.is_file())

    def scan(self, files: list[Path]) -> tuple[int, list[Finding]]:
        """Lines read (at a scanned level) and what leaked."""
        fragments = _body_fragments()
        lines = 0
        findings: list[Finding] = []
        for path in files:
            with path.open(encoding="utf-8", errors="replace") as fh:
                for number, raw in enumerate(fh, start=1):
                    line = raw.rstrip("\n")
                    if not line or not _scanned(line):
                        continue
                    lines += 1
                    for what in self._leaks(line, fragments):
                        findings.append(Finding(str(path), number, what))
        return lines, findings

    def _leaks(self, line: str, fragments: tuple[str, ...]) -> Iterator[str]:
        for kind, pattern in PHONE_PATTERNS.items():
            match = pattern.search(line)
            if match:
                yield f"phone number ({kind}) {_mask(match.group())}"
        for secret in self.secrets:
            if secret in line:
                yield f"secret {_mask(secret)}"
        for fragment in fragments:
            if fragment in line:
                yield f"message body ({fragment[:20]}...)"
        record = _json(line)
        if record is not None:
            for key in BODY_FIELDS & record.keys():
                yield f"message body field {key!r}"


def _is_service(args: list[str]) -> bool:
    return (len(args) >= 3 and args[1] == "-m" and args[2].startswith("services.")) or (
        "up" in args and any(a.endswith("buurtalert") for a in args)
    )


def _json(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _scanned(line: str) -> bool:
    """Info and above; a line that is not one of our JSON records is scanned too."""
    record = _json(line)
    if record is None or "level" not in record:
        return True
    return str(record["level"]).lower() in SCANNED_LEVELS


def _mask(value: str) -> str:
    return value[:3] + "*" * max(0, len(value) - 3)


_SCAN = LogScan()
_REPORT: list[str] = []


@pytest.fixture(autouse=True, scope="session")
def _note_service_processes() -> Iterator[None]:
    """Wrap embedded.spawn for the whole session so every service's log is noted."""
    original = embedded.spawn

    def spawn(args: list[str], **kwargs: Any) -> Any:
        _SCAN.note_process(args, kwargs["log_path"], kwargs.get("env"))
        return original(args, **kwargs)

    embedded.spawn = spawn
    try:
        yield
    finally:
        embedded.spawn = original


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Scan the run's service logs; a leak fails the run."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    basetemp = factory.getbasetemp() if factory is not None else None
    files = _SCAN.files(basetemp)
    if not files:
        return
    lines, findings = _SCAN.scan(files)
    ARTIFACTS.mkdir(exist_ok=True)
    summary = {
        "files": len(files),
        "lines_scanned": lines,
        "secrets_checked": len(_SCAN.secrets),
        "findings": [f.as_dict() for f in findings[:200]],
        "findings_total": len(findings),
    }
    (ARTIFACTS / "log-scan.json").write_text(json.dumps(summary, indent=2) + "\n")
    _REPORT.append(
        f"log scan: {lines} lines at info level or above in {len(files)} service logs, "
        f"{len(_SCAN.secrets)} secrets checked, {len(findings)} leaks"
    )
    _REPORT.extend(f"  LEAK {f.path}:{f.line}: {f.what}" for f in findings[:20])
    if findings and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the scan's result after the test results."""
    for line in _REPORT:
        terminalreporter.write_line(line)
