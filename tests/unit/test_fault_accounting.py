"""The fault suite's definitions of lost, duplicate, misrouted and phantom, on small tables."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.fault.accounting import Pair, parse_token, tally, token

pytestmark = pytest.mark.unit


def test_token_round_trip_and_other_runs_ignored() -> None:
    text = f"Melding uit de buurt: verdachte auto {token('ab12', 42)} bij de garage"
    assert parse_token(text, "ab12") == 42
    assert parse_token(text, "cd34") is None
    assert parse_token("geen token", "ab12") is None


def test_every_intended_pair_once_is_clean() -> None:
    intended = {"a1": ["r1", "r2"], "a2": ["r3"]}
    outcomes = {"a1": {"r1": "delivered", "r2": "unconfirmed"}, "a2": {"r3": "failed_permanent"}}
    received: Counter[Pair] = Counter({("a1", "r1"): 1, ("a1", "r2"): 1})
    t = tally(intended, outcomes, received, channel_of={"r2": "telegram"})
    assert t.ok
    assert t.line() == "accepted 2, delivered 1, unconfirmed 1, failed 1, lost 0, duplicates 0"
    assert (t.intended, t.unconfirmed_received_once) == (3, 1)
    assert t.unconfirmed_by_channel == {"telegram": 1}
    assert t.failed_by_outcome == {"failed_permanent": 1}


def test_missing_outcome_is_lost_even_when_the_provider_got_it() -> None:
    t = tally({"a1": ["r1", "r2"]}, {"a1": {"r1": "delivered"}}, Counter({("a1", "r1"): 1}))
    assert (t.lost, t.lost_examples) == (1, [("a1", "r2")])
    assert not t.ok


def test_two_messages_for_one_pair_is_a_duplicate_whatever_the_outcome() -> None:
    received: Counter[Pair] = Counter({("a1", "r1"): 2, ("a1", "r2"): 3})
    outcomes = {"a1": {"r1": "delivered", "r2": "unconfirmed"}}
    t = tally({"a1": ["r1", "r2"]}, outcomes, received)
    assert t.duplicates == 2
    assert t.duplicate_examples == [("a1", "r1", 2), ("a1", "r2", 3)]
    assert t.unconfirmed_received_once == 0
    assert not t.ok


def test_outcome_or_message_for_someone_not_intended_is_misrouted_once() -> None:
    outcomes = {"a1": {"r1": "delivered", "rx": "delivered"}}
    received: Counter[Pair] = Counter({("a1", "r1"): 1, ("a1", "rx"): 1, ("a1", "ry"): 1})
    t = tally({"a1": ["r1"]}, outcomes, received)
    assert t.misrouted == 2  # rx (outcome and message: once) and ry (message only)
    assert not t.ok


def test_delivered_without_any_message_at_the_provider_is_phantom() -> None:
    t = tally({"a1": ["r1"]}, {"a1": {"r1": "delivered"}}, Counter())
    assert (t.phantom, t.lost) == (1, 0)
    assert not t.ok


def test_unconfirmed_without_a_message_is_allowed() -> None:
    t = tally({"a1": ["r1"]}, {"a1": {"r1": "unconfirmed"}}, Counter(), unmatched=2)
    assert t.ok
    assert (t.unconfirmed, t.unconfirmed_received_once, t.messages_received) == (1, 0, 2)
