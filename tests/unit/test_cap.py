"""Dispatch notices: CAP 1.2 documents and the JSON form, normalised to the shared Notice."""

from __future__ import annotations

import encodings
import math
import pkgutil
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from shapely.geometry import MultiPolygon, Point, Polygon

from services.ingest.adapters.cap import (
    CAP_NS,
    CapError,
    cap_notice_id,
    category_from_cap,
    parse_cap,
)
from services.ingest.adapters.notice_json import NoticeError, NoticeIn, to_notice
from shared.notices import (
    Circle,
    Notice,
    NoticeArea,
    area_codes,
    area_geometries,
    circle_polygon,
    default_rings,
)

pytestmark = pytest.mark.unit

CAP_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "cap"
AMBER = CAP_DIR / "oasis_cap12_amber_example.xml"
NOW = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)
SENDER = "meldkamer-limburg@politie.nl"
#: Around Stein (GM0971), in CAP's lat,lon order.
STEIN_POLYGON = "50.97,5.75 50.97,5.77 50.98,5.77 50.98,5.75 50.97,5.75"


# --- document builders -------------------------------------------------------------------------


def area(
    desc: str | None = "Stein-Centrum",
    *,
    polygons: Sequence[str] = (),
    circles: Sequence[str] = (),
    geocodes: Sequence[tuple[str, str]] = (),
) -> str:
    """An <area> block; desc None leaves <areaDesc> out."""
    parts = [f"<areaDesc>{desc}</areaDesc>"] if desc is not None else []
    parts += [f"<polygon>{p}</polygon>" for p in polygons]
    parts += [f"<circle>{c}</circle>" for c in circles]
    parts += [
        f"<geocode><valueName>{n}</valueName><value>{v}</value></geocode>" for n, v in geocodes
    ]
    return f"<area>{''.join(parts)}</area>"


def info(
    *,
    language: str | None = "nl-NL",
    category: str | None = "Rescue",
    event: str | None = "Vermiste persoon",
    urgency: str | None = "Immediate",
    severity: str | None = "Severe",
    certainty: str | None = "Likely",
    expires: str | None = None,
    headline: str | None = "Vermiste man (82) in Stein",
    description: str | None = "Man, 82 jaar, grijze jas, loopt met rollator.",
    instruction: str | None = None,
    params: Mapping[str, str] | None = None,
    areas: Iterable[str] = (area(polygons=[STEIN_POLYGON]),),
) -> str:
    """An <info> block in spec order; None leaves an element out."""
    fields: list[tuple[str, str | None]] = [
        ("language", language),
        ("category", category),
        ("event", event),
        ("urgency", urgency),
        ("severity", severity),
        ("certainty", certainty),
        ("expires", expires),
        ("headline", headline),
        ("description", description),
        ("instruction", instruction),
    ]
    body = "".join(f"<{k}>{v}</{k}>" for k, v in fields if v is not None)
    body += "".join(
        f"<parameter><valueName>{k}</valueName><value>{v}</value></parameter>"
        for k, v in (params or {}).items()
    )
    return f"<info>{body}{''.join(areas)}</info>"


