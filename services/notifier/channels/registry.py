"""Which provider adapters this notifier runs: only channels whose credentials are all set.

A channel without credentials is not an error: its members are served by the local outbox
(GUIDE section 3), so `make run` is useful without any provider account.
"""

from __future__ import annotations

import httpx

from services.notifier.channels.base import ChannelSender
from services.notifier.channels.email import SmtpSender
from services.notifier.channels.telegram import TelegramSender
from services.notifier.channels.twilio import TwilioSmsSender
from services.notifier.channels.whatsapp import WhatsAppSender
from shared.schemas import MemberChannel
from shared.settings import NotifierSettings


def _all_set(*values: str) -> bool:
    return all(value.strip() for value in values)


def configured_channels(settings: NotifierSettings) -> set[str]:
    """Member channels with a complete provider configuration; the rest go to the outbox."""
    channels: set[str] = set()
    if _all_set(
        settings.twilio_account_sid, settings.twilio_auth_token, settings.twilio_from_number
    ):
        channels.add("sms")
    if _all_set(settings.telegram_bot_token):
        channels.add("telegram")
    if _all_set(settings.whatsapp_phone_number_id, settings.whatsapp_token):
        channels.add("whatsapp")
    # A username without its password is half a login: the relay would refuse every mail.
    if _all_set(settings.smtp_host) and (
        not settings.smtp_username.strip() or _all_set(settings.smtp_password)
    ):
        channels.add("email")
    return channels


def build_senders(
    settings: NotifierSettings, *, transport: httpx.AsyncBaseTransport | None = None
) -> dict[MemberChannel, ChannelSender]:
    """One sender per configured channel; close each with `aclose()` on shutdown."""
    configured = configured_channels(settings)
    senders: dict[MemberChannel, ChannelSender] = {}
    if "sms" in configured:
        senders["sms"] = TwilioSmsSender(settings, transport=transport)
    if "telegram" in configured:
        senders["telegram"] = TelegramSender(settings, transport=transport)
    if "whatsapp" in configured:
        senders["whatsapp"] = WhatsAppSender(settings, transport=transport)
    if "email" in configured:
        senders["email"] = SmtpSender(settings)
    return senders
