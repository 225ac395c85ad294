"""Which provider budgets one message draws from: pure, from the documented provider limits.

Each budget is planned at `limit_share` of the provider's limit with a bucket of one token, so
sends are spaced evenly and no one-second (or one-minute) window ever holds more than the limit,
whatever the number of notifier replicas: the buckets live in Redis.
"""

from __future__ import annotations

import hashlib

from shared.ratelimit import Bucket, Limit
from shared.schemas import DeliveryRequested, MemberChannel
from shared.settings import NotifierSettings

#: A per-chat budget allows one message a second: the share's headroom is then only about 50 ms,
#: less than a busy CPU may hold back one request after its budget was granted while the next
#: goes out on time. Sends to one chat keep this much more apart; at 30/s for the whole bot
#: such a margin would cost a third of the throughput, at 1/s it costs a tenth.
CHAT_MARGIN_S = 0.1


def _even(per_second: float, share: float, margin_s: float = 0.0) -> Limit:
    return Limit(capacity=1.0, per_second=1.0 / (1.0 / (per_second * share) + margin_s))


def account_bucket(channel: MemberChannel, settings: NotifierSettings) -> Bucket:
    """The per-account (bot, sender number, relay) budget of a channel."""
    share = settings.limit_share
    per_second = {
        "telegram": settings.telegram_per_second,
        "sms": settings.twilio_per_second,
        "whatsapp": settings.whatsapp_per_second,
        "email": settings.email_per_second,
    }[channel]
    return Bucket(f"{channel}:account", _even(per_second, share), "account")


def buckets_for(job: DeliveryRequested, settings: NotifierSettings) -> list[Bucket]:
    """Every budget one message draws from: account, and for Telegram its chat or group."""
    buckets = [account_bucket(job.channel, settings)]
    if job.channel == "telegram":
        chat = hashlib.sha256(job.address.encode()).hexdigest()[:16]  # no chat id in Redis keys
        if job.address.startswith("-"):
            per_minute = settings.telegram_group_per_minute * settings.limit_share
            buckets.append(Bucket(f"telegram:group:{chat}", Limit(1.0, per_minute / 60), "group"))
        else:
            buckets.append(
                Bucket(
                    f"telegram:chat:{chat}",
                    _even(settings.telegram_chat_per_second, settings.limit_share, CHAT_MARGIN_S),
                    "chat",
                )
            )
    return buckets


def police_flag(channel: MemberChannel) -> str:
    """Redis key (under ba:rl:) that says police traffic on a channel is under way."""
    return f"{channel}:police"
