"""CAP 1.2 (OASIS Common Alerting Protocol) documents to the shared `Notice`.

XML from outside is parsed only through defusedxml with DTDs, entities and external references
forbidden: a CAP document needs none of them, and each is a known attack (billion laughs, XXE).
Every refusal is a `CapError` whose message names the element, so the HTTP edge can answer 422
with a sentence a dispatch integrator can act on.

Facts from the CAP 1.2 specification this module relies on:
- namespace `urn:oasis:names:tc:emergency:cap:1.2`; `<alert>` requires identifier, sender,
  sent, status, msgType and scope; each `<info>` requires category (one or more), event,
  urgency, severity and certainty; each `<area>` requires areaDesc.
- `<polygon>`: whitespace-separated WGS84 "lat,lon" pairs, at least 4, first equal to last.
- `<circle>`: "lat,lon radius" with the radius in kilometres.
- `<geocode>` and `<parameter>`: a `<valueName>` / `<value>` pair.
- date-times carry a numeric offset (2026-11-22T14:30:00+01:00).
- `<references>`: whitespace-separated "sender,identifier,sent" triples.
"""

from __future__ import annotations

import math
import re
import uuid
import xml.etree.ElementTree as ET  # only for the ParseError type and Element annotations
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import defusedxml.ElementTree as DET
from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from pydantic import ValidationError

from shared.notices import (
    CATEGORIES,
    CBS_SCHEME,
    MAX_RADIUS_M,
    MAX_RINGS,
    Category,
    Circle,
    Notice,
    NoticeArea,
    is_cbs_code,
)

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
_NS = "{" + CAP_NS + "}"
#: A CAP notice is a few kilobytes; a megabyte leaves room for large polygons, and a cap keeps
#: a hostile upload from costing more than it is worth.
MAX_CAP_BYTES = 1_000_000

# Value lists in the order the specification gives them, so messages read like the spec.
_STATUSES = ("Actual", "Exercise", "System", "Test", "Draft")
_MSG_TYPES = ("Alert", "Update", "Cancel", "Ack", "Error")
_SCOPES = ("Public", "Restricted", "Private")
_CAP_CATEGORIES = (
    "Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env", "Transport",
    "Infra", "CBRNE", "Other",
)  # fmt: skip
_URGENCIES = ("Immediate", "Expected", "Future", "Past", "Unknown")
_SEVERITIES = ("Extreme", "Severe", "Moderate", "Minor", "Unknown")
_CERTAINTIES = ("Observed", "Likely", "Possible", "Unlikely", "Unknown")
_INFO_ENUMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("urgency", _URGENCIES),
    ("severity", _SEVERITIES),
    ("certainty", _CERTAINTIES),
)

PARAM_CATEGORY = "buurtalert:category"
PARAM_RINGS = "buurtalert:adjacent_rings"
PARAM_AUDIENCE = "buurtalert:audience"

#: geocode valueNames meaning CBS codes; the value is the code prefix a bare number gets
#: (None: the value must carry its own GM/WK/BU prefix).
_CBS_SCHEMES: dict[str, str | None] = {
    "CBS": None,
    "CBS_CODE": None,
    "STATCODE": None,
    "GM_CODE": "GM",
    "GEMEENTECODE": "GM",
    "WK_CODE": "WK",
    "WIJKCODE": "WK",
    "BU_CODE": "BU",
    "BUURTCODE": "BU",
}
_CBS_DIGITS = {"GM": 4, "WK": 6, "BU": 8}
_CBS_LEVEL = {"GM": "gemeente", "WK": "wijk", "BU": "buurt"}

#: Event words (Dutch and English) that say which buurtalert category a CAP info is, checked
#: in this order: the event is more specific than CAP's broad category.
_EVENT_WORDS: tuple[tuple[Category, tuple[str, ...]], ...] = (
    ("missing_person", ("vermis", "missing", "amber", "abduct", "ontvoer", "weggelopen")),
    ("burglary", ("inbraak", "inbrek", "inbrak", "burglar", "break-in")),
    ("fire", ("brand", "fire", "rook", "smoke")),
    ("suspicious_situation", ("verdacht", "suspicious", "suspect")),
)
_CAP_CATEGORY_MAP: dict[str, Category] = {"Rescue": "missing_person", "Fire": "fire"}

