"""The token-bucket rule, pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.ratelimit import Limit, bucket_step

pytestmark = pytest.mark.unit


def test_burst_then_refill() -> None:
    limit = Limit(capacity=3, per_second=1)
    tokens, ts = 3.0, 0.0
    decisions = []
    for now in (0, 0, 0, 0, 0.5, 1.0):
        d, tokens, ts = bucket_step(tokens, ts, now, limit)
        decisions.append(d.allowed)
    assert decisions == [True, True, True, False, False, True]


def test_retry_after_says_when() -> None:
    d, _, _ = bucket_step(0.0, 10.0, 10.0, Limit.per_minute(30))
    assert not d.allowed
    assert d.retry_after_s == pytest.approx(2.0)


@given(st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), min_size=1, max_size=200))
def test_never_more_than_capacity_plus_refill(gaps: list[float]) -> None:
    limit = Limit(capacity=5, per_second=2)
    tokens, ts, now, allowed = 5.0, 0.0, 0.0, 0
    for gap in gaps:
        now += gap
        d, tokens, ts = bucket_step(tokens, ts, now, limit)
        allowed += d.allowed
        assert 0 <= tokens <= limit.capacity
    assert allowed <= limit.capacity + now * limit.per_second + 1e-9


def test_clock_going_back_does_not_mint_tokens() -> None:
    limit = Limit(capacity=1, per_second=1)
    d, tokens, ts = bucket_step(1.0, 100.0, 100.0, limit)
    assert d.allowed
    d, tokens, ts = bucket_step(tokens, ts, 50.0, limit)
    assert not d.allowed
