"""What a resident's report is about: a small, fixed set of topics, for grouping into incidents.

Two reports close in place and time are one incident only when they are about the same thing:
a fire and a burglary 100 m apart stay apart. `topic` reads Dutch (and common English) report
texts by keyword stems; `same_thing` is the rule the incident book applies. Pure functions only.

Matching is on words after folding case, accents and punctuation. A keyword is written as:
``word`` (that word), ``stem*`` (words starting with it), ``*tail`` (words ending in it: Dutch
compounds put the head last, "woninginbraak", "schuurbrand"), ``*core*`` (words containing it),
or several of these separated by spaces for consecutive words ("rijdt langzaam").
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum


class Topic(StrEnum):
    """What a report is about; declared in tie-break order, most urgent and specific first."""

    FIRE = "fire"
    VIOLENCE = "violence"
    MISSING_PERSON = "missing_person"
    BURGLARY = "burglary"
    THEFT = "theft"
    VANDALISM = "vandalism"
    VEHICLE = "vehicle"
    SUSPICIOUS_PERSON = "suspicious_person"
    ANIMAL = "animal"
    NOISE = "noise"
    UNKNOWN = "unknown"


# Only strong signals are keywords. Plain person words (man, vrouw, iemand) are left out on
# purpose: "man rent weg" after a burglary names no topic, so it joins the burglary instead of
# opening a "suspicious person" incident of its own.
# fmt: off
KEYWORDS: dict[Topic, tuple[str, ...]] = {
    Topic.FIRE: (
        "*brand*", "rook*", "vlam*", "*vuur", "fik", "fikkie", "smeul*", "blus*", "geblust",
        "explosie*", "ontplof*", "fire", "fires", "smoke*", "flame*", "burning", "blaze",
    ),
    Topic.VIOLENCE: (
        "vecht*", "gevochten", "knok*", "ruzie*", "geweld*", "*geweld", "mishandel*", "geslagen",
        "neergeslagen", "neergestoken", "steekpartij*", "steekwond*", "mes", "messen", "wapen*",
        "vuurwapen*", "pistool", "schiet*", "geschoten", "schoten", "overval*", "bedreig*",
        "agressie*", "agressief", "fight*", "assault*", "violence", "violent", "stabb*", "knife",
        "shooting",
    ),
    Topic.MISSING_PERSON: (
        "vermist*", "vermiss*", "weggelopen", "dement*", "amberalert", "amber alert",
        "niet thuisgekomen", "niet thuis gekomen", "wordt gezocht", "kind* kwijt", "zoon kwijt",
        "dochter kwijt", "vader kwijt", "moeder kwijt", "opa kwijt", "oma kwijt", "missing",
    ),
    Topic.BURGLARY: (
        "*inbraak*", "*inbrek*", "*inbreek*", "ingebroken", "braak*", "opengebroken",
        "openbrek*", "openbreek*", "geforceerd", "forceer*", "forcer*", "wrik*", "gewrikt",
        "opengewrikt", "openwrik*", "koevoet*", "insluip*", "plofkraak*", "burglar*", "break in",
        "broke in", "breaking in", "broken into",
    ),
    Topic.THEFT: (
        "*diefstal*", "gestolen", "steelt", "stelen", "*dief", "*dieven", "jatten", "jat",
        "gejat", "zakkenroll*", "beroof*", "berov*", "straatroof", "ontvreemd*", "weggenomen",
        "doorgeknipt", "doorknip*", "kniptang*", "stolen", "steal*", "theft", "thief", "thieves",
        "pickpocket*", "robbed", "snatched",
    ),
    Topic.VANDALISM: (
        "vandal*", "verniel*", "beklad*", "graffiti", "bekrast", "lekgestoken", "lek gestoken",
        "lekgeprikt", "ingegooid", "ingeslagen", "kapotgemaakt", "kapot gemaakt",
        "kapotgeslagen", "kapot geslagen", "gesloopt", "sloopt", "spuitbus*", "smashed",
    ),
    Topic.VEHICLE: (
        "*auto", "autos", "bestelwagen", "*bus", "*busje", "scooter*", "brommer*", "bromfiets*",
        "snorfiets*", "motor*", "voertuig*", "kenteken*", "nummerbord*", "rijdt langzaam",
        "reed langzaam", "rijden langzaam", "rondjes", "rondrij*", "stapvoets", "car", "cars",
        "licence plate", "license plate", "number plate",
        # Residents describe vehicles by colour, brand, type and plate (house rules).
        "bmw", "mercedes", "audi", "volkswagen", "vw", "golf", "opel", "toyota", "peugeot",
        "renault", "skoda", "ford", "volvo", "tesla", "kia", "citroen", "fiat",
    ),
    Topic.SUSPICIOUS_PERSON: (
        "verdacht*", "loer*", "geloerd", "gluur*", "gluren", "gegluurd", "bespied*",
        "rondhang*", "hangt rond", "hangen rond", "hangjonger*", "sluip*", "rondsluip*",
        "aanbel*", "belt aan", "bellen aan", "belde aan", "aangebeld", "langs de deuren",
        "deur aan deur", "colport*", "babbeltruc*", "deurklink*", "kijkt naar binnen",
        "keek naar binnen", "suspicious*", "lurk*", "loiter*", "prowl*",
    ),
    Topic.ANIMAL: (
        "*hond", "honden", "hondje", "kat", "katten", "poes*", "poezen", "dier*", "*dier", "vos",
        "vossen", "wolf", "wolven", "*zwijn*", "paard", "paarden", "koe", "koeien", "schaap",
        "schapen", "ree", "reeen", "slang", "rat", "ratten", "loslopend*", "gebeten", "dog",
        "dogs", "cat", "cats", "animal*", "fox", "horse*", "snake",
    ),
    Topic.NOISE: (
        "lawaai*", "herrie", "*overlast", "geluid*", "knal", "knallen", "knalt", "vuurwerk*",
        "muziek", "geschreeuw", "schreeuw*", "gegil", "gillen", "gilt", "*alarm*", "sirene*",
        "toeter*", "getoeter", "noise", "noisy", "loud", "shouting", "screaming",
    ),
}

# Words that contain a keyword but mean something else; a word containing one of these is no
# hit for that topic ("brandgang" is the alley behind the houses, "geweldig" means great).
NOT_FOR: dict[Topic, tuple[str, ...]] = {
    Topic.FIRE: (
        "brandgang", "brandstof", "brandnetel", "brandkast", "brandschoon", "brandmerk",
        "rookworst",
    ),
    Topic.VIOLENCE: ("geweldig",),
    Topic.BURGLARY: ("braakliggend",),
    Topic.VEHICLE: ("politie", "brandweer", "ambulance", "brievenbus", "spuitbus", "motorkap"),
    Topic.SUSPICIOUS_PERSON: ("sluiproute", "sluipverkeer", "sluipweg"),
    Topic.ANIMAL: ("dierbaar", "honderd"),
}
# fmt: on

#: Both texts name no topic: one incident when their content words overlap at least this much.
SIMILARITY_THRESHOLD = 0.2

# Function words, plus the boilerplate of nearly every report (SAAR's "112 is gebeld", "bij
# nummer 12"), which says nothing about what happened and would make every pair look alike.
_STOP = """
    de het een en of maar want dus dan als dat die dit deze daar hier er is was zijn ben bent
    wordt worden werd werden word heeft hebben had hadden heb hebt kan kunnen kon konden zal
    zullen zou zouden moet moeten wil willen mag ik je jij u hij zij ze wij we jullie men me mij
    mijn jouw uw haar hun ons onze hem iemand iets niets niemand alles allemaal iedereen
    van in op aan met voor bij naar uit over onder door tot tegen na om te toe af mee
    niet geen wel nog al ook nu net even toch zo heel erg veel meer weer alweer gewoon eens
    hoe wat wie waar waarom wanneer welke welk zie zag zagen gezien zien kijk
    graag svp aub pas opletten let bedankt dank
    112 gebeld bellen bel politie melding meldingen buurt nummer nr huisnummer
    vandaag vanavond vannacht vanmorgen vanochtend zojuist zonet
    the a an and or but are were be been it this that there here to of on at by
    for with from i you he she they my your his her our their not no now just also very
