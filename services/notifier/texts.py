"""Message texts in Dutch (the residents' language) and English, one table per language.

Templates use only the GSM 03.38 basic character set, so an alert that is itself plain text
stays in 160-character SMS segments instead of falling back to 70-character UCS-2 ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from shared.schemas import AlertReceived, Relation

Language = Literal["nl", "en"]

#: Longest e-mail subject we write: RFC 5322's recommended line length, so no client folds it.
SUBJECT_MAX = 78
#: Budget for the "what (where): " prefix of the first line: one UCS-2 SMS segment, so even a
#: message with one non-GSM character shows what happened and where in its first segment.
FIRST_LINE_PREFIX_MAX = 70


@dataclass(frozen=True, slots=True)
class _Texts:
    """Every fixed string of one language; `{head}` and `{count}` are filled in."""

    kind: MappingProxyType[str, str]  # by AlertReceived.kind
    default_kind: str
    incident: str  # "{count}" reports folded into one incident
    expired: str  # "{head}": closing message after the notice expired
    msg_type: MappingProxyType[str, str]  # "{head}" by CAP msgType (Update, Cancel)
    status: MappingProxyType[str, str]  # drill markers by CAP status
    called_112: str
    not_called_112: str
    adjacent: str  # observe from home: the house rule for adjacent areas
    reminder_112: str
    more_areas: str  # "{count}" area names left out of the first line


_NL = _Texts(
    kind=MappingProxyType({"report": "Melding uit de buurt", "notice": "Politiebericht"}),
    default_kind="Melding",
    incident="Update ({count} meldingen)",
    expired="Afgelopen {head}",
    msg_type=MappingProxyType({"Update": "Update {head}", "Cancel": "Ingetrokken {head}"}),
    status=MappingProxyType({"Exercise": "OEFENING", "Test": "TEST"}),
    called_112="112 is gebeld.",
    not_called_112="112 is nog niet gebeld. Ziet u iets dringends? Bel zelf 112.",
    adjacent="Dit speelt in een aangrenzende buurt: kijk vanuit huis, ga er niet heen.",
    reminder_112="Reageer niet in de groep; bel bij spoed 112.",
    more_areas="+{count}",
)

_EN = _Texts(
    kind=MappingProxyType({"report": "Neighbourhood report", "notice": "Police notice"}),
    default_kind="Report",
    incident="Update ({count} reports)",
    expired="Ended: {head}",
    msg_type=MappingProxyType({"Update": "Update: {head}", "Cancel": "Withdrawn: {head}"}),
    status=MappingProxyType({"Exercise": "EXERCISE", "Test": "TEST"}),
    called_112="112 has been called.",
    not_called_112="112 has not been called yet. See something urgent? Call 112 yourself.",
    adjacent="This is happening in an adjacent neighbourhood: watch from home, do not go there.",
    reminder_112="Do not reply in the group; in an emergency call 112.",
    more_areas="+{count}",
)

TEXTS: MappingProxyType[Language, _Texts] = MappingProxyType({"nl": _NL, "en": _EN})


def _head(alert: AlertReceived, texts: _Texts, incident_count: int) -> str:
    head = texts.kind.get(alert.kind, texts.default_kind)
    if incident_count > 1:
        head = texts.incident.format(count=incident_count)
    notice = alert.notice
    if notice is not None:
        if notice.expired:
            head = texts.expired.format(head=head.lower())
        elif notice.msg_type in texts.msg_type:
            head = texts.msg_type[notice.msg_type].format(head=head.lower())
        if notice.status in texts.status:
            head = f"[{texts.status[notice.status]}] {head}"
    return head


def _where(head: str, area_names: list[str], texts: _Texts) -> str:
    """The " (areas)" part; later names become "+N" when listing all would crowd segment one."""
    shown = list(area_names)
    hidden = 0
    while len(shown) > 1 and len(f"{head} ({', '.join(shown)}): ") > FIRST_LINE_PREFIX_MAX:
        shown.pop()
        hidden += 1
    if hidden:
        shown.append(texts.more_areas.format(count=hidden))
    return f" ({', '.join(shown)})"


def render(
    alert: AlertReceived,
    relation: Relation,
    area_names: list[str] | None = None,
    incident_count: int = 1,
    *,
    language: Language = "nl",
) -> str:
    """The text one recipient receives for one alert."""
    texts = TEXTS[language]
    head = _head(alert, texts, incident_count)
    where = _where(head, area_names, texts) if area_names else ""
    lines = [f"{head}{where}: {alert.text}"]
    if alert.kind == "report":
        # SAAR: say whether 112 was called, so that not every member calls (or nobody does).
        lines.append(texts.called_112 if alert.called_112 else texts.not_called_112)
    if relation == "adjacent":
        lines.append(texts.adjacent)
    lines.append(texts.reminder_112)
    return "\n".join(lines)


def subject(alert: AlertReceived, language: Language = "nl", *, incident_count: int = 1) -> str:
    """A one-line e-mail subject: what kind of alert, and its headline or the start of its text."""
    texts = TEXTS[language]
    head = _head(alert, texts, incident_count)
    notice = alert.notice
    topic = notice.headline if notice is not None and notice.headline else alert.text
    # Header values may not carry line breaks (header injection); collapse all whitespace.
    line = " ".join(f"{head}: {topic}".split())
    if len(line) <= SUBJECT_MAX:
        return line
    return line[: SUBJECT_MAX - 1].rstrip() + "…"