#: Encodings expat reads itself, plus the two Western European single-byte sets older Dutch
#: systems still emit.
_ENCODINGS = frozenset(
    {"utf-8", "utf-16", "utf-16le", "utf-16be", "us-ascii", "iso-8859-1", "iso-8859-15",
     "windows-1252"}
)  # fmt: skip
_DECLARED_ENCODING = re.compile(
    rb"""\A(?:\xef\xbb\xbf)?<\?xml\s[^>]*?encoding\s*=\s*["']([^"']*)["']"""
)

_NOTICE_NS = uuid.UUID("0d6f3f5c-6a53-4a8e-9a55-3f7d1f0c2b71")
_TOKEN_FORBIDDEN = re.compile(r"[\s,<&]")


class CapError(ValueError):
    """A CAP document buurtalert cannot accept; the message names the element."""


def cap_notice_id(sender: str, identifier: str) -> str:
    """The notice id of the CAP message (sender, identifier): stable, so resends deduplicate."""
    # CAP makes identifier unique per sender; `sent` is left out because producers spell the
    # same instant differently (Z, +00:00, -00:00) in references and in the original.
    return uuid.uuid5(_NOTICE_NS, f"cap:{sender},{identifier}").hex


def category_from_cap(cap_categories: Sequence[str], event: str) -> Category:
    """A buurtalert category from CAP <category> values and the <event> text."""
    words = event.casefold()
    for category, needles in _EVENT_WORDS:
        if any(n in words for n in needles):
            return category
    for cap_category in cap_categories:
        if cap_category in _CAP_CATEGORY_MAP:
            return _CAP_CATEGORY_MAP[cap_category]
    return "other"


def parse_cap(xml: bytes | str, *, now: datetime | None = None) -> Notice:
    """A CAP 1.2 document as a Notice; CapError naming the element when it cannot be used."""
    root = _parse_xml(xml)
    _check_root(root)
    _require(root, ("identifier", "sender", "sent", "status", "msgType", "scope"), "<alert>")
    identifier = _token(root, "identifier")
    sender = _token(root, "sender")
    sent = _datetime(_text(root, "sent"), "sent")
    status = _enum(root, "status", _STATUSES)
    msg_type = _enum(root, "msgType", _MSG_TYPES)
    _enum(root, "scope", _SCOPES)
    references = _references(_text(root, "references"), sender)
    if msg_type in ("Update", "Cancel") and not references:
        raise CapError(f"cap: <references> is required for msgType {msg_type}")

    infos = root.findall(_NS + "info")
    if msg_type in ("Alert", "Update") and not infos:
        raise CapError(f"cap: msgType {msg_type} needs at least one <info>")
    for number, info in enumerate(infos, 1):
        _check_info(info, _info_label(number, len(infos), info))

    fields: dict[str, Any] = {
        "notice_id": cap_notice_id(sender, identifier),
        "sender": sender,
        "sent": sent,
        "status": status,
        "msg_type": msg_type,
        "references": references,
        "raw_format": "cap",
    }
    if infos:
        fields.update(_info_fields(infos, msg_type))
        _check_expires(fields.get("expires"), sent, now)
    else:
        # A Cancel may come without <info>: the router takes category and area from the
        # notice it cancels; "other" keeps the model total without guessing.
        fields.update(category="other", text=_text(root, "note") or "", language="en-US")
    try:
        return Notice.model_validate(fields)
    except ValidationError as exc:
        raise CapError(f"cap: {_first_error(exc)}") from exc


# --- XML -------------------------------------------------------------------------------------


def _parse_xml(xml: bytes | str) -> ET.Element:
    try:
        data = xml.encode("utf-8") if isinstance(xml, str) else xml
    except UnicodeEncodeError as exc:  # lone surrogates in a str cannot be XML at all
        raise CapError("cap: the text is not valid Unicode") from exc
    if len(data) > MAX_CAP_BYTES:
        raise CapError(f"cap: document is larger than {MAX_CAP_BYTES} bytes")
    declared = _DECLARED_ENCODING.match(data)
    # latin-1 decodes any byte, so a garbled declaration still gets a readable refusal.
    name = declared.group(1).decode("latin-1") if declared else "utf-8"
    if name.casefold() not in _ENCODINGS:
        # Any other name would hand the bytes to an arbitrary Python codec (rot13, zlib,
        # unicode_escape, ...) before a single element is read.
        raise CapError(f"cap: encoding {_short(name)} is not supported; send UTF-8")
    try:
        return DET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DTDForbidden as exc:
        raise CapError("cap: a DTD (<!DOCTYPE ...>) is not allowed in a CAP document") from exc
    except EntitiesForbidden as exc:
        raise CapError("cap: entity declarations are not allowed in a CAP document") from exc
    except ExternalReferenceForbidden as exc:
        raise CapError("cap: external references are not allowed in a CAP document") from exc
    except ET.ParseError as exc:
        line, column = exc.position
        raise CapError(f"cap: not well-formed XML at line {line}, column {column}") from exc
    except (LookupError, ValueError) as exc:
        # Backstop for what the declaration check cannot see (pyexpat reports codec trouble so).
        raise CapError(f"cap: cannot read the XML ({exc}); send it as UTF-8") from exc