def cap(
    *,
    identifier: str | None = "NL-POL-2026-0042",
    sender: str | None = SENDER,
    sent: str | None = "2026-11-22T14:30:00+01:00",
    status: str | None = "Actual",
    msg_type: str | None = "Alert",
    scope: str | None = "Public",
    references: str | None = None,
    note: str | None = None,
    infos: Iterable[str] = (info(),),
    namespace: str = CAP_NS,
) -> bytes:
    """A CAP 1.2 document; None leaves an element out."""
    fields: list[tuple[str, str | None]] = [
        ("identifier", identifier),
        ("sender", sender),
        ("sent", sent),
        ("status", status),
        ("msgType", msg_type),
        ("scope", scope),
        ("note", note),
        ("references", references),
    ]
    head = "".join(f"<{k}>{v}</{k}>" for k, v in fields if v is not None)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<alert xmlns="{namespace}">'
        f"{head}{''.join(infos)}</alert>"
    ).encode()


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (an independent check on the circle construction)."""
    r = 6_371_008.8
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(math.sqrt(h))


# --- the real OASIS example ----------------------------------------------------------------------


@pytest.fixture
def amber() -> bytes:
    if not AMBER.is_file():
        pytest.skip(f"OASIS AMBER example not found at {AMBER} (shared data lives beside the repo)")
    return AMBER.read_bytes()


def test_real_amber_example_is_refused_naming_its_same_geocode(amber: bytes) -> None:
    # Design: a geocode is only routable when it names CBS areas; the AMBER example's area is a
    # SAME (US county) code and nothing else, so there is nowhere to send it. The refusal names
    # the element, the scheme and what would work instead.
    with pytest.raises(CapError) as err:
        parse_cap(amber)
    msg = str(err.value)
    assert "<geocode>" in msg
    assert "'SAME'" in msg
    assert "Los Angeles County" in msg
    assert "CBS" in msg


def test_real_amber_example_with_a_polygon_parses_and_ignores_the_same_code(amber: bytes) -> None:
    # The spec says a geocode SHOULD come with a polygon; once one is there, the unknown code is
    # ignored rather than refused. Everything else is the real document as OASIS published it.
    polygon = "<polygon>34.0,-118.5 34.0,-118.1 34.3,-118.1 34.3,-118.5 34.0,-118.5</polygon>"
    doc = amber.replace(
        b"<areaDesc>Los Angeles County</areaDesc>",
        b"<areaDesc>Los Angeles County</areaDesc>" + polygon.encode(),
    )
    notice = parse_cap(doc)
    assert notice.notice_id == cap_notice_id("KARO@CLETS.DOJ.CA.GOV", "KAR0-0306112239-SW")
    assert notice.sender == "KARO@CLETS.DOJ.CA.GOV"
    assert notice.sent == datetime(2003, 6, 11, 22, 39, tzinfo=timezone(timedelta(hours=-7)))
    assert (notice.status, notice.msg_type, notice.raw_format) == ("Actual", "Alert", "cap")
    # No Dutch info: the first (en-US) one is taken.
    assert notice.language == "en-US"
    assert notice.headline == "Amber Alert in Los Angeles County"
    assert notice.text.startswith("DATE/TIME: 06/11/03")
    # "Child Abduction" under CAP category Rescue is a missing person, with one adjacent ring.
    assert notice.category == "missing_person"
    assert notice.adjacent_rings == 1
    assert [a.kind for a in notice.areas] == ["geometry"]
    assert area_codes(notice.areas) == []
    assert notice.expires is None


# --- Dutch samples ------------------------------------------------------------------------------


def test_polygon_notice_with_buurtalert_parameters() -> None:
    doc = cap(
        infos=[
            info(
                expires="2026-11-22T20:00:00+01:00",
                instruction="Bel 112 als u hem ziet.",
                params={"buurtalert:category": "missing_person", "buurtalert:adjacent_rings": "2"},
            )
        ]
    )
    notice = parse_cap(doc)
    assert notice.notice_id == cap_notice_id(SENDER, "NL-POL-2026-0042")
    assert notice.category == "missing_person"
    assert notice.adjacent_rings == 2
    assert notice.language == "nl-NL"
    assert notice.headline == "Vermiste man (82) in Stein"
    assert notice.text == "Man, 82 jaar, grijze jas, loopt met rollator.\n\nBel 112 als u hem ziet."
    assert notice.expires == datetime(2026, 11, 22, 19, 0, tzinfo=UTC)
    (only,) = notice.areas
    assert only.description == "Stein-Centrum"
    assert only.geometry is not None
    # CAP's lat,lon pairs are stored GeoJSON-style as [lon, lat].
    assert only.geometry["coordinates"][0][0] == [5.75, 50.97]
    shape_ = area_geometries(notice.areas)
    assert shape_ is not None
    assert shape_.contains(Point(5.76, 50.975))
    assert not shape_.contains(Point(50.975, 5.76))


def test_circle_radius_is_kilometres() -> None:
    notice = parse_cap(cap(infos=[info(areas=[area("Rond Elsloo", circles=["50.95,5.78 1.5"])])]))
    (only,) = notice.areas
    assert only.circle == Circle(lat=50.95, lon=5.78, radius_m=1500)
    shape_ = area_geometries(notice.areas)
    assert shape_ is not None
    assert shape_.contains(Point(5.78, 50.95))


def test_several_areas_polygons_circles_and_codes_are_all_kept() -> None:
    far_polygon = "52.37,4.89 52.37,4.91 52.38,4.91 52.38,4.89 52.37,4.89"
    doc = cap(
        infos=[
            info(
                areas=[
                    area("Stein", polygons=[STEIN_POLYGON], geocodes=[("GM_CODE", "GM0971")]),
                    area("Amsterdam-Centrum", polygons=[far_polygon], circles=["52.0,5.0 2"]),
                ]
            )
        ]
    )
    notice = parse_cap(doc)
    assert [a.kind for a in notice.areas] == ["geometry", "codes", "geometry", "circle"]
    assert area_codes(notice.areas) == ["GM0971"]
    shape_ = area_geometries(notice.areas)
    assert isinstance(shape_, MultiPolygon)
    assert len(shape_.geoms) == 3
    for lon, lat in [(5.76, 50.975), (4.9, 52.375), (5.0, 52.0)]:
        assert shape_.contains(Point(lon, lat))


@pytest.mark.parametrize(
    ("geocodes", "codes"),
    [
        ([("BU_CODE", "BU09710000")], ["BU09710000"]),
        ([("GM_CODE", "0971")], ["GM0971"]),  # CBS tables also list codes without letters
        ([("CBS", "wk097100"), ("CBS", "BU09710001")], ["WK097100", "BU09710001"]),
        ([("buurtcode", "09710002")], ["BU09710002"]),
        ([("gemeente", "GM1640")], ["GM1640"]),  # any valueName, when the value is a CBS code
        ([("CBS", "GM0971"), ("GM_CODE", "GM0971")], ["GM0971"]),
    ],
)
def test_cbs_geocodes_become_area_codes(geocodes: list[tuple[str, str]], codes: list[str]) -> None:
    notice = parse_cap(cap(infos=[info(areas=[area("Stein", geocodes=geocodes)])]))
    assert area_codes(notice.areas) == codes
    assert {a.scheme for a in notice.areas} == {"CBS"}
    assert area_geometries(notice.areas) is None  # codes are resolved by the router's registry


def test_unknown_geocode_next_to_a_polygon_is_ignored() -> None:
    doc = cap(infos=[info(areas=[area(polygons=[STEIN_POLYGON], geocodes=[("SAME", "006037")])])])
    assert [a.kind for a in parse_cap(doc).areas] == ["geometry"]


def test_update_and_cancel_reference_the_original_notice() -> None:
    original = parse_cap(cap())
    update = parse_cap(
        cap(
            identifier="NL-POL-2026-0043",
            msg_type="Update",
            references=f"{SENDER},NL-POL-2026-0042,2026-11-22T14:30:00+01:00",
            infos=[info(headline="Update: zoekgebied uitgebreid")],
        )
    )
    assert update.msg_type == "Update"
    assert update.references == [original.notice_id]
    assert update.notice_id != original.notice_id

    cancel = parse_cap(
        cap(
            identifier="NL-POL-2026-0044",
            msg_type="Cancel",
            note="De man is terecht.",
            references=(
                f"{SENDER},NL-POL-2026-0042,2026-11-22T14:30:00+01:00\n"
                f"  {SENDER},NL-POL-2026-0043,2026-11-22T15:10:00+01:00"
            ),
            infos=[],
        )
    )
    assert cancel.msg_type == "Cancel"
    assert cancel.references == [original.notice_id, update.notice_id]
    assert cancel.areas == []
    assert cancel.text == "De man is terecht."


def test_reference_by_bare_identifier_means_the_same_sender() -> None:
    cancel = parse_cap(cap(identifier="X2", msg_type="Cancel", references="NL-POL-2026-0042"))
    assert cancel.references == [cap_notice_id(SENDER, "NL-POL-2026-0042")]


def test_resending_the_same_document_gives_the_same_notice_id() -> None:
    assert parse_cap(cap()).notice_id == parse_cap(cap(sent="2026-11-22T13:30:00Z")).notice_id


@pytest.mark.parametrize("status", ["Exercise", "Test", "System", "Draft"])
def test_non_actual_status_is_kept(status: str) -> None:
    assert parse_cap(cap(status=status)).status == status


def test_dutch_info_is_chosen_and_its_areas_used() -> None:
    english = info(
        language="en-GB",
        event="Missing person",
        headline="Missing man (82) in Stein",
        areas=[area("Elsewhere", circles=["51.5,5.5 1"])],
    )
    notice = parse_cap(cap(infos=[english, info(language="nl-NL")]))
    assert notice.headline == "Vermiste man (82) in Stein"
    assert notice.language == "nl-NL"
    assert [a.description for a in notice.areas] == ["Stein-Centrum"]


def test_expires_before_sent_or_already_passed_is_refused() -> None:
    with pytest.raises(CapError, match=r"<expires> must be later than <sent>"):
        parse_cap(cap(infos=[info(expires="2026-11-22T14:00:00+01:00")]))
    doc = cap(infos=[info(expires="2026-11-22T15:00:00+01:00")])
    assert parse_cap(doc).expires is not None
    with pytest.raises(CapError, match=r"<expires> .* has already passed"):
        parse_cap(doc, now=datetime(2026, 11, 22, 16, 0, tzinfo=UTC))


@pytest.mark.parametrize(
    ("cap_categories", "event", "expected"),
    [
        (["Rescue"], "Child Abduction", "missing_person"),
        (["Safety"], "Vermiste persoon", "missing_person"),
        (["Rescue"], "Reddingsactie", "missing_person"),
        (["Security"], "Inbraakgolf in de wijk", "burglary"),
        (["Security"], "Verdachte situatie", "suspicious_situation"),
        (["Fire"], "Grote brand", "fire"),
        (["Fire"], "Rookontwikkeling", "fire"),
        (["Security"], "Politie-inzet", "other"),
        (["Met"], "Storm", "other"),
    ],
)
def test_category_fallback_from_cap_category_and_event(
    cap_categories: list[str], event: str, expected: str
) -> None:
    assert category_from_cap(cap_categories, event) == expected


def test_category_from_event_when_no_parameter() -> None:
    notice = parse_cap(cap(infos=[info(category="Security", event="Inbraak")]))
    assert (notice.category, notice.adjacent_rings) == ("burglary", 0)


# --- refused documents ---------------------------------------------------------------------------


def with_polygon(polygon: str) -> bytes:
    return cap(infos=[info(areas=[area(polygons=[polygon])])])


def with_circle(circle: str) -> bytes:
    return cap(infos=[info(areas=[area(circles=[circle])])])


def with_geocode(value_name: str, value: str) -> bytes:
    return cap(infos=[info(areas=[area(geocodes=[(value_name, value)])])])


BOW_TIE = "50.97,5.75 50.98,5.77 50.97,5.77 50.98,5.75 50.97,5.75"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (cap(identifier=None), r"^cap: <alert> is missing <identifier>$"),
        (cap(identifier=None, scope=None), r"missing <identifier>, <scope>"),
        (
            cap(status="Foo"),
            r"^cap: <status> must be one of Actual, Exercise, System, Test, Draft; got 'Foo'$",
        ),
        (cap(msg_type="Alarm"), r"<msgType> must be one of Alert, Update, Cancel, Ack, Error"),
        (cap(scope="Everyone"), r"<scope> must be one of Public, Restricted, Private"),
        (cap(identifier="NL 42"), r"<identifier> must not contain spaces, commas"),
        (cap(sent="2026-11-22T14:30:00"), r"<sent> needs a timezone offset"),
        (cap(sent="gisteren"), r"<sent> must be a date-time"),
        (cap(msg_type="Update"), r"<references> is required for msgType Update"),
        (cap(msg_type="Cancel"), r"<references> is required for msgType Cancel"),
        (cap(references="a,b,c,d", msg_type="Cancel"), r"<references> entries must be"),
        (cap(infos=[]), r"msgType Alert needs at least one <info>"),
        (cap(infos=[info(certainty=None)]), r"<info> is missing <certainty>"),
        (
            cap(infos=[info(language="en-US"), info(language="es-US", event=None)]),
            r"<info> #2 \(es-US\) is missing <event>",
        ),
        (cap(infos=[info(urgency="Now")]), r"<urgency> in <info> must be one of Immediate"),
        (cap(infos=[info(category="Police")]), r"<category> in <info> must be one of Geo, Met"),
        (
            cap(infos=[info(params={"buurtalert:category": "theft"})]),
            r"<parameter> buurtalert:category must be one of missing_person, burglary",
        ),
        (
            cap(infos=[info(params={"buurtalert:adjacent_rings": "7"})]),
            r"<parameter> buurtalert:adjacent_rings must be a whole number 0..3",
        ),
        (cap(infos=[info(areas=[])]), r"<info> has no <area>"),
        (cap(infos=[info(areas=[area(None, polygons=[STEIN_POLYGON])])]), r"missing <areaDesc>"),
        (cap(infos=[info(areas=[area()])]), r"has no <polygon>, <circle> or <geocode>"),
        (
            with_polygon("50.97,5.75 50.97,5.77 50.97,5.75"),
            r"^cap: <polygon> needs at least 4 lat,lon pairs; got 3$",
        ),
        (
            with_polygon("50.97,5.75 50.97,5.77 50.98,5.77 50.98,5.75"),
            r"<polygon> must be closed",
        ),
        (
            with_polygon("50.97;5.75 50.97,5.77 50.98,5.77 50.97;5.75"),
            r"<polygon> has '50.97;5.75' where a lat,lon pair belongs",
        ),
        (
            with_polygon("95,5.75 95,5.77 96,5.77 95,5.75"),
            r"<polygon> pair '95,5.75' is outside WGS84",
        ),
        (
            with_polygon(BOW_TIE),
            r"<polygon> .*not a valid polygon: Self-intersection",
        ),
        (with_circle("50.95,5.78"), r"<circle> must be 'lat,lon"),
        (with_circle("50.95,5.78 0"), r"<circle> radius must be"),
        (with_circle("50.95,5.78 500"), r"at most 50 km"),
        (with_circle("50.95,5.78 km"), r"radius must be a number"),
        (with_circle("x,5.78 1"), r"<circle> has 'x,5.78'"),
        (
            with_geocode("SAME", "006037"),
            r"<geocode> scheme 'SAME' is not supported",
        ),
        (
            with_geocode("BU_CODE", "GM0971"),
            r"<geocode> BU_CODE value 'GM0971' is not a buurt code \(BU \+ 8 digits\)",
        ),
        (
            with_geocode("CBS", "Stein"),
            r"<geocode> CBS value 'Stein' is not a CBS code",
        ),
        (cap(namespace="urn:oasis:names:tc:emergency:cap:1.1"), r"got namespace .*cap:1.1"),
        (b"<alert><identifier>x</identifier></alert>", r"namespace .*; got no namespace"),
        (b"<feed xmlns='http://www.w3.org/2005/Atom'/>", r"root element must be <alert>; got"),
    ],
)
def test_invalid_documents_are_refused_naming_the_element(doc: bytes, message: str) -> None:
    with pytest.raises(CapError, match=message):
        parse_cap(doc)


def test_not_well_formed_xml_names_the_line() -> None:
    doc = f'<?xml version="1.0"?>\n<alert xmlns="{CAP_NS}">\n<identifier>x</ident>\n</alert>'
    with pytest.raises(CapError, match=r"^cap: not well-formed XML at line 3, column \d+$"):
        parse_cap(doc.encode())
    with pytest.raises(CapError, match=r"not well-formed XML at line 1"):
        parse_cap(b"")
    with pytest.raises(CapError, match=r"not well-formed XML"):
        parse_cap(b'{"category": "fire"}')


def test_entity_bomb_is_refused_without_expanding() -> None:
    lol = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    bomb = (
        f'<?xml version="1.0"?>\n<!DOCTYPE alert [<!ENTITY lol0 "lol">{lol}]>\n'
        f'<alert xmlns="{CAP_NS}"><identifier>&lol9;</identifier></alert>'
    )
    with pytest.raises(CapError, match=r"a DTD \(<!DOCTYPE \.\.\.>\) is not allowed"):
        parse_cap(bomb.encode())


def test_external_entity_is_refused() -> None:
    xxe = (
        '<?xml version="1.0"?>\n<!DOCTYPE alert [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
        f'<alert xmlns="{CAP_NS}"><identifier>&x;</identifier></alert>'
    )
    with pytest.raises(CapError, match=r"DTD"):
        parse_cap(xxe.encode())


@pytest.mark.parametrize(
    ("encoding", "message"),
    [
        ("shift_jis", r"^cap: encoding 'shift_jis' is not supported; send UTF-8$"),
        ("rot13", r"encoding 'rot13' is not supported"),
        ("unicode_escape", r"encoding 'unicode_escape' is not supported"),
        ("", r"encoding '' is not supported"),
        ("\u00e9t\u00e9", r"encoding 'Ã©tÃ©' is not supported"),  # raw UTF-8 read as latin-1
        ("utf-16", r"not well-formed XML at line 1"),  # declared, but the bytes are UTF-8
        ("ISO-8859-1", r"<alert> is missing <identifier>"),  # accepted: read on to the elements
    ],
)
def test_odd_encoding_declarations_are_refused(encoding: str, message: str) -> None:
    doc = f'<?xml version="1.0" encoding="{encoding}"?><alert xmlns="{CAP_NS}"/>'
    with pytest.raises(CapError, match=message):
        parse_cap(doc.encode())


def test_text_that_is_not_unicode_is_refused() -> None:
    with pytest.raises(CapError, match=r"not valid Unicode"):
        parse_cap("<alert>\ud800</alert>")


def test_oversized_document_is_refused() -> None:
    with pytest.raises(CapError, match=r"larger than"):
        parse_cap(b" " * 1_000_001)


# --- hypothesis: nothing but CapError ------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_cap_error(data: bytes) -> None:
    with pytest.raises(CapError):
        parse_cap(data)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_random_text_raises_only_cap_error(text: str) -> None:
    with pytest.raises(CapError):
        parse_cap(text)


_CODECS = sorted({m.name for m in pkgutil.iter_modules(encodings.__path__)} - {"aliases"})


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_CODECS), st.binary(max_size=100))
def test_any_declared_encoding_raises_only_cap_error(codec: str, body: bytes) -> None:
    declaration = f'<?xml version="1.0" encoding="{codec}"?>'.encode()
    with pytest.raises(CapError):
        parse_cap(declaration + b"<alert>" + body + b"</alert>")


_FIELDS = st.sampled_from(
    ["identifier", "sent", "status", "msgType", "scope", "references", "polygon", "circle",
     "category", "urgency", "expires", "value", "valueName", "language"]
)  # fmt: skip
_JUNK = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="<&"), max_size=40),
    st.sampled_from(["", "0", "-1", "nan", "inf", "1e400", "91,181 1", "0001-01-01T00:00:00+14:00",
                     "9999-12-31T23:59:59-14:00", "a,b,c", "GM0971", "BU_CODE", "nl", "Update"]),
)  # fmt: skip


_BASE_DOC = cap(
    references=f"{SENDER},NL-POL-2026-0001,2026-11-22T10:00:00+01:00",
    infos=[
        info(
            expires="2026-11-23T00:00:00+01:00",
            params={"buurtalert:category": "fire", "buurtalert:adjacent_rings": "1"},
            areas=[
                area(
                    polygons=[STEIN_POLYGON],
                    circles=["50.95,5.78 1.5"],
                    geocodes=[("BU_CODE", "BU09710000"), ("CBS", "GM0971")],
                )
            ],
        )
    ],
).decode()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_FIELDS, st.integers(min_value=0, max_value=3), _JUNK)
def test_corrupted_fields_give_a_notice_or_cap_error(field: str, nth: int, junk: str) -> None:
    # Swap the text of one occurrence of one element for junk: the parser must either still
    # make a valid Notice or refuse with CapError, never crash with anything else.
    starts = [i for i in range(len(_BASE_DOC)) if _BASE_DOC.startswith(f"<{field}>", i)]
    start = starts[nth % len(starts)] + len(field) + 2
    end = _BASE_DOC.index(f"</{field}>", start)
    mutated = _BASE_DOC[:start] + junk + _BASE_DOC[end:]
    try:
        notice = parse_cap(mutated.encode())
    except CapError:
        return
    assert isinstance(notice, Notice)


# --- the shared model and geometry ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "rings"),
    [("missing_person", 1), ("burglary", 0), ("suspicious_situation", 0), ("fire", 0),
     ("other", 0)],
)  # fmt: skip
def test_default_rings_by_category(category: str, rings: int) -> None:
    assert default_rings(category) == rings


@settings(max_examples=200, deadline=None)
@given(
    lat=st.floats(min_value=50.7, max_value=53.6),
    lon=st.floats(min_value=3.3, max_value=7.3),
    radius_m=st.floats(min_value=1, max_value=50_000),
)
def test_circle_contains_its_centre_and_has_roughly_the_right_size(
    lat: float, lon: float, radius_m: float
) -> None:
    circle = Circle(lat=lat, lon=lon, radius_m=radius_m)
    poly = circle_polygon(circle, 64)
    assert poly.is_valid
    assert poly.contains(Point(lon, lat))
    # Every vertex lies at the radius, measured on the sphere independently of the construction.
    for x, y in poly.exterior.coords:
        assert haversine_m(lat, lon, y, x) == pytest.approx(radius_m, rel=0.01)
    # Area in m² from a local equirectangular scale: a 64-gon has 99.8 % of the circle's area.
    m_per_deg = math.pi * 6_371_008.8 / 180
    area_m2 = poly.area * m_per_deg**2 * math.cos(math.radians(lat))
    assert area_m2 == pytest.approx(math.pi * radius_m**2, rel=0.02)


def test_area_geometries_of_codes_only_is_none() -> None:
    assert area_geometries([NoticeArea(codes=["GM0971"])]) is None
    assert area_geometries([]) is None


def test_overlapping_areas_merge_into_one_polygon() -> None:
    areas = [
        NoticeArea(circle=Circle(lat=50.97, lon=5.76, radius_m=500)),
        NoticeArea(circle=Circle(lat=50.97, lon=5.765, radius_m=500)),
    ]
    merged = area_geometries(areas, circle_segments=16)
    assert isinstance(merged, Polygon)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"codes": ["GM0971"], "circle": Circle(lat=51, lon=5, radius_m=10)},
        {"codes": ["Stein"]},
        {"geometry": {"type": "Point", "coordinates": [5, 51]}},
        {"circle": Circle(lat=51, lon=5, radius_m=10), "scheme": "CBS"},
    ],
)
def test_notice_area_is_exactly_one_valid_form(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        NoticeArea(**kwargs)


# --- the JSON form -------------------------------------------------------------------------------

SQUARE = {
    "type": "Polygon",
    "coordinates": [[[5.75, 50.97], [5.77, 50.97], [5.77, 50.98], [5.75, 50.98], [5.75, 50.97]]],
}


def json_notice(body: dict[str, Any], *, now: datetime = NOW) -> Notice:
    return to_notice(NoticeIn.model_validate(body), notice_id="n1", sender="dispatch", now=now)


def test_json_polygon_notice() -> None:
    notice = json_notice(
        {"category": "burglary", "headline": "Inbraken", "text": "Let op.", "area": SQUARE}
    )
    assert (notice.notice_id, notice.sender, notice.sent) == ("n1", "dispatch", NOW)
    assert (notice.status, notice.msg_type, notice.raw_format) == ("Actual", "Alert", "json")
    assert notice.adjacent_rings == 0
    shape_ = area_geometries(notice.areas)
    assert shape_ is not None
    assert shape_.contains(Point(5.76, 50.975))


def test_json_circle_notice_with_expiry() -> None:
    expires = NOW + timedelta(hours=4)
    notice = json_notice(
        {
            "category": "missing_person",
            "headline": "Vermist",
            "text": "Meisje, 9 jaar.",
            "area": {"circle": {"lat": 50.95, "lon": 5.78, "radius_m": 800}},
            "expires": expires.isoformat(),
        }
    )
    assert notice.areas == [NoticeArea(circle=Circle(lat=50.95, lon=5.78, radius_m=800))]
    assert notice.adjacent_rings == 1
    assert notice.expires == expires


def test_json_codes_extension() -> None:
    notice = json_notice(
        {"category": "fire", "headline": "Brand", "area": {"codes": ["bu09710000", "GM0971"]}}
    )
    assert area_codes(notice.areas) == ["BU09710000", "GM0971"]
    assert notice.text == "Brand"  # no text: the headline is the message


@pytest.mark.parametrize(
    ("category", "rings"),
    [("missing_person", 1), ("burglary", 0), ("suspicious_situation", 0), ("fire", 0),
     ("other", 0)],
)  # fmt: skip
def test_json_default_rings_and_explicit_override(category: str, rings: int) -> None:
    body = {"category": category, "headline": "h", "area": SQUARE}
    assert json_notice(body).adjacent_rings == rings
    assert json_notice({**body, "adjacent_rings": 3}).adjacent_rings == 3
    assert json_notice({**body, "adjacent_rings": 0}).adjacent_rings == 0


def test_json_update_and_cancel_need_references() -> None:
    update = json_notice(
        {"msg_type": "Update", "references": ["n0"], "category": "fire", "headline": "h",
         "area": SQUARE}
    )  # fmt: skip
    assert update.references == ["n0"]
    cancel = json_notice({"msg_type": "Cancel", "references": ["n0"], "headline": "Opgelost"})
    assert (cancel.msg_type, cancel.areas, cancel.category) == ("Cancel", [], "other")
    with pytest.raises(ValidationError, match=r"references required for msg_type Cancel"):
        NoticeIn.model_validate({"msg_type": "Cancel", "headline": "Opgelost"})


def _error(body: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ValidationError) as err:
        NoticeIn.model_validate(body)
    first = err.value.errors()[0]
    return ".".join(str(p) for p in first["loc"]), first["msg"]


@pytest.mark.parametrize(
    ("body", "loc", "msg"),
    [
        ({"category": "theft", "headline": "h", "area": SQUARE}, "category", "missing_person"),
        ({"category": "fire", "headline": "h"}, "", "area required for msg_type Alert"),
        ({"headline": "h", "area": SQUARE}, "", "category required for msg_type Alert"),
        ({"category": "fire", "headline": "", "area": SQUARE}, "headline", "at least 1"),
        (
            {"category": "fire", "headline": "h", "area": SQUARE, "priority": 1},
            "priority",
            "Extra inputs are not permitted",
        ),
        (
            {"category": "fire", "headline": "h", "area": SQUARE, "adjacent_rings": 4},
            "adjacent_rings",
            "less than or equal to 3",
        ),
        (
            {"category": "fire", "headline": "h",
             "area": {"circle": {"lat": 50.9, "lon": 5.7, "radius_m": 60000}}},
            "area.circle.circle.radius_m",
            "less than or equal to 50000",
        ),
        (
            {"category": "fire", "headline": "h",
             "area": {"type": "Point", "coordinates": [5.7, 50.9]}},
            "area",
            "area must be a GeoJSON Polygon or MultiPolygon",
        ),
        (
            {"category": "fire", "headline": "h",
             "area": {"type": "Polygon", "coordinates": [[[5.7, 50.9], [5.8, 50.9]]]}},
            "area.geometry",
            "Polygon",
        ),
        (
            {"category": "fire", "headline": "h",
             "area": {"type": "Polygon", "coordinates": [[[50.97, 95.75], [50.97, 95.77],
                                                          [50.98, 95.77], [50.97, 95.75]]]}},
            "area.geometry",
            "WGS84 [longitude, latitude]",
        ),
        (
            {"category": "fire", "headline": "h", "area": {"codes": ["Stein"]}},
            "area.codes",
            "not CBS area codes",
        ),
        (
            {"category": "fire", "headline": "h", "area": SQUARE,
             "expires": "2026-11-22T20:00:00"},
            "expires",
            "timezone",
        ),
    ],
)  # fmt: skip
def test_json_errors_name_the_field(body: dict[str, Any], loc: str, msg: str) -> None:
    got_loc, got_msg = _error(body)
    assert got_loc == loc
    assert msg in got_msg


def test_json_expiry_in_the_past_is_refused() -> None:
    body = {"category": "fire", "headline": "h", "area": SQUARE, "expires": NOW.isoformat()}
    with pytest.raises(NoticeError, match=r"^expires: must be in the future"):
        json_notice(body)
    with pytest.raises(ValidationError, match=r"expires must be in the future"):
        NoticeIn.model_validate(body, context={"now": NOW})
