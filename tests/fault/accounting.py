"""The fault suite's books: intended recipients vs recorded outcomes vs what providers got.

Pure functions, so the definitions of "lost" and "duplicate" are unit-tested apart from the
long run (tests/unit/test_fault_accounting.py):

- intended: every (alert, recipient) an accepted alert was routed to (its group's members);
- lost L: an intended pair with no recorded outcome after the drain deadline;
- duplicates D: a pair that more than one message reached at the provider stubs;
- misrouted: an outcome or a message for a pair that was not intended;
- phantom: recorded "delivered" although no provider stub ever got the message.

"unconfirmed" (README: a notifier died after committing a Telegram or e-mail send) is allowed
and counted on its own; such a recipient may have got the message once, never twice.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

#: Outcomes that are neither delivered nor unconfirmed all count as "failed" in the summary.
DELIVERED = "delivered"
UNCONFIRMED = "unconfirmed"

_TOKEN = re.compile(r"\bFAULT-([0-9a-f]+)-(\d+)\b")

Pair = tuple[str, str]  # (alert id, recipient key)


def token(run_id: str, index: int) -> str:
    """The marker a test alert's text carries, so a provider's message names its alert."""
    return f"FAULT-{run_id}-{index:05d}"


def parse_token(text: str, run_id: str) -> int | None:
    """The alert index a message text names for this run, or None."""
    for match in _TOKEN.finditer(text):
        if match.group(1) == run_id:
            return int(match.group(2))
    return None


@dataclass
class Tally:
    """The run's figures; `ok` is False when anything was lost, duplicated or misrouted."""

    accepted: int = 0
    intended: int = 0
    delivered: int = 0
    unconfirmed: int = 0
    failed: int = 0
    lost: int = 0
    duplicates: int = 0
    misrouted: int = 0
    phantom: int = 0
    failed_by_outcome: dict[str, int] = field(default_factory=dict)
    unconfirmed_by_channel: dict[str, int] = field(default_factory=dict)
    unconfirmed_received_once: int = 0
    failed_but_received: int = 0
    messages_received: int = 0
    messages_unmatched: int = 0
    lost_examples: list[Pair] = field(default_factory=list)
    duplicate_examples: list[tuple[str, str, int]] = field(default_factory=list)
    misrouted_examples: list[Pair] = field(default_factory=list)
    phantom_examples: list[Pair] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing twice, nothing to the wrong person, no false "delivered"."""
        return not (self.lost or self.duplicates or self.misrouted or self.phantom)

    def line(self) -> str:
        """The one-line summary, NATS-chaos-test style."""
        return (
            f"accepted {self.accepted}, delivered {self.delivered}, "
            f"unconfirmed {self.unconfirmed}, failed {self.failed}, "
            f"lost {self.lost}, duplicates {self.duplicates}"
        )

    def as_json(self) -> dict[str, Any]:
        """JSON-ready, with the summary line."""
        data = asdict(self)
        data["ok"] = self.ok
        data["line"] = self.line()
        return data


def tally(
    intended: Mapping[str, Iterable[str]],
    outcomes: Mapping[str, Mapping[str, str]],
    received: Counter[Pair],
    *,
    channel_of: Mapping[str, str] | None = None,
    unmatched: int = 0,
    examples: int = 10,
) -> Tally:
    """Reconcile intended pairs, recorded outcomes (alert -> recipient -> outcome) and the
    messages the stubs received per pair."""
    channel_of = channel_of or {}
    t = Tally(accepted=len(intended), messages_unmatched=unmatched)
    t.messages_received = sum(received.values()) + unmatched
    wanted: set[Pair] = set()
    failed: Counter[str] = Counter()
    unconfirmed_by_channel: Counter[str] = Counter()
    for alert_id, recipients in intended.items():
        recorded = outcomes.get(alert_id, {})
        for rkey in recipients:
            pair = (alert_id, rkey)
            wanted.add(pair)
            t.intended += 1
            outcome = recorded.get(rkey)
            got = received.get(pair, 0)
            if outcome is None:
                t.lost += 1
                _example(t.lost_examples, pair, examples)
            elif outcome == DELIVERED:
                t.delivered += 1
                if got == 0:
                    t.phantom += 1
                    _example(t.phantom_examples, pair, examples)
            elif outcome == UNCONFIRMED:
                t.unconfirmed += 1
                unconfirmed_by_channel[channel_of.get(rkey, "?")] += 1
                t.unconfirmed_received_once += got == 1
            else:
                t.failed += 1
                failed[outcome] += 1
                t.failed_but_received += got > 0
    for alert_id, recorded in outcomes.items():
        for rkey in recorded:
            if (alert_id, rkey) not in wanted:
                t.misrouted += 1
                _example(t.misrouted_examples, (alert_id, rkey), examples)
    for pair, count in sorted(received.items()):
        if pair not in wanted and outcomes.get(pair[0], {}).get(pair[1]) is None:
            t.misrouted += 1
            _example(t.misrouted_examples, pair, examples)
        if count > 1:
            t.duplicates += 1
            if len(t.duplicate_examples) < examples:
                t.duplicate_examples.append((pair[0], pair[1], count))
    t.failed_by_outcome = dict(failed)
    t.unconfirmed_by_channel = dict(unconfirmed_by_channel)
    return t


def _example(bucket: list[Pair], pair: Pair, limit: int) -> None:
    if len(bucket) < limit:
        bucket.append(pair)