def _check_root(root: ET.Element) -> None:
    namespace, _, local = root.tag.rpartition("}")
    namespace = namespace.lstrip("{")
    if local != "alert":
        raise CapError(f"cap: the root element must be <alert>; got <{local}>")
    if namespace != CAP_NS:
        got = f"namespace {namespace!r}" if namespace else "no namespace"
        raise CapError(f"cap: <alert> must be in namespace {CAP_NS} (CAP 1.2); got {got}")


def _text(parent: ET.Element, name: str) -> str | None:
    child = parent.find(_NS + name)
    if child is None:
        return None
    text = "".join(child.itertext()).strip()
    return text or None


def _texts(parent: ET.Element, name: str) -> list[str]:
    return [t for c in parent.findall(_NS + name) if (t := "".join(c.itertext()).strip())]


def _require(parent: ET.Element, names: Sequence[str], where: str) -> None:
    missing = [f"<{n}>" for n in names if _text(parent, n) is None]
    if missing:
        raise CapError(f"cap: {where} is missing {', '.join(missing)}")


def _enum(parent: ET.Element, name: str, allowed: Sequence[str], where: str = "") -> str:
    value = _text(parent, name) or ""
    if value not in allowed:
        raise CapError(
            f"cap: <{name}>{where} must be one of {', '.join(allowed)}; got {_short(value)}"
        )
    return value


def _token(parent: ET.Element, name: str) -> str:
    value = _text(parent, name) or ""
    # The spec forbids these so that references ("sender,identifier,sent") stay parseable.
    if _TOKEN_FORBIDDEN.search(value):
        raise CapError(f"cap: <{name}> must not contain spaces, commas, '<' or '&'")
    return value