"""
STOP_WORDS = frozenset(_STOP.split())

_PLATE = re.compile(r"(?<![^\W_])([^\W_]{1,3})-([^\W_]{1,3})-([^\W_]{1,3})(?![^\W_])")
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True, slots=True)
class _Part:
    text: str
    head: bool  # may start anywhere in the word (a leading "*")
    tail: bool  # may end anywhere in the word (a trailing "*")

    def matches(self, word: str) -> bool:
        if self.head and self.tail:
            return self.text in word
        if self.head:
            return word.endswith(self.text)
        if self.tail:
            return word.startswith(self.text)
        return word == self.text


def _pattern(keyword: str) -> tuple[_Part, ...]:
    return tuple(
        _Part(part.strip("*"), part.startswith("*"), part.endswith("*")) for part in keyword.split()
    )


_PATTERNS: dict[Topic, tuple[tuple[_Part, ...], ...]] = {
    t: tuple(_pattern(k) for k in keywords) for t, keywords in KEYWORDS.items()
}


_RANK = {t: i for i, t in enumerate(Topic)}  # ties go to the earlier topic


def fold(text: str) -> str:
    """Lower case without accents ("Oké, RÔOK" -> "oke, rook"); punctuation is kept."""
    # Twice: casefolding can yield composed or decomposable characters ("İ" -> "i̇"), and
    # compatibility decomposition can yield capitals ("ℌ" -> "H"); once more makes it stable.
    for _ in range(2):
        decomposed = unicodedata.normalize("NFKD", text).casefold()
        text = "".join(c for c in decomposed if not unicodedata.combining(c))
    return text


def words(text: str) -> list[str]:
    """The folded words of a text, in order; punctuation and symbols are separators."""
    return _WORD.findall(fold(text))


def _has_plate(folded: str) -> bool:
    # Dutch plates are six letters and digits in three dashed groups ("12-ABC-3", "AB-12-CD").
    for match in _PLATE.finditer(folded):
        chars = "".join(match.groups())
        if len(chars) == 6 and any(c.isdigit() for c in chars) and any(c.isalpha() for c in chars):
            return True
    return False


def _hits(patterns: tuple[tuple[_Part, ...], ...], excluded: tuple[str, ...], ws: list[str]) -> int:
    usable = [not any(x in w for x in excluded) for w in ws]
    matched: set[str] = set()
    for parts in patterns:
        n = len(parts)
        for i in range(len(ws) - n + 1):
            if all(usable[i + j] and parts[j].matches(ws[i + j]) for j in range(n)):
                matched.update(ws[i : i + n])
    # Different words, not occurrences: "rook rook rook" is one hit, "rookwolk en vlammen" two,
    # and a word that fits two keywords ("geweld": geweld*, *geweld) still counts once.
    return len(matched)


def scores(text: str) -> dict[Topic, int]:
    """How many different words of the text fit each topic's keywords (only topics with hits)."""
    folded = fold(text)
    ws = _WORD.findall(folded)
    if _has_plate(folded):
        ws.append("kenteken")
    found = {t: _hits(p, NOT_FOR.get(t, ()), ws) for t, p in _PATTERNS.items()}
    return {t: n for t, n in found.items() if n}


