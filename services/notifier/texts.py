"""Message texts in Dutch (the residents' language), short enough for one SMS where possible."""

from __future__ import annotations

from shared.schemas import AlertReceived, Relation

_KIND = {"report": "Melding uit de buurt", "notice": "Politiebericht"}


_MSG_TYPE = {"Update": "Update", "Cancel": "Ingetrokken"}
_STATUS = {"Exercise": "OEFENING", "Test": "TEST"}


def render(
    alert: AlertReceived,
    relation: Relation,
    area_names: list[str] | None = None,
    incident_count: int = 1,
) -> str:
    """The text one recipient receives for one alert."""
    head = _KIND.get(alert.kind, "Melding")
    if incident_count > 1:
        head = f"Update ({incident_count} meldingen)"
    notice = alert.notice
    if notice is not None:
        if notice.expired:
            head = f"Afgelopen {head.lower()}"
        elif notice.msg_type in _MSG_TYPE:
            head = f"{_MSG_TYPE[notice.msg_type]} {head.lower()}"
        if notice.status in _STATUS:
            head = f"[{_STATUS[notice.status]}] {head}"
    where = f" ({', '.join(area_names)})" if area_names else ""
    lines = [f"{head}{where}: {alert.text}"]
    if alert.kind == "report":
        if alert.called_112:
            lines.append("112 is gebeld.")
        else:
            lines.append("112 is nog niet gebeld. Ziet u iets dringends? Bel zelf 112.")
    if relation == "adjacent":
        lines.append("Dit speelt in een aangrenzende buurt: kijk vanuit huis, ga er niet heen.")
    lines.append("Reageer niet in de groep; bel bij spoed 112.")
    return "\n".join(lines)
