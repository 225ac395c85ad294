"""Pure fan-out: groups to distinct recipients."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.addresses import recipient_key
from shared.schemas import AlertRouted, Member, MemberChannel, Relation

__all__ = ["Recipient", "plan_recipients", "recipient_key"]


@dataclass(frozen=True, slots=True)
class Recipient:
    """One person to notify on one channel, and why."""

    key: str
    member_id: str
    group_id: str
    channel: MemberChannel
    address: str
    relation: Relation


def plan_recipients(
    routed: AlertRouted, members_by_group: Mapping[str, Sequence[Member]]
) -> list[Recipient]:
    """Distinct recipients of a routed alert; a person in two groups is told once.

    Where one person is reached through several groups, "in your area" beats "next to it".
    """
    notice = routed.alert.notice
    if notice is not None and notice.status in ("System", "Draft"):
        return []  # not meant for residents at all
    drills_only = notice is not None and notice.status in ("Exercise", "Test")
    admins_only = notice is not None and notice.audience == "admins"
    chosen: dict[str, Recipient] = {}
    for target in routed.targets:
        members = members_by_group.get(target.group_id, ())
        if admins_only:
            members = _one_admin(members, routed.alert.alert_id)
        for member in members:
            if drills_only and not member.drills:
                continue
            key = recipient_key(member.channel, member.address)
            current = chosen.get(key)
            if current is None or (current.relation == "adjacent" and target.relation == "in_area"):
                chosen[key] = Recipient(
                    key=key,
                    member_id=member.member_id,
                    group_id=target.group_id,
                    channel=member.channel,
                    address=member.address,
                    relation=target.relation,
                )
    return sorted(chosen.values(), key=lambda r: r.key)


def _one_admin(members: Sequence[Member], alert_id: str) -> list[Member]:
    """One admin of a group for a notice to admins, as the seed municipalities asked.

    Chosen by a hash of the alert, so the same notice always picks the same admin (a
    redelivery cannot pick a second one) while different notices spread the work.
    """
    admins = sorted((m for m in members if m.role == "admin"), key=lambda m: m.member_id)
    if not admins:
        return []
    digest = int(hashlib.sha256(alert_id.encode()).hexdigest()[:8], 16)
    return [admins[digest % len(admins)]]
