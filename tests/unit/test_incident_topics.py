"""What a report is about, and when two reports are about the same thing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.incident_topics import (
    KEYWORDS,
    NOT_FOR,
    SIMILARITY_THRESHOLD,
    STOP_WORDS,
    Topic,
    content_words,
    fold,
    same_thing,
    similarity,
    topic,
    words,
)

pytestmark = pytest.mark.unit

F, B, U = Topic.FIRE, Topic.BURGLARY, Topic.UNKNOWN


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # fire
        ("Rookwolk boven de loods, 112 is gebeld", Topic.FIRE),
        ("Brandweer is er nu", Topic.FIRE),
        ("zie nu ook rook bij nummer 12", Topic.FIRE),
        ("Schuurbrand achter de school!", Topic.FIRE),
        ("VLAMMEN slaan uit het dak", Topic.FIRE),
        ("Auto in brand op de parkeerplaats", Topic.FIRE),  # the fire outranks the car
        ("Smoke coming from the roof", Topic.FIRE),
        # burglary
        ("Inbraak bij nummer 14, deur geforceerd", Topic.BURGLARY),
        ("Woninginbraak aan de Dorpsstraat", Topic.BURGLARY),
        ("Er is ingebroken bij de buren", Topic.BURGLARY),
        ("Inbraakpoging: raam opengewrikt", Topic.BURGLARY),
        ("Inbrekers gezien in de achtertuin", Topic.BURGLARY),
        ("Sporen van braak aan de achterdeur", Topic.BURGLARY),
        ("Inbraakalarm gaat af bij de bakker", Topic.BURGLARY),  # not noise
        ("Someone tried to break-in at no. 5", Topic.BURGLARY),
        # suspicious person
        ("Verdachte man loert in tuinen", Topic.SUSPICIOUS_PERSON),
        ("Verdacht persoon belt aan bij deuren", Topic.SUSPICIOUS_PERSON),
        ("Vrouw gluurt bij de ramen naar binnen", Topic.SUSPICIOUS_PERSON),
        ("Jongens hangen rond bij de garageboxen", Topic.SUSPICIOUS_PERSON),
        ("Verdachte man in de brandgang", Topic.SUSPICIOUS_PERSON),  # brandgang: no fire
        # vehicle
        ("Verdachte auto, grijze Golf, kenteken 12-ABC-3, rijdt rondjes", Topic.VEHICLE),
        ("Wit busje rijdt langzaam door de straat", Topic.VEHICLE),
        ("Verdachte scooter met twee personen", Topic.VEHICLE),
        ("Zwarte BMW, XX-999-X", Topic.VEHICLE),
        ("Grijze Peugeot 1-ABC-23 staat al uren stil", Topic.VEHICLE),
        # theft
        ("Fiets gestolen bij het station", Topic.THEFT),
        ("Fietsendiefstal bij de Jumbo", Topic.THEFT),
        ("Pas op voor zakkenrollers op de markt", Topic.THEFT),
        ("Pakket van de stoep gejat", Topic.THEFT),
        ("Auto gestolen vannacht", Topic.THEFT),  # the theft outranks the car
        # vandalism
        ("Bushokje vernield", Topic.VANDALISM),
        ("Banden lek gestoken in de Kerkstraat", Topic.VANDALISM),
        ("Ruit ingegooid bij de school", Topic.VANDALISM),
        ("Muur beklad met graffiti", Topic.VANDALISM),
        # violence
        ("Vechtpartij op het plein", Topic.VIOLENCE),
        ("Harde ruzie en geweld op straat", Topic.VIOLENCE),
        ("Man met mes bedreigt voorbijgangers", Topic.VIOLENCE),
        # missing person
        ("Oudere man vermist, dementerend", Topic.MISSING_PERSON),
        ("Kind kwijt in het park, blauwe jas", Topic.MISSING_PERSON),
        ("Vermissing: meisje van 8", Topic.MISSING_PERSON),
        # animal
        ("Loslopende hond in de speeltuin", Topic.ANIMAL),
        ("Zwerfkat gewond langs de weg, dierenambulance gebeld", Topic.ANIMAL),
        ("Wilde zwijnen in de wijk", Topic.ANIMAL),
        # noise
        ("Harde knal en geschreeuw", Topic.NOISE),
        ("Geluidsoverlast van de buren", Topic.NOISE),
        ("Vuurwerk bij de flat", Topic.NOISE),
        # unknown
        ("hij loopt nu richting het park", Topic.UNKNOWN),
        ("Man probeert fietsen te openen bij de kerk", Topic.UNKNOWN),
        ("Geweldig dat jullie er zijn", Topic.UNKNOWN),  # geweldig: no violence
        ("Braakliggend terrein naast de school", Topic.UNKNOWN),  # braakliggend: no burglary
        ("Rookworst van de Hema", Topic.UNKNOWN),
        ("Honderd meter verderop", Topic.UNKNOWN),
        ("Brievenbus op de hoek", Topic.UNKNOWN),
        ("", Topic.UNKNOWN),
        ("!!! ???", Topic.UNKNOWN),
        ("06-12345678", Topic.UNKNOWN),  # a phone number is no licence plate
        ("12-03-2024", Topic.UNKNOWN),  # nor a date
    ],
)
def test_topic_of_report(text: str, expected: Topic) -> None:
    assert topic(text) is expected


@pytest.mark.parametrize(
    "text",
    ["INBRAAK", "inbraak.", "Inbraak!!!", "  in-braak? nee: inbraak  ", "ÍNBRÀÄK", "inbraak\n"],
)
def test_case_accents_and_punctuation_do_not_matter(text: str) -> None:
    assert topic(text) is Topic.BURGLARY


def test_ties_go_to_the_earlier_topic() -> None:
    # One fire word, one burglary word: fire is first in the priority order.
    assert topic("rook en inbraak") is Topic.FIRE
    assert topic("inbraak en rook") is Topic.FIRE
    # "Verdachte auto": one word each for suspicious person and vehicle; the vehicle says more.
    assert topic("verdachte auto") is Topic.VEHICLE


def test_more_hits_win_over_priority() -> None:
    assert topic("inbraak, deur geforceerd, ik rook iets") is Topic.BURGLARY
    assert topic("rook rook rook, inbraak, braaksporen") is Topic.BURGLARY  # repeats count once


def test_fold_and_words() -> None:
    assert fold("Oké, RÔOK") == "oke, rook"
    assert words("Rook!! bij nr. 12-a (achter)") == ["rook", "bij", "nr", "12", "a", "achter"]
    assert words("auto's") == ["auto", "s"]


def test_keywords_are_written_folded() -> None:
    for table in (KEYWORDS, NOT_FOR):
        for keywords in table.values():
            for keyword in keywords:
                for part in keyword.split():
                    bare = part.strip("*")
                    assert bare, keyword
                    assert words(bare) == [bare], keyword


def test_every_known_topic_has_keywords() -> None:
    assert set(KEYWORDS) == set(Topic) - {Topic.UNKNOWN}


def test_content_words_leave_out_stop_words_and_boilerplate() -> None:
    assert content_words("Rook bij nummer 12, 112 is gebeld!") == {"rook", "12"}
    assert content_words("de het een") == frozenset()
    assert "loods" not in STOP_WORDS


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (F, F, True),  # same known topic
        (F, B, False),  # two different known topics: a fire and a burglary stay apart
        (B, F, False),
        (F, U, True),  # a follow-up that names no topic joins
        (U, B, True),
    ],
)
def test_same_thing_by_topic(a: Topic, b: Topic, expected: bool) -> None:
    assert same_thing(a, "tekst een", b, "iets anders") is expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # Both name no topic: the words decide.
        (
            "Rare situatie bij de kerk, twee mannen in het donker",
            "Die twee mannen bij de kerk lopen nu weg",
            True,
        ),
        ("Gat in de stoep bij de Kerkstraat", "Stroomstoring in de hele wijk", False),
        ("Lantaarnpaal kapot op de hoek", "De lantaarnpaal op de hoek flikkert", True),
        # No content words on one side: nothing to tell them apart, so it joins.
        ("hij is er nog", "Rare situatie bij de kerk", True),
        ("", "Rare situatie bij de kerk", True),
    ],
)
def test_same_thing_when_both_unknown(a: str, b: str, expected: bool) -> None:
    assert topic(a) is U
    assert topic(b) is U
    assert same_thing(U, a, U, b) is expected


def test_similarity_is_jaccard_over_content_words() -> None:
    assert similarity("rook bij de loods", "de loods") == 0.5
    assert similarity("loods", "schuur") == 0.0
    assert similarity("", "!!!") == 1.0
    assert similarity("", "loods") == 0.0
    assert 0 < SIMILARITY_THRESHOLD < 1


# --- properties -----------------------------------------------------------------------------

# Report-like texts hit the interesting branches far more often than arbitrary strings.
_REPORT_WORDS = "rook brand inbraak verdachte auto hij loopt park kerk de bij nummer 12 hond knal"
_report_words = st.sampled_from([*_REPORT_WORDS.split(), "gestolen", "mannen", "Oké", "!", "ß"])
_reports = st.one_of(st.text(), st.lists(_report_words, max_size=12).map(" ".join))


@given(st.text())
def test_classifier_is_total(text: str) -> None:
    assert topic(text) in set(Topic)


@given(st.text())
def test_fold_is_stable(text: str) -> None:
    assert fold(fold(text)) == fold(text)


@given(_reports, _reports)
def test_same_thing_is_symmetric(a: str, b: str) -> None:
    ta, tb = topic(a), topic(b)
    assert same_thing(ta, a, tb, b) == same_thing(tb, b, ta, a)
    assert similarity(a, b) == similarity(b, a)


@given(_reports)
def test_a_report_is_about_the_same_thing_as_itself(text: str) -> None:
    assert same_thing(topic(text), text, topic(text), text)
    assert similarity(text, text) == 1.0


@given(_reports, _reports)
def test_similarity_is_between_zero_and_one(a: str, b: str) -> None:
    assert 0.0 <= similarity(a, b) <= 1.0