def _short(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    msg = str(err["msg"]).removeprefix("Value error, ")
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {msg}" if loc else msg


# --- values ----------------------------------------------------------------------------------


def _datetime(text: str | None, name: str) -> datetime:
    example = "2026-11-22T14:30:00+01:00"
    try:
        value = datetime.fromisoformat(text or "")
    except ValueError as exc:
        raise CapError(
            f"cap: <{name}> must be a date-time like {example}; got {_short(text or '')}"
        ) from exc
    if value.tzinfo is None:
        raise CapError(f"cap: <{name}> needs a timezone offset, e.g. {example}; got {text!r}")
    try:
        value.astimezone(UTC)  # e.g. year 1 with a positive offset has no UTC instant
    except OverflowError as exc:
        raise CapError(f"cap: <{name}> is out of range; got {text!r}") from exc
    return value


def _references(text: str | None, own_sender: str) -> list[str]:
    ids: list[str] = []
    for entry in (text or "").split():
        parts = entry.split(",")
        # The spec form is sender,identifier,sent; older producers send only the identifier
        # (of their own earlier message), which is unambiguous enough to accept.
        if len(parts) == 1:
            sender, identifier = own_sender, parts[0]
        elif len(parts) in (2, 3):
            sender, identifier = parts[0], parts[1]
        else:
            sender = identifier = ""
        if not sender or not identifier:
            raise CapError(
                f"cap: <references> entries must be 'sender,identifier,sent'; got {_short(entry)}"
            )
        ids.append(cap_notice_id(sender, identifier))
    return ids


def _check_expires(expires: datetime | None, sent: datetime, now: datetime | None) -> None:
    if expires is None:
        return
    if expires <= sent:
        raise CapError("cap: <expires> must be later than <sent>")
    if now is not None and expires <= now:
        raise CapError(f"cap: <expires> {expires.isoformat()} has already passed")


# --- info ------------------------------------------------------------------------------------


def _info_label(number: int, total: int, info: ET.Element) -> str:
    if total == 1:
        return "<info>"
    return f"<info> #{number} ({_text(info, 'language') or 'en-US'})"


def _check_info(info: ET.Element, label: str) -> None:
    _require(info, ("category", "event", "urgency", "severity", "certainty"), label)
    for category in _texts(info, "category"):
        if category not in _CAP_CATEGORIES:
            raise CapError(
                f"cap: <category> in {label} must be one of {', '.join(_CAP_CATEGORIES)}; "
                f"got {_short(category)}"
            )
    for name, allowed in _INFO_ENUMS:
        _enum(info, name, allowed, f" in {label}")


def _language(info: ET.Element) -> str:
    return _text(info, "language") or "en-US"  # the spec's default when <language> is absent


def _choose_info(infos: Sequence[ET.Element]) -> ET.Element:
    """The Dutch info (nl or nl-NL, then any nl-*), else the first."""

    def rank(info: ET.Element) -> int:
        lang = _language(info).casefold()
        return 0 if lang in ("nl", "nl-nl") else 1 if lang.startswith("nl-") else 2

    return min(infos, key=rank)  # min keeps the first of equals: document order decides ties


def _parameters(info: ET.Element) -> dict[str, str]:
    params: dict[str, str] = {}
    for param in info.findall(_NS + "parameter"):
        name = (_text(param, "valueName") or "").casefold()
        if name:
            params.setdefault(name, _text(param, "value") or "")
    return params


def _info_fields(infos: Sequence[ET.Element], msg_type: str) -> dict[str, Any]:
    chosen = _choose_info(infos)
    language = _language(chosen)
    event = _text(chosen, "event") or ""
    params = _parameters(chosen)

    category: Category
    if PARAM_CATEGORY in params:
        value = params[PARAM_CATEGORY]
        if value not in CATEGORIES:
            raise CapError(
                f"cap: <parameter> {PARAM_CATEGORY} must be one of {', '.join(CATEGORIES)}; "
                f"got {_short(value)}"
            )
        category = cast(Category, value)  # checked against CATEGORIES just above
    else:
        category = category_from_cap(_texts(chosen, "category"), event)

    rings: int | None = None
    if PARAM_RINGS in params:
        value = params[PARAM_RINGS]
        if not (value.isascii() and value.isdigit() and int(value) <= MAX_RINGS):
            raise CapError(
                f"cap: <parameter> {PARAM_RINGS} must be a whole number 0..{MAX_RINGS}; "
                f"got {_short(value)}"
            )
        rings = int(value)

    audience = params.get(PARAM_AUDIENCE, "residents")
    if audience not in ("residents", "admins"):
        raise CapError(
            f"cap: <parameter> {PARAM_AUDIENCE} must be residents or admins; got {_short(audience)}"
        )

    # Other languages repeat the same areas; several infos in the chosen language may each
    # name their own, so their areas together are the notice's area.
    areas: list[NoticeArea] = []
    for info in infos:
        if _language(info).casefold() == language.casefold():
            for area in info.findall(_NS + "area"):
                for parsed in _area(area):
                    if parsed not in areas:
                        areas.append(parsed)
    if msg_type in ("Alert", "Update") and not areas:
        raise CapError(
            "cap: <info> has no <area>; buurtalert needs a <polygon>, <circle> or a CBS "
            "<geocode> to know where to send it"
        )

    description = _text(chosen, "description")
    instruction = _text(chosen, "instruction")
    headline = _text(chosen, "headline") or event
    text = "\n\n".join(t for t in (description, instruction) if t) or headline
    expires_text = _text(chosen, "expires")
    return {
        "category": category,
        "adjacent_rings": rings,
        "headline": headline,
        "text": text,
        "areas": areas,
        "expires": _datetime(expires_text, "expires") if expires_text else None,
        "language": language,
        "audience": audience,
    }


# --- area ------------------------------------------------------------------------------------


def _area(area: ET.Element) -> list[NoticeArea]:
    desc = _text(area, "areaDesc")
    if desc is None:
        raise CapError("cap: <area> is missing <areaDesc>")
    shapes: list[NoticeArea] = []
    for polygon in _texts(area, "polygon"):
        shapes.append(_make_area("polygon", desc, geometry=_polygon(polygon)))
    for circle in _texts(area, "circle"):
        shapes.append(_make_area("circle", desc, circle=_circle(circle)))

    codes: list[str] = []
    unknown: list[str] = []
    for geocode in area.findall(_NS + "geocode"):
        name, value = _text(geocode, "valueName"), _text(geocode, "value")
        if name is None or value is None:
            raise CapError(f"cap: <geocode> in <area> {_short(desc)} needs <valueName> and <value>")
        code = _cbs_code(name, value)
        if code is None:
            unknown.append(name)
        elif code not in codes:
            codes.append(code)
    if codes:
        shapes.append(_make_area("geocode", desc, codes=codes, scheme=CBS_SCHEME))
    if unknown and not shapes:
        # The spec pairs a geocode with a polygon or circle "whenever possible"; only when the
        # code is all there is does an unknown scheme leave nothing to route on.
        raise CapError(
            f"cap: <geocode> scheme {_short(unknown[0])} is not supported (in <area> "
            f"{_short(desc)}); use a <polygon>, a <circle>, or valueName CBS, GM_CODE, WK_CODE "
            "or BU_CODE with codes like GM0971, WK097100, BU09710000"
        )
    if not shapes:
        raise CapError(
            f"cap: <area> {_short(desc)} has no <polygon>, <circle> or <geocode>; "
            "an <areaDesc> alone cannot be routed"
        )
    return shapes


def _make_area(element: str, desc: str, **kw: Any) -> NoticeArea:
    try:
        return NoticeArea(description=desc, **kw)
    except ValidationError as exc:
        raise CapError(f"cap: <{element}> {_first_error(exc)}") from exc


def _lat_lon(pair: str, element: str) -> tuple[float, float]:
    parts = pair.split(",")
    try:
        if len(parts) != 2:
            raise ValueError(pair)
        lat, lon = float(parts[0]), float(parts[1])
    except ValueError as exc:
        raise CapError(f"cap: <{element}> has {_short(pair)} where a lat,lon pair belongs") from exc
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        raise CapError(
            f"cap: <{element}> pair {_short(pair)} is outside WGS84 (lat ±90, lon ±180); "
            "CAP pairs are lat,lon"
        )
    return lat, lon


def _polygon(text: str) -> dict[str, Any]:
    pairs = [_lat_lon(p, "polygon") for p in text.split()]
    if len(pairs) < 4:
        raise CapError(f"cap: <polygon> needs at least 4 lat,lon pairs; got {len(pairs)}")
    if pairs[0] != pairs[-1]:
        raise CapError("cap: <polygon> must be closed: the first and last pairs must be equal")
    # GeoJSON wants [lon, lat]; CAP gives lat,lon.
    return {"type": "Polygon", "coordinates": [[[lon, lat] for lat, lon in pairs]]}


def _circle(text: str) -> Circle:
    parts = text.split()
    if len(parts) != 2:
        raise CapError(f"cap: <circle> must be 'lat,lon radius_km'; got {_short(text)}")
    lat, lon = _lat_lon(parts[0], "circle")
    try:
        radius_km = float(parts[1])
    except ValueError as exc:
        raise CapError(
            f"cap: <circle> radius must be a number of km; got {_short(parts[1])}"
        ) from exc
    max_km = MAX_RADIUS_M / 1000
    if not (math.isfinite(radius_km) and 0 < radius_km <= max_km):
        raise CapError(
            f"cap: <circle> radius must be more than 0 and at most {max_km:g} km; "
            f"got {_short(parts[1])}"
        )
    return Circle(lat=lat, lon=lon, radius_m=radius_km * 1000)


def _cbs_code(value_name: str, value: str) -> str | None:
    """The CBS code a geocode names; None when the scheme is not CBS and the value not a code."""
    scheme = value_name.strip().upper()
    code = "".join(value.split()).upper()
    if scheme not in _CBS_SCHEMES:
        # Whatever the valueName, a value shaped like a CBS code can only mean that code.
        return code if is_cbs_code(code) else None
    prefix = _CBS_SCHEMES[scheme]
    if prefix and code.isdigit() and len(code) == _CBS_DIGITS[prefix]:
        code = prefix + code  # CBS files also list the codes without their letters
    if not is_cbs_code(code) or (prefix and not code.startswith(prefix)):
        want = (
            f"a {_CBS_LEVEL[prefix]} code ({prefix} + {_CBS_DIGITS[prefix]} digits)"
            if prefix
            else "a CBS code like GM0971, WK097100 or BU09710000"
        )
        raise CapError(f"cap: <geocode> {value_name} value {_short(value)} is not {want}")
    return code
