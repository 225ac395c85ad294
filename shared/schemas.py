"""Versioned event and API schemas (v1).

Events are past tense, frozen and timezone-aware; each carries `schema_version` and keeps the
raw payload it came from, so a later normaliser can be replayed against the original input.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from shared.notices import Notice
from shared.subjects import Channel

SCHEMA_VERSION: Literal[1] = 1

LocationSource = Literal["coordinates", "shared_location", "postcode", "address", "home_area"]
DeliveryChannel = Literal["sms", "telegram", "whatsapp", "email", "outbox"]
MemberChannel = Literal["sms", "telegram", "whatsapp", "email"]
Relation = Literal["in_area", "adjacent"]
Outcome = Literal[
    "delivered",
    "failed_permanent",  # the provider refused for good (invalid number, bot blocked, ...)
    "failed_transient",  # still failing after every retry; given up, recorded, counted
    "undelivered",  # accepted, then the provider's receipt said it never arrived
    "unconfirmed",  # notifier died mid-send, no receipt to tell (Telegram, e-mail): not resent
    "capped",  # the person had their hourly share of resident alerts (police notices exempt)
    "opted_out",
    "no_recipients",
    "held",
    "merged",
]
Priority = Literal["police", "resident"]


def utcnow() -> datetime:
    """Current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


def new_alert_id() -> str:
    """A fresh alert id (UUID4 hex)."""
    return uuid.uuid4().hex


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Version of this schema")


class GeoPoint(BaseModel):
    """A WGS84 point."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lat: float = Field(ge=-90, le=90, description="Latitude, WGS84 degrees")
    lon: float = Field(ge=-180, le=180, description="Longitude, WGS84 degrees")


class Location(GeoPoint):
    """Where an alert happened, and how we know."""

    source: LocationSource = Field("coordinates", description="Where the coordinates came from")


class AlertReceived(_Event):
    """An alert accepted at the edge, normalised from any channel."""

    alert_id: str = Field(description="Unique id, also the JetStream Nats-Msg-Id")
    kind: Literal["report", "notice"] = Field(description="Resident report or dispatch notice")
    channel: Channel = Field(description="Channel the alert came in on")
    sender_ref: str | None = Field(
        None, description="Opaque sender reference (never a raw phone number)"
    )
    text: str = Field(description="Alert text as the sender wrote it")
    location: Location | None = Field(None, description="Where it happened, if known")
    called_112: bool | None = Field(None, description="Whether the sender says 112 was called")
    received_at: AwareDatetime = Field(description="When the edge accepted it")
    raw: dict[str, Any] = Field(default_factory=dict, description="Payload as received")
    notice: Notice | None = Field(None, description="The dispatch notice, for kind notice")
    released: bool = Field(False, description="An admin released it from moderation")


class RouteTarget(BaseModel):
    """One group an alert goes to, and whether it happened in or next to its area."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    group_id: str
    relation: Relation = "in_area"


class AlertRouted(_Event):
    """An alert matched to areas and groups; the notifier fans it out."""

    alert: AlertReceived
    area_ids: list[str] = Field(default_factory=list, description="Areas containing the location")
    targets: list[RouteTarget] = Field(default_factory=list, description="Groups to notify")
    routed_at: AwareDatetime
    held_reason: str | None = Field(
        None, description="Held by the house rules (moderation) instead of broadcast"
    )
    incident_id: str | None = Field(None, description="Incident this report belongs to")
    incident_count: int = Field(1, ge=1, description="Reports in the incident so far")
    merged: bool = Field(False, description="Folded into its incident without a message of its own")


class DeliveryAttempted(_Event):
    """The one recorded outcome of an alert for one recipient on one channel."""

    alert_id: str
    recipient: str = Field(description="Opaque recipient key: channel and a hash of the address")
    group_id: str | None = None
    member_id: str | None = None
    channel: DeliveryChannel
    outcome: Outcome
    detail: str = ""
    attempted_at: AwareDatetime
    provider_message_id: str = ""
    receipt: str = Field("", description="latest provider status: sent, delivered, read, failed")
    attempts: int = Field(1, ge=1, description="provider requests made for this outcome")


def delivery_id(alert_id: str, recipient: str) -> str:
    """Stable id of one (alert, recipient) delivery: idempotency key and receipt reference."""
    return f"{alert_id}.{recipient}"