def topic(text: str) -> Topic:
    """The topic of a report text: most keyword hits, ties to the earlier topic, else unknown."""
    found = scores(text)
    if not found:
        return Topic.UNKNOWN
    return max(found, key=lambda t: (found[t], -_RANK[t]))


def content_words(text: str) -> frozenset[str]:
    """The words that carry meaning: folded, minus stop words and stray single letters."""
    return frozenset(w for w in words(text) if w not in STOP_WORDS and (len(w) > 1 or w.isdigit()))


def similarity(a: str, b: str) -> float:
    """Jaccard overlap of the content words of two texts, 0.0 to 1.0 (1.0 when both have none)."""
    wa, wb = content_words(a), content_words(b)
    if not wa and not wb:
        return 1.0
    return len(wa & wb) / len(wa | wb)


def same_thing(topic_a: Topic, text_a: str, topic_b: Topic, text_b: str) -> bool:
    """Whether two reports (close in place and time) are about the same thing."""
    if topic_a is not Topic.UNKNOWN and topic_b is not Topic.UNKNOWN:
        return topic_a is topic_b
    if topic_a is not topic_b:
        # A follow-up naming no topic ("hij loopt nu richting het park") belongs to the incident.
        return True
    if not content_words(text_a) or not content_words(text_b):
        # Nothing to tell them apart, so the same reasoning: it joins.
        return True
    return similarity(text_a, text_b) >= SIMILARITY_THRESHOLD
