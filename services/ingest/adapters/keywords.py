"""Keyword classification shared by the chat adapters: opt-out, join, 112 answers, reports."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from shared.schemas import Location


class CommandKind(StrEnum):
    """What an inbound message asks of us."""

    REPORT = "report"
    LOCATION = "location"
    ANSWER_112 = "answer_112"
    JOIN = "join"
    OPT_IN = "opt_in"
    OPT_OUT = "opt_out"
    HELP = "help"
    START = "start"
    IGNORE = "ignore"


@dataclass(frozen=True, slots=True)
class Command:
    """A classified inbound message.

    `text` is the report text, the join place or the rest after a keyword; `keyword` the
    upper-case keyword that matched ("" for a report); `called_112` the answer or what the
    report text says about 112; `location` a location shared with the message.
    """

    kind: CommandKind
    text: str = ""
    keyword: str = ""
    called_112: bool | None = None
    location: Location | None = None


# Twilio's default keywords (long codes and toll-free): Twilio itself blocks or unblocks the
# number and answers these, so we record the opt-out but must not send a second reply.
TWILIO_OPT_OUT: Final = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
TWILIO_OPT_IN: Final = frozenset({"START", "YES", "UNSTOP"})
TWILIO_HELP: Final = frozenset({"HELP", "INFO"})

# Dutch words Twilio does not know; we answer these ourselves.
DUTCH_OPT_OUT: Final = frozenset({"AFMELDEN", "UITSCHRIJVEN", "STOP"})
DUTCH_OPT_IN: Final = frozenset({"AANMELDEN"})
DUTCH_HELP: Final = frozenset({"HULP"})

OPT_OUT_WORDS: Final = TWILIO_OPT_OUT | DUTCH_OPT_OUT
OPT_IN_WORDS: Final = TWILIO_OPT_IN | DUTCH_OPT_IN
HELP_WORDS: Final = TWILIO_HELP | DUTCH_HELP
JOIN_WORD: Final = "AANMELDEN"
ANSWER_WORDS: Final = {"JA": True, "NEE": False}

# "Ja, al gebeld" is an answer; "Nee, er loopt iemand door de tuinen van de Dorpsstraat" is a
# report that happens to start with "nee". Short messages are answers, long ones reports.
_ANSWER_MAX_WORDS = 4
_TRIM = ".,!?;:-"

# What a report says about 112 (SAAR): checked for "not called" first, as it contains the
# positive phrase ("112 is niet gebeld").
_NOT_CALLED = re.compile(
    r"\b112\s+(?:is\s+|werd\s+)?(?:nog\s+)?niet\s+(?:gebeld|ingeschakeld)"
    r"|\bniet\s+(?:naar\s+|met\s+)?112\s+gebeld"
    r"|\bgeen\s+112\b",
    re.IGNORECASE,
)
_CALLED = re.compile(
    r"\b112\s+(?:is\s+|werd\s+)?(?:al\s+|reeds\s+)?(?:gebeld|ingeschakeld|gewaarschuwd)"
    r"|\b(?:heb|hebben|heeft)\s+(?:al\s+|net\s+)?(?:naar\s+)?112\s+gebeld",
    re.IGNORECASE,
)


def says_112(text: str) -> bool | None:
    """Whether a report's text says 112 was called (True), was not (False), or neither."""
    if _NOT_CALLED.search(text):
        return False
    if _CALLED.search(text):
        return True
    return None


def keyword_of(word: str) -> str:
    """A word as a keyword: trimmed of punctuation, upper case; "" when not plain ASCII."""
    trimmed = word.strip(_TRIM)
    # ASCII only: str.upper() maps some non-ASCII letters onto ASCII ("ſtop" -> "STOP").
    if not trimmed.isascii():
        return ""
    return trimmed.upper()


def classify_text(text: str) -> Command:
    """Classify a free-text message: keyword, join, 112 answer, or a report."""
    words = text.split()
    if not words:
        return Command(CommandKind.IGNORE)
    keyword = keyword_of(words[0])
    rest = " ".join(words[1:]).lstrip(_TRIM + " ")
    if len(words) == 1 or not rest:
        # Providers act on single-word keywords only ("STOP PLEASE" is not an opt-out).
        if keyword in OPT_OUT_WORDS:
            return Command(CommandKind.OPT_OUT, keyword=keyword)
        if keyword in OPT_IN_WORDS:
            return Command(CommandKind.OPT_IN, keyword=keyword)
        if keyword in HELP_WORDS:
            return Command(CommandKind.HELP, keyword=keyword)
    if keyword == JOIN_WORD and rest:
        return Command(CommandKind.JOIN, text=rest, keyword=keyword)
    if keyword in ANSWER_WORDS and len(words) <= _ANSWER_MAX_WORDS:
        return Command(
            CommandKind.ANSWER_112, text=rest, keyword=keyword, called_112=ANSWER_WORDS[keyword]
        )
    body = text.strip()
    return Command(CommandKind.REPORT, text=body, called_112=says_112(body))
