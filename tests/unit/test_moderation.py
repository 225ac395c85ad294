"""House rules: alerts only, no chatter, no emoji replies, no duimpjes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.moderation import assess

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "reason"),
    [("👍", "emoji_only"), ("👍👍🙏", "emoji_only"), ("!!!", "emoji_only"),
     ("ok", "acknowledgement"), ("Oké!", "acknowledgement"), ("dank je wel", "acknowledgement"),
     ("+1", "acknowledgement"), ("Top 👍", "acknowledgement"),
     ("Goedemorgen allemaal", "chatter"), ("hoi", "chatter"), ("Fijne avond!", "chatter"),
     ("Fiets te koop, 50 euro", "off_topic"), ("Wie heeft er een ladder?", "off_topic"),
     ("", "too_short"), ("eh", "too_short")],
)
def test_held_with_the_reason(text: str, reason: str) -> None:
    verdict = assess(text)
    assert verdict.held
    assert verdict.reason == reason
    assert verdict.explanation


@pytest.mark.parametrize(
    "text",
    ["Man probeert fietsen te openen bij de kerk",
     "Verdachte auto, grijze Golf, kenteken 12-ABC-3, rijdt rondjes",
     "Rook uit schuur achter de school, 112 is gebeld",
     "Goedemorgen, er staat een man in mijn tuin met een koevoet",  # a greeting, then an alert
     "Inbraak bij 6171 AB"],
)
def test_real_alerts_pass(text: str) -> None:
    assert assess(text).held is False


@given(st.text(max_size=200))
def test_assess_never_fails(text: str) -> None:
    verdict = assess(text)
    assert verdict.held == (verdict.reason is not None)
