"""Member addresses normalised per channel: E.164 (Dutch default) for phones, chat ids, e-mail."""

from __future__ import annotations

import hashlib
import re

import phonenumbers

from shared.schemas import MemberChannel

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CHAT_ID = re.compile(r"^-?\d{1,20}$")


class AddressError(ValueError):
    """An address that does not fit its channel."""


def normalise_phone(raw: str, region: str = "NL") -> str:
    """E.164 form of a phone number; national Dutch numbers are accepted."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        raise AddressError("address is not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise AddressError("address is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_address(channel: MemberChannel, raw: str) -> str:
    """The canonical address for a channel, or AddressError naming what is wrong."""
    value = raw.strip()
    if channel in ("sms", "whatsapp"):
        return normalise_phone(value)
    if channel == "telegram":
        if not _CHAT_ID.match(value):
            raise AddressError("telegram address must be a numeric chat id")
        return value
    if not _EMAIL.match(value):
        raise AddressError("email address is not valid")
    return value.lower()


def recipient_key(channel: MemberChannel, address: str) -> str:
    """Opaque key of one person on one channel: never the raw address."""
    digest = hashlib.sha256(f"{channel}:{address.strip().lower()}".encode()).hexdigest()
    return f"{channel}:{digest[:20]}"


def opt_out_key(channel: MemberChannel, address: str) -> str:
    """Redis key marking one person on one channel as opted out (STOP, AFMELDEN)."""
    return f"ba:optout:{recipient_key(channel, address)}"


def whatsapp_session_key(rkey: str) -> str:
    """Set for 24 hours after a resident wrote to us on WhatsApp: free text may be sent."""
    return f"ba:wa-session:{rkey}"