def split_delivery_id(value: str) -> tuple[str, str]:
    """(alert_id, recipient) of a delivery id; ValueError when it is not one."""
    alert_id, sep, recipient = value.partition(".")
    if not sep or not alert_id or ":" not in recipient:
        raise ValueError("not a delivery id")
    return alert_id, recipient


class DeliveryRequested(_Event):
    """A delivery job: one message to one recipient on one provider channel."""

    delivery_id: str = Field(description="alert id and recipient key; the idempotency key")
    alert_id: str
    recipient: str = Field(description="Opaque recipient key")
    group_id: str | None = None
    member_id: str | None = None
    channel: MemberChannel
    address: str = Field(description="E.164, chat id or e-mail address; never logged")
    text: str
    subject: str = ""
    in_session: bool = Field(False, description="WhatsApp: the 24-hour window is open")
    priority: Priority
    accepted_at: AwareDatetime = Field(description="When the edge accepted the alert")
    requested_at: AwareDatetime
    # A job handed back (retry after a failure, or a wait) is queued again as a message of its
    # own; these carry its history, as JetStream's delivery count restarts with the new message.
    prior_attempts: int = Field(0, ge=0, description="Provider requests made before this message")
    requeues: int = Field(0, ge=0, description="Times this job was queued again")
    not_before: AwareDatetime | None = Field(None, description="Not to be tried before this")


class DeliveryJobs(_Event):
    """One JetStream message on a delivery queue: up to a few seconds' budget of jobs.

    One message per job would make JetStream's per-message write the ceiling of a fan-out;
    jobs travel together instead, all for one alert, channel and priority.
    """

    jobs: list[DeliveryRequested] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_queue(self) -> DeliveryJobs:
        first = self.jobs[0]
        for job in self.jobs:
            if (job.alert_id, job.channel, job.priority) != (
                first.alert_id,
                first.channel,
                first.priority,
            ):
                raise ValueError("jobs of one message share alert, channel and priority")
        return self


class ReplyRequested(_Event):
    """A short direct answer to one resident on the channel they wrote on."""

    reply_id: str = Field(description="Unique id, also the JetStream Nats-Msg-Id")
    channel: MemberChannel
    address: str = Field(description="Where to send it (E.164, chat id); never logged")
    text: str
    requested_at: AwareDatetime


# --- HTTP API bodies -------------------------------------------------------------------------


class ReportIn(BaseModel):
    """A resident report posted to POST /v1/reports."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    text: str = Field(min_length=1, max_length=2000, description="What you saw")
    location: GeoPoint = Field(description="Where it happened")
    called_112: bool = Field(description="Whether 112 has been called (SAAR: 112 first)")


class AlertAccepted(BaseModel):
    """Answer to an accepted alert."""

    alert_id: str
    covered: bool | None = Field(
        None, description="False when no buurtalert group covers the place: nobody will hear it"
    )
    held: str | None = Field(
        None, description="Why the house rules hold it for the admins instead of broadcasting"
    )


class GroupIn(BaseModel):
    """A group: a set of areas or its own polygon."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    name: str = Field(min_length=1, max_length=200)
    area_ids: list[str] = Field(default_factory=list)
    geometry: dict[str, Any] | None = Field(None, description="GeoJSON Polygon or MultiPolygon")
    min_age: Literal[18, 21] = 18
    residency_required: bool = Field(
        False, description="members must live in the group's area (home or postcode checked)"
    )


class _MemberBase(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    channel: MemberChannel
    address: str = Field(min_length=1, max_length=320)
    role: Literal["member", "admin"] = "member"
    drills: bool = Field(False, description="Also receive Exercise and Test notices")


class HomeIn(BaseModel):
    """Where a member lives, only to check the group's residency rule."""

    model_config = ConfigDict(extra="forbid")

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class MemberIn(_MemberBase):
    """A member of a group on one channel, with what the group's rules need checked."""

    birth_date: date | None = Field(
        None, description="checked against the group's min_age (required for 21+); not stored"
    )
    home: HomeIn | None = Field(
        None, description="checked against the group's area when it requires residency; not stored"
    )
    postcode: str | None = Field(
        None, max_length=10, description="instead of home: a postcode from the gazetteer"
    )


class Member(_MemberBase):
    """A stored member (birth date and home are checked, never stored)."""

    member_id: str
    group_id: str
    checked: list[str] = Field(
        default_factory=list, description="rules verified when added, e.g. min_age:21, residency"
    )


class AreaOut(BaseModel):
    """An area as the API shows it."""

    id: str
    name: str
    adjacent: list[str]
