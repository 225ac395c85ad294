"""Dutch reply texts for residents, each short enough for one GSM-7 SMS segment (160)."""

from __future__ import annotations

from typing import Final

# SAAR: 112 comes first, so every confirmation repeats it; buurtalert never replaces 112.
REPORT_CONFIRMATION: Final = "Bedankt, uw melding is doorgegeven. Bij direct gevaar: bel 112."
ASK_112: Final = "Is 112 al gebeld? Antwoord JA of NEE."
ANSWER_112_YES: Final = "Bedankt. Bij uw melding staat nu dat 112 is gebeld."
ANSWER_112_NO: Final = "Bel 112 als er direct gevaar is. Uw melding is doorgegeven."
OPT_OUT_CONFIRMATION: Final = (
    "U bent afgemeld en ontvangt geen buurtmeldingen meer. Stuur AANMELDEN om u weer aan te melden."
)
OPT_IN_CONFIRMATION: Final = (
    "U bent weer aangemeld voor buurtmeldingen. Stuur STOP om u af te melden."
)
JOIN_ASK_PLACE: Final = "Stuur AANMELDEN met uw postcode of adres, bijvoorbeeld: AANMELDEN 1234 AB."
JOIN_ASK_LOCATION: Final = (
    "Deel uw locatie of stuur uw postcode of adres om u aan te melden voor uw buurt."
)
HELP_TEXT: Final = (
    "Buurtalert: bij direct gevaar eerst 112 bellen, stuur daarna wat u ziet. "
    "AANMELDEN + postcode om mee te doen, STOP om af te melden."
)
WELCOME_TEXT: Final = (
    "Welkom bij Buurtalert. Bij direct gevaar: bel eerst 112. Stuur hier wat u ziet, "
    "met uw locatie. Aanmelden voor uw buurt: /aanmelden"
)

# The place echoes what the resident typed: keep it short so the reply stays one segment,
# and printable so a stray control character cannot break a TwiML or JSON body.
_PLACE_MAX = 40


def report_reply(called_112: bool | None) -> str:
    """Confirmation of a report; asks whether 112 was called when the report does not say."""
    if called_112 is None:
        return f"{REPORT_CONFIRMATION} {ASK_112}"
    return REPORT_CONFIRMATION


def answer_112_reply(called_112: bool) -> str:
    """Reply to a JA/NEE answer to the 112 question."""
    return ANSWER_112_YES if called_112 else ANSWER_112_NO


def join_confirmation(place: str) -> str:
    """Confirmation of a join request for a postcode, address or shared location."""
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in place).split())
    if len(cleaned) > _PLACE_MAX:
        cleaned = cleaned[: _PLACE_MAX - 3].rstrip() + "..."
    where = cleaned or "uw buurt"
    return f"Bedankt, uw aanmelding voor {where} is ontvangen. Stuur STOP om u af te melden."
