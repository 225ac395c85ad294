"""House rules, carried by the system: alert streams carry alerts only.

No chatter, no emoji replies, no "duimpjes", nothing off-topic. A message that breaks them is
held for the group admins, not broadcast; the sender is told why. Pure functions only.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

Reason = Literal["emoji_only", "acknowledgement", "chatter", "off_topic", "too_short"]

EXPLANATION: dict[Reason, str] = {
    "emoji_only": "Alleen emoji wordt niet doorgestuurd: deze lijn is alleen voor meldingen.",
    "acknowledgement": "Duimpjes en 'ok' worden niet doorgestuurd: deze lijn is alleen voor "
    "meldingen.",
    "chatter": "Groeten en gesprekken worden niet doorgestuurd: deze lijn is alleen voor "
    "meldingen.",
    "off_topic": "Dit lijkt geen melding (bijv. te koop of gezocht) en is niet doorgestuurd.",
    "too_short": "Uw bericht is te kort om door te sturen. Beschrijf wat u ziet en waar.",
}

_ACKS = {
    "ok", "oke", "oké", "okay", "top", "thx", "thanks", "bedankt", "dank", "dankjewel",
    "dank je", "dank je wel", "dank u", "dank u wel", "merci", "haha", "hahaha", "lol", "ja",
    "nee", "jep", "yes", "goed zo", "super", "prima", "idd", "inderdaad", "klopt", "+1", "duim",
    "duimpje", "gezien", "gelezen", "👍", "👌",
}
_GREETINGS = re.compile(
    r"^(goede(morgen|middag|navond)|goedemorgen|hoi|hallo|hey|hi|doei|welterusten|"
    r"fijne (avond|dag)|fijn weekend|gefeliciteerd|proost)\b", re.IGNORECASE,
)
_OFF_TOPIC = re.compile(
    r"\b(te koop|gratis af te halen|verkoop|gezocht:? oppas|oppas gezocht|wie heeft er|"
    r"verjaardag|rommelmarkt|reclame|link in bio|buurtbarbecue|bbq)\b", re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a message may be broadcast, and if not, why."""

    held: bool
    reason: Reason | None = None

    @property
    def explanation(self) -> str:
        """The short Dutch explanation for the sender ("" when not held)."""
        return EXPLANATION[self.reason] if self.reason else ""


def _has_words(text: str) -> bool:
    return any(unicodedata.category(c)[0] in ("L", "N") for c in text)


def assess(text: str) -> Verdict:
    """The house-rules verdict on a resident's message text."""
    cleaned = " ".join(text.split())
    if not cleaned:
        return Verdict(True, "too_short")
    if not _has_words(cleaned):
        return Verdict(True, "emoji_only")
    bare = re.sub(r"[^\w\s+]", "", cleaned.lower()).strip()
    if cleaned.lower() in _ACKS or bare in _ACKS:
        return Verdict(True, "acknowledgement")
    if _GREETINGS.match(bare) and len(bare.split()) <= 4:
        return Verdict(True, "chatter")
    if _OFF_TOPIC.search(cleaned):
        return Verdict(True, "off_topic")
    if len(bare) < 4:
        return Verdict(True, "too_short")
    return Verdict(False)
