"""Delivery jobs travel several to a JetStream message: packing, ids and the message schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from services.notifier.jobs import MAX_JOBS_PER_MESSAGE, jobs_per_message, pack, packed_retry
from shared import subjects
from shared.schemas import DeliveryJobs, DeliveryRequested, MemberChannel, Priority, delivery_id
from shared.settings import NotifierSettings

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def job(
    i: int, channel: MemberChannel = "sms", priority: Priority = "police", alert: str = "a1"
) -> DeliveryRequested:
    recipient = f"{channel}:{i:06d}"
    return DeliveryRequested(
        delivery_id=delivery_id(alert, recipient),
        alert_id=alert,
        recipient=recipient,
        channel=channel,
        address=f"+3161{i:07d}",
        text="Vermist: man (80)",
        priority=priority,
        accepted_at=T0,
        requested_at=T0,
    )


def test_a_message_carries_a_couple_of_seconds_of_its_channels_budget() -> None:
    settings = NotifierSettings()
    # Twilio 10/s at 0.95: 19 per message; Telegram 30/s: 57; WhatsApp 80/s: 152.
    assert jobs_per_message("sms", settings) == 19
    assert jobs_per_message("telegram", settings) == 57
    assert jobs_per_message("whatsapp", settings) == 152
    fast = NotifierSettings(whatsapp_per_second=1000)
    assert jobs_per_message("whatsapp", fast) == MAX_JOBS_PER_MESSAGE


def test_pack_keeps_every_job_once_in_order_by_queue() -> None:
    settings = NotifierSettings()
    jobs = [job(i, "sms") for i in range(50)] + [job(i, "email") for i in range(30)]
    jobs += [job(i, "sms", priority="resident", alert="a2") for i in range(3)]
    packed = pack(jobs, settings)
    seen: list[str] = []
    for message in packed:
        body = DeliveryJobs.model_validate_json(message.data)
        assert message.jobs == len(body.jobs)
        first = body.jobs[0]
        assert message.subject == subjects.deliver(first.channel, first.priority)
        assert len(body.jobs) <= jobs_per_message(first.channel, settings)
        seen += [j.delivery_id for j in body.jobs]
    assert seen == [j.delivery_id for j in jobs]
    assert [m.jobs for m in packed] == [19, 19, 12, 30, 3]
    assert len({m.msg_id for m in packed}) == len(packed)


def test_message_ids_follow_the_jobs_carried() -> None:
    a = [job(i).delivery_id for i in range(5)]
    assert subjects.delivery_msg_id(a) == subjects.delivery_msg_id(list(reversed(a)))
    assert subjects.delivery_msg_id(a) != subjects.delivery_msg_id(a[:4])
    # One job: its own id, as a single job was always queued; again: a new id each time.
    assert subjects.delivery_msg_id(a[:1]) == f"deliver:{a[0]}"
    assert subjects.delivery_msg_id(a[:1], 2) == f"deliver:{a[0]}:q2"


def test_a_job_queued_again_keeps_its_history() -> None:
    retry = job(1).model_copy(update={"prior_attempts": 2, "requeues": 3, "not_before": T0})
    message = packed_retry(retry)
    assert message.msg_id == f"deliver:{retry.delivery_id}:q3"
    (back,) = DeliveryJobs.model_validate_json(message.data).jobs
    assert (back.prior_attempts, back.requeues, back.not_before) == (2, 3, T0)


def test_a_message_holds_one_queue_and_at_least_one_job() -> None:
    with pytest.raises(ValidationError, match="share alert, channel and priority"):
        DeliveryJobs(jobs=[job(1, "sms"), job(2, "email")])
    with pytest.raises(ValidationError, match="share alert, channel and priority"):
        DeliveryJobs(jobs=[job(1, alert="a1"), job(2, alert="a2")])
    with pytest.raises(ValidationError):
        DeliveryJobs.model_validate_json(json.dumps({"schema_version": 1, "jobs": []}))
