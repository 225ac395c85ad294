"""Alert texts in Dutch and English: SAAR, observe from home, drills, updates, subjects."""

from __future__ import annotations

import itertools
from dataclasses import fields
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.notifier.texts import (
    FIRST_LINE_PREFIX_MAX,
    SUBJECT_MAX,
    TEXTS,
    Language,
    render,
    subject,
)
from shared.notices import Circle, Notice, NoticeArea
from shared.schemas import AlertReceived, Relation

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
LANGUAGES: list[Language] = ["nl", "en"]

#: GSM 03.38 basic character set: text made only of these stays in 160-character SMS segments.
GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)


def report(text: str = "Inbraak bij nr 4", called_112: bool | None = True) -> AlertReceived:
    return AlertReceived(
        alert_id="a1",
        kind="report",
        channel="web",
        text=text,
        called_112=called_112,
        received_at=NOW,
    )


def notice_alert(
    text: str = "Vermist: meisje, 12 jaar, rode jas",
    headline: str = "",
    status: str = "Actual",
    msg_type: str = "Alert",
    expired: bool = False,
) -> AlertReceived:
    notice = Notice.model_validate(
        {
            "notice_id": "n1",
            "sender": "politie",
            "sent": NOW,
            "category": "missing_person",
            "headline": headline,
            "text": text,
            "raw_format": "json",
            "status": status,
            "msg_type": msg_type,
            "references": [] if msg_type == "Alert" else ["n0"],
            "expired": expired,
            "areas": [NoticeArea(circle=Circle(lat=52.1, lon=5.1, radius_m=500))],
        }
    )
    return AlertReceived(
        alert_id="a2", kind="notice", channel="dispatch", text=text, received_at=NOW, notice=notice
    )


# --- Dutch: the residents' language, unchanged output ---------------------------------------


def test_dutch_report_in_area() -> None:
    assert render(report(), "in_area") == (
        "Melding uit de buurt: Inbraak bij nr 4\n"
        "112 is gebeld.\n"
        "Reageer niet in de groep; bel bij spoed 112."
    )


def test_dutch_report_adjacent_not_called() -> None:
    assert render(report(called_112=False), "adjacent", ["Centrum"]) == (
        "Melding uit de buurt (Centrum): Inbraak bij nr 4\n"
        "112 is nog niet gebeld. Ziet u iets dringends? Bel zelf 112.\n"
        "Dit speelt in een aangrenzende buurt: kijk vanuit huis, ga er niet heen.\n"
        "Reageer niet in de groep; bel bij spoed 112."
    )


@pytest.mark.parametrize(
    ("alert", "count", "first_line"),
    [
        (report(), 4, "Update (4 meldingen): Inbraak bij nr 4"),
        (notice_alert(), 1, "Politiebericht: Vermist: meisje, 12 jaar, rode jas"),
        (notice_alert(msg_type="Update"), 1, "Update politiebericht: Vermist"),
        (notice_alert(msg_type="Cancel"), 1, "Ingetrokken politiebericht: Vermist"),
        (notice_alert(expired=True), 1, "Afgelopen politiebericht: Vermist"),
        (notice_alert(status="Exercise"), 1, "[OEFENING] Politiebericht: Vermist"),
        (notice_alert(status="Test", msg_type="Update"), 1, "[TEST] Update politiebericht:"),
    ],
)
def test_dutch_heads(alert: AlertReceived, count: int, first_line: str) -> None:
    text = render(alert, "in_area", incident_count=count)
    assert text.splitlines()[0].startswith(first_line)
    # Notices carry no 112 status line: dispatch is the police itself.
    assert ("gebeld" in text) is (alert.kind == "report")


def test_dutch_is_the_default_language() -> None:
    assert render(report(), "adjacent") == render(report(), "adjacent", language="nl")


# --- English --------------------------------------------------------------------------------


def test_english_report_adjacent() -> None:
    assert render(report(called_112=False), "adjacent", ["Centrum"], language="en") == (
        "Neighbourhood report (Centrum): Inbraak bij nr 4\n"
        "112 has not been called yet. See something urgent? Call 112 yourself.\n"
        "This is happening in an adjacent neighbourhood: watch from home, do not go there.\n"
        "Do not reply in the group; in an emergency call 112."
    )


def test_english_report_called() -> None:
    assert render(report(), "in_area", language="en").splitlines()[1] == "112 has been called."


