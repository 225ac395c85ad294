"""Settings for every service, read from the environment by pydantic-settings.

Each service builds its settings inside its factory (never at import), so tests can pass their
own instance and two services in one process never share state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: Values that mean "nobody set this secret": refused outside dev.
PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "dev", "test", "xxx"})

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def split_nats_urls(value: str) -> list[str]:
    """The server list in BUURTALERT_NATS_URL: one URL, or several separated by commas."""
    servers = [part.strip() for part in value.split(",") if part.strip()]
    if not servers:
        raise ValueError("BUURTALERT_NATS_URL names no server")
    return servers


class BaseServiceSettings(BaseSettings):
    """What every buurtalert process needs: where NATS and Redis are, logging, environment."""

    model_config = SettingsConfigDict(env_prefix="BUURTALERT_", extra="ignore", frozen=True)

    env: Literal["dev", "test", "prod"] = Field(
        "dev", description="dev and test allow generated keys; prod refuses placeholders"
    )
    nats_url: str = Field(
        "nats://127.0.0.1:4222",
        description="one NATS URL, or a cluster's URLs separated by commas (any one may be down)",
    )
    redis_url: str = "redis://127.0.0.1:6379/0"
    data_dir: Path = Path(".buurtalert")
    host: str = "127.0.0.1"
    log_level: str = "INFO"
    log_json: bool = False
    stream_name: str = Field("ALERTS", description="JetStream stream that carries alert events")
    stream_replicas: int = Field(1, ge=1, le=5)
    stream_max_age_s: float = Field(
        7 * 24 * 3600,
        gt=0,
        description="how long reports and notices are kept: in JetStream, and in Redis "
        "(held messages, outbox entries, join requests) by the edge's retention sweep",
    )
    duplicate_window_s: float = Field(
        120, gt=0, description="JetStream de-duplication window for Nats-Msg-Id"
    )
    redis_max_connections: int = Field(64, ge=1, le=10_000)
    redis_pool_timeout_s: float = Field(5.0, gt=0)
    neighbour_distance_m: float = Field(
        150.0,
        ge=0,
        le=5000,
        description="a report this close to a neighbouring area also reaches its groups",
    )
    outcome_ttl_s: int = Field(
        30 * 24 * 3600, gt=0, description="how long delivery outcomes are kept in Redis"
    )

    @field_validator("nats_url")
    @classmethod
    def _some_nats_server(cls, value: str) -> str:
        split_nats_urls(value)
        return value

    @property
    def nats_servers(self) -> list[str]:
        """Every NATS server to try, for nats.connect(servers=...) and NatsBroker(servers=...)."""
        return split_nats_urls(self.nats_url)


class IngestSettings(BaseServiceSettings):
    """The HTTP edge: reports, notices, webhooks, admin API."""

    http_port: int = Field(8080, validation_alias=AliasChoices("BUURTALERT_HTTP_PORT"))
    admin_keys: CommaList = Field(default_factory=list)
    dispatch_keys: CommaList = Field(default_factory=list)
    public_url: str = "http://127.0.0.1:8080"
    publish_timeout_s: float = Field(5.0, gt=0)
    saar_question_ttl_s: int = Field(
        900, gt=0, description="how long a JA/NEE answer can still be matched to its report"
    )
    retention_sweep_every_s: float = Field(
        600, gt=0, description="how often the edge drops what is older than stream_max_age_s"
    )
    # Abuse limits: per sender (hashed) and per source address, as token buckets in Redis.
    sender_reports_per_hour: float = Field(20, gt=0)
    sender_burst: float = Field(5, gt=0)
    source_requests_per_minute: float = Field(120, gt=0)
    source_burst: float = Field(60, gt=0)
    # The ops page's live feed reads the routed events this far back, while someone watches.
    ops_feed_history_s: float = Field(
        6 * 3600, gt=0, description="how far back the ops feed starts reading routed events"
    )
    ops_feed_idle_s: float = Field(
        120, gt=0, description="the ops feed stops following events after this long unasked"
    )
    # Provider secrets keep the providers' own names (unprefixed); empty means not configured.
    twilio_auth_token: str = Field("", validation_alias=AliasChoices("TWILIO_AUTH_TOKEN"))
    telegram_webhook_secret: str = Field(
        "", validation_alias=AliasChoices("TELEGRAM_WEBHOOK_SECRET")
    )
    telegram_bot_username: str = Field("", validation_alias=AliasChoices("TELEGRAM_BOT_USERNAME"))
    whatsapp_app_secret: str = Field("", validation_alias=AliasChoices("WHATSAPP_APP_SECRET"))
    whatsapp_verify_token: str = Field("", validation_alias=AliasChoices("WHATSAPP_VERIFY_TOKEN"))

    _split = field_validator("admin_keys", "dispatch_keys", mode="before")(_split_commas)

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> IngestSettings:
        if self.env == "prod":
            for name in ("admin_keys", "dispatch_keys"):
                keys: list[str] = getattr(self, name)
                if not keys or any(k.lower() in PLACEHOLDER_SECRETS or len(k) < 16 for k in keys):
                    raise ValueError(
                        f"BUURTALERT_{name.upper()} must hold real keys (16+ characters) in prod"
                    )
        return self


class ConsumerSettings(BaseServiceSettings):
    """Shared knobs of the JetStream consumers (router, notifier)."""

    ack_wait_s: float = Field(30.0, gt=0, description="JetStream redelivers after this")
    max_deliver: int = Field(10, ge=1, description="deliveries before a message is dead-lettered")
    batch_size: int = Field(32, ge=1, le=1000)


class RouterSettings(ConsumerSettings):
    """The router: point to areas to groups."""

    http_port: int = Field(8081, validation_alias=AliasChoices("BUURTALERT_ROUTER_PORT"))
    incident_radius_m: float = Field(300.0, ge=0, description="reports this close are one incident")
    incident_window_s: float = Field(1800.0, gt=0, description="...within this much time")
    incident_update_every_s: float = Field(
        300.0, ge=0, description="at most one update message per incident in this interval"
    )
    saar_hold_s: float = Field(
        30.0,
        ge=0,
        le=600,
        description="how long a report that did not say whether 112 was called waits for JA/NEE",
    )


class NotifierSettings(ConsumerSettings):
    """The notifier: groups to members to channels."""

    http_port: int = Field(8082, validation_alias=AliasChoices("BUURTALERT_NOTIFIER_PORT"))
    outbox_max_len: int = Field(100_000, ge=100, description="entries kept in the local outbox")
    public_url: str = Field(
        "http://127.0.0.1:8080",
        description="the edge's public URL; delivery receipts are posted back to it",
    )
    provider_timeout_s: float = Field(10.0, gt=0, description="one provider request, at most")
    send_concurrency: int = Field(32, ge=1, le=1000, description="provider requests in flight")
    retry_base_s: float = Field(1.0, gt=0, description="first delay after a transient failure")
    retry_max_s: float = Field(300.0, gt=0, description="longest retry delay")
    max_send_attempts: int = Field(8, ge=1, description="transient failures before giving up")
    receipt_grace_s: float = Field(
        60.0,
        ge=0,
        description="SMS/WhatsApp: how long a dead notifier's request may wait for its receipt "
        "before it is sent again; 0 records it unconfirmed, never resent",
    )
    # Provider limits (messages per second or minute); we plan at limit_share of each so clock
    # jitter between us and the provider never tips a burst over.
    limit_share: float = Field(0.95, gt=0, le=1)
    budget_reserve_s: float = Field(
        0.25,
        ge=0,
        le=5,
        description="a send may reserve its budget this far ahead, keeping an exact schedule",
    )
    telegram_per_second: float = Field(30, gt=0, description="per bot (Telegram: about 30/s)")
    telegram_chat_per_second: float = Field(1, gt=0, description="per private chat")
    telegram_group_per_minute: float = Field(20, gt=0, description="per Telegram group chat")
    twilio_per_second: float = Field(10, gt=0, description="per Twilio sender (account MPS)")
    whatsapp_per_second: float = Field(80, gt=0, description="per WhatsApp business number")
    email_per_second: float = Field(20, gt=0, description="per SMTP relay")
    resident_alerts_per_hour: float = Field(
        10, gt=0, description="resident alerts one person receives per hour; police exempt"
    )
    # Provider credentials keep the providers' own names (unprefixed). Empty: outbox.
    twilio_api_base: str = Field(
        "https://api.twilio.com", validation_alias=AliasChoices("TWILIO_API_BASE")
    )
    twilio_account_sid: str = Field("", validation_alias=AliasChoices("TWILIO_ACCOUNT_SID"))
    twilio_auth_token: str = Field("", validation_alias=AliasChoices("TWILIO_AUTH_TOKEN"))
    twilio_from_number: str = Field("", validation_alias=AliasChoices("TWILIO_FROM_NUMBER"))
    telegram_api_base: str = Field(
        "https://api.telegram.org", validation_alias=AliasChoices("TELEGRAM_API_BASE")
    )
    telegram_bot_token: str = Field("", validation_alias=AliasChoices("TELEGRAM_BOT_TOKEN"))
    whatsapp_api_base: str = Field(
        "https://graph.facebook.com", validation_alias=AliasChoices("WHATSAPP_API_BASE")
    )
    whatsapp_api_version: str = Field(
        "v21.0", validation_alias=AliasChoices("WHATSAPP_API_VERSION")
    )
    whatsapp_phone_number_id: str = Field(
        "", validation_alias=AliasChoices("WHATSAPP_PHONE_NUMBER_ID")
    )
    whatsapp_token: str = Field("", validation_alias=AliasChoices("WHATSAPP_TOKEN"))
    whatsapp_template_name: str = Field(
        "buurtalert_melding",
        validation_alias=AliasChoices("WHATSAPP_TEMPLATE_NAME"),
        description="approved template used outside the 24-hour customer-service window",
    )
    whatsapp_template_language: str = Field(
        "nl", validation_alias=AliasChoices("WHATSAPP_TEMPLATE_LANGUAGE")
    )
    smtp_host: str = Field("", validation_alias=AliasChoices("SMTP_HOST"))
    smtp_port: int = Field(587, validation_alias=AliasChoices("SMTP_PORT"))
    smtp_username: str = Field("", validation_alias=AliasChoices("SMTP_USERNAME"))
    smtp_password: str = Field("", validation_alias=AliasChoices("SMTP_PASSWORD"))
    smtp_starttls: bool = Field(False, validation_alias=AliasChoices("SMTP_STARTTLS"))
    smtp_from: str = Field("buurtalert@localhost", validation_alias=AliasChoices("SMTP_FROM"))
