"""Local provider servers (Twilio, Telegram, WhatsApp Cloud, SMTP) for tests and benchmarks.

They speak each provider's documented format, enforce its limits with sliding windows, and
record what they accepted, so a test can prove every message arrived exactly once and no
limit was exceeded. Start them with `with ProviderStubs(config) as stubs: stubs.env()`, or as
one process per provider with `spawn_stubs()` (`python -m tests.providers --channel C
--port-file F` runs one by hand).
"""

from tests.providers.common import (
    Delivered,
    Duplicate,
    Fault,
    Ledger,
    Limit,
    LimitUsage,
    Refusal,
)
from tests.providers.runner import ProviderStubs, RemoteStubs, StubsConfig, spawn_stubs
from tests.providers.smtp import LIMIT_RATE as SMTP_LIMIT_RATE
from tests.providers.smtp import SmtpConfig, SmtpStub
from tests.providers.telegram import (
    LIMIT_BOT as TELEGRAM_LIMIT_BOT,
)
from tests.providers.telegram import (
    LIMIT_CHAT as TELEGRAM_LIMIT_CHAT,
)
from tests.providers.telegram import (
    LIMIT_GROUP as TELEGRAM_LIMIT_GROUP,
)
from tests.providers.telegram import TelegramConfig, TelegramStub
from tests.providers.twilio import LIMIT_SENDER as TWILIO_LIMIT_SENDER
from tests.providers.twilio import TwilioConfig, TwilioStub, twilio_signature
from tests.providers.whatsapp import LIMIT_PAIR as WHATSAPP_LIMIT_PAIR
from tests.providers.whatsapp import LIMIT_THROUGHPUT as WHATSAPP_LIMIT_THROUGHPUT
from tests.providers.whatsapp import WhatsAppConfig, WhatsAppStub, hub_signature

__all__ = [
    "SMTP_LIMIT_RATE",
    "TELEGRAM_LIMIT_BOT",
    "TELEGRAM_LIMIT_CHAT",
    "TELEGRAM_LIMIT_GROUP",
    "TWILIO_LIMIT_SENDER",
    "WHATSAPP_LIMIT_PAIR",
    "WHATSAPP_LIMIT_THROUGHPUT",
    "Delivered",
    "Duplicate",
    "Fault",
    "Ledger",
    "Limit",
    "LimitUsage",
    "ProviderStubs",
    "Refusal",
    "RemoteStubs",
    "SmtpConfig",
    "SmtpStub",
    "StubsConfig",
    "TelegramConfig",
    "TelegramStub",
    "TwilioConfig",
    "TwilioStub",
    "WhatsAppConfig",
    "WhatsAppStub",
    "hub_signature",
    "spawn_stubs",
    "twilio_signature",
]
