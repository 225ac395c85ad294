"""Group rules a member must meet when added: minimum age (18 or 21) and residency.

Pure functions. The edge checks them when an admin adds a member and keeps only which rules were
verified, never the birth date or the home location themselves (data minimisation).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


class RuleViolation(ValueError):
    """The member does not meet one of the group's rules; the message names which."""


@dataclass(frozen=True, slots=True)
class GroupRules:
    """What a group demands of its members."""

    group_id: str
    min_age: int = 18
    residency_required: bool = False


def age_on(birth_date: date, today: date) -> int:
    """Completed years on a given day (a 29 February birthday counts from 1 March)."""
    years = today.year - birth_date.year
    if (today.month, today.day) < (birth_date.month, birth_date.day):
        years -= 1
    return years


def check_member(
    rules: GroupRules,
    *,
    today: date,
    birth_date: date | None,
    lives_in_area: bool | None,
) -> list[str]:
    """The rules this member was verified against; RuleViolation naming the first one failed.

    `lives_in_area` is None when no home or postcode was given. An 18+ group takes the admin's
    word when no birth date is given (the default rule of every buurtpreventie group); a 21+ group
    is an explicit choice, so it needs the birth date.
    """
    checked: list[str] = []
    if birth_date is not None:
        if birth_date > today:
            raise RuleViolation("birth_date lies in the future")
        age = age_on(birth_date, today)
        if age < rules.min_age:
            raise RuleViolation(
                f"member is {age}; group {rules.group_id!r} admits members aged "
                f"{rules.min_age} and over"
            )
        checked.append(f"min_age:{rules.min_age}")
    elif rules.min_age > 18:
        raise RuleViolation(
            f"birth_date is required: group {rules.group_id!r} admits members aged "
            f"{rules.min_age} and over"
        )
    if rules.residency_required:
        if lives_in_area is None:
            raise RuleViolation(
                f"home or postcode is required: group {rules.group_id!r} admits residents only"
            )
        if not lives_in_area:
            raise RuleViolation(f"home lies outside the area of group {rules.group_id!r}")
        checked.append("residency")
    return checked
