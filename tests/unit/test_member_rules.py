"""Group rules checked when a member is added: minimum age and residency."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.member_rules import GroupRules, RuleViolation, age_on, check_member

pytestmark = pytest.mark.unit

TODAY = date(2026, 11, 22)


@pytest.mark.parametrize(
    ("birth", "today", "age"),
    [
        (date(2005, 11, 22), TODAY, 21),  # birthday today
        (date(2005, 11, 23), TODAY, 20),  # tomorrow
        (date(2008, 2, 29), date(2026, 2, 28), 17),  # leap-day birthday not yet reached
        (date(2008, 2, 29), date(2026, 3, 1), 18),
        (TODAY, TODAY, 0),
    ],
)
def test_age_in_completed_years(birth: date, today: date, age: int) -> None:
    assert age_on(birth, today) == age


@given(st.dates(min_value=date(1900, 1, 1), max_value=TODAY), st.integers(0, 400))
def test_age_never_decreases_with_time(birth: date, days: int) -> None:
    assert age_on(birth, TODAY + timedelta(days=days)) >= age_on(birth, TODAY) >= 0


@pytest.mark.parametrize(
    ("rules", "birth", "lives", "checked", "error"),
    [
        (GroupRules("g"), None, None, [], None),  # 18+: the admin's word
        (GroupRules("g"), date(2000, 1, 1), None, ["min_age:18"], None),
        (GroupRules("g"), date(2010, 1, 1), None, None, "member is 16"),
        (GroupRules("g", 21), None, None, None, "birth_date is required"),
        (GroupRules("g", 21), date(2005, 11, 23), None, None, "aged 21 and over"),
        (GroupRules("g", 21), date(2005, 11, 22), None, ["min_age:21"], None),
        (GroupRules("g", residency_required=True), None, None, None, "home or postcode"),
        (GroupRules("g", residency_required=True), None, False, None, "outside the area"),
        (GroupRules("g", residency_required=True), None, True, ["residency"], None),
        (GroupRules("g", 21, True), date(1980, 5, 5), True, ["min_age:21", "residency"], None),
        (GroupRules("g"), date(2030, 1, 1), None, None, "in the future"),
    ],
)
def test_rules_table(
    rules: GroupRules, birth: date | None, lives: bool | None,
    checked: list[str] | None, error: str | None,
) -> None:
    if error is None:
        assert check_member(rules, today=TODAY, birth_date=birth, lives_in_area=lives) == checked
    else:
        with pytest.raises(RuleViolation, match=error):
            check_member(rules, today=TODAY, birth_date=birth, lives_in_area=lives)


def test_residency_is_not_asked_of_groups_without_the_rule() -> None:
    assert check_member(GroupRules("g"), today=TODAY, birth_date=None, lives_in_area=False) == []