@pytest.mark.parametrize(
    ("alert", "count", "first_line"),
    [
        (report(), 3, "Update (3 reports): Inbraak bij nr 4"),
        (notice_alert(), 1, "Police notice: Vermist"),
        (notice_alert(msg_type="Update"), 1, "Update: police notice: Vermist"),
        (notice_alert(msg_type="Cancel"), 1, "Withdrawn: police notice: Vermist"),
        (notice_alert(expired=True), 1, "Ended: police notice: Vermist"),
        (notice_alert(status="Exercise"), 1, "[EXERCISE] Police notice: Vermist"),
        (notice_alert(status="Test"), 1, "[TEST] Police notice: Vermist"),
    ],
)
def test_english_heads(alert: AlertReceived, count: int, first_line: str) -> None:
    text = render(alert, "in_area", incident_count=count, language="en")
    assert text.splitlines()[0].startswith(first_line)


_CASES = list(
    itertools.product(
        [
            report(),
            report(called_112=False),
            report(called_112=None),
            notice_alert(),
            notice_alert(status="Exercise", msg_type="Cancel"),
            notice_alert(expired=True),
        ],
        ["in_area", "adjacent"],
        [None, ["Centrum", "Oost"]],
        [1, 5],
    )
)


@pytest.mark.parametrize(("alert", "relation", "areas", "count"), _CASES)
def test_every_dutch_line_has_an_english_equivalent(
    alert: AlertReceived, relation: Relation, areas: list[str] | None, count: int
) -> None:
    nl = render(alert, relation, areas, count, language="nl").splitlines()
    en = render(alert, relation, areas, count, language="en").splitlines()
    assert len(nl) == len(en)
    english = "\n".join(en)
    for dutch_word in ("gebeld", "buurt ", "Reageer", "meldingen", "Politiebericht", "OEFENING"):
        assert dutch_word not in english


def _gsm7(template: str) -> bool:
    # Placeholders are filled with GSM-7 text (a head, a count) before sending.
    return set(template.replace("{head}", "").replace("{count}", "")) <= GSM7


def test_tables_are_complete_and_gsm7() -> None:
    nl, en = TEXTS["nl"], TEXTS["en"]
    for field in fields(nl):
        dutch, english = getattr(nl, field.name), getattr(en, field.name)
        if isinstance(dutch, str):
            assert dutch, field.name
            assert english, field.name
            assert _gsm7(dutch), field.name
            assert _gsm7(english), field.name
        else:
            assert set(dutch) == set(english), field.name
            assert all(_gsm7(v) for v in (*dutch.values(), *english.values())), field.name


@pytest.mark.parametrize("language", LANGUAGES)
def test_many_areas_keep_the_first_line_prefix_within_one_segment(language: Language) -> None:
    areas = [f"Buurt nummer {i}" for i in range(12)]
    first = render(report(), "in_area", areas, language=language).splitlines()[0]
    prefix = first[: first.index("): ") + 3]
    assert len(prefix) <= FIRST_LINE_PREFIX_MAX
    assert "Buurt nummer 0" in prefix
    assert "+" in prefix  # the rest is counted, not silently dropped


# --- E-mail subjects ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alert", "language", "expected"),
    [
        (report(), "nl", "Melding uit de buurt: Inbraak bij nr 4"),
        (report(), "en", "Neighbourhood report: Inbraak bij nr 4"),
        (notice_alert(headline="Vermist meisje"), "nl", "Politiebericht: Vermist meisje"),
        (
            notice_alert(headline="Vermist meisje", status="Exercise"),
            "en",
            "[EXERCISE] Police notice: Vermist meisje",
        ),
        (
            notice_alert(headline="Vermist meisje", msg_type="Cancel"),
            "nl",
            "Ingetrokken politiebericht: Vermist meisje",
        ),
        (notice_alert(), "en", "Police notice: Vermist: meisje, 12 jaar, rode jas"),
    ],
)
def test_subject(alert: AlertReceived, language: Language, expected: str) -> None:
    assert subject(alert, language) == expected


def test_subject_counts_incident_reports() -> None:
    assert subject(report(), "nl", incident_count=3) == "Update (3 meldingen): Inbraak bij nr 4"


@pytest.mark.parametrize("language", LANGUAGES)
@given(text=st.text(min_size=1, max_size=400))
def test_subject_is_one_short_line(language: Language, text: str) -> None:
    line = subject(report(text=text), language)
    assert len(line) <= SUBJECT_MAX
    assert "\n" not in line
    assert "\r" not in line
    assert line == line.strip()
