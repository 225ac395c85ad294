"""The ops page's pure parts: coverage, grid, simplified map answers, feed folding, reach,
delivery summaries; and its endpoints' access rules on a fakeredis registry."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.ingest import ops_map
from services.ingest.auth import key_roles
from services.ingest.ops_api import install_ops
from services.ingest.ops_feed import FeedBook, reach_summary
from services.ingest.ops_map import OpsMap, OpsMapCache, area_coverage, grid_cells, grid_step
from services.ingest.ops_watch import RoutedWatch
from services.ingest.pages import WEB_DIR, AreaLayer, AreaLayerCache
from shared.delivery_stats import minute_of, stat_channel, summarise
from shared.geo import geometry_from_geojson, parse_feature_collection, to_wkb_hex
from shared.notices import Circle, Notice, NoticeArea
from shared.registry import Registry, StoredArea, StoredGroup
from shared.schemas import AlertReceived, AlertRouted, GroupIn, Location, RouteTarget

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

BUURTEN = Path(__file__).resolve().parents[3] / "shared" / "data" / "nl_buurten_2014.geojson"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def square(lon: float, lat: float, size: float = 0.01) -> dict[str, Any]:
    """A GeoJSON square with its south-west corner at (lon, lat)."""
    return {
        "type": "Polygon",
        "coordinates": [
            [[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size], [lon, lat]]
        ],
    }


def wkb(geometry: dict[str, Any]) -> str:
    return to_wkb_hex(geometry_from_geojson(geometry))


def row_of_areas(n: int) -> list[StoredArea]:
    """n squares of 0.01 degrees side by side, eastwards from (5.7, 50.9): A0, A1, ..."""
    return [StoredArea(f"A{i}", f"Buurt {i}", wkb(square(5.7 + 0.01 * i, 50.9))) for i in range(n)]


def group(gid: str, area_ids: tuple[str, ...] = (), geometry: dict[str, Any] | None = None) -> (
    StoredGroup
):
    return StoredGroup(gid, f"Groep {gid}", area_ids, wkb(geometry) if geometry else "", 18)


# --- coverage ---------------------------------------------------------------------------------


def test_coverage_by_listed_areas_and_by_group_polygons() -> None:
    layer = AreaLayer.build(1, row_of_areas(4))
    groups = [
        group("listed", ("A0",)),
        # Covers A1 whole, half of A2, and only touches A0 along its eastern border.
        group("shape", geometry={
            "type": "Polygon",
            "coordinates": [[[5.71, 50.899], [5.725, 50.899], [5.725, 50.911],
                             [5.71, 50.911], [5.71, 50.899]]],
        }),
        StoredGroup("broken", "Kapot", (), "deadbeef", 18),  # unreadable: left out
    ]
    by_area, coverage = area_coverage(layer, groups)
    assert coverage == ["full", "full", "partial", "none"]
    assert by_area == [("listed",), ("shape",), ("shape",), ()]


def test_a_group_polygon_that_only_shares_a_border_covers_nothing() -> None:
    layer = AreaLayer.build(1, row_of_areas(2))
    _by_area, coverage = area_coverage(layer, [group("g", geometry=square(5.7, 50.9))])
    assert coverage == ["full", "none"]  # A1 touches A0's square along its west side only


# --- grid -------------------------------------------------------------------------------------


def test_grid_step_is_a_power_of_two_and_about_square_on_the_ground() -> None:
    dlon, dlat = grid_step((3.3, 50.7, 7.3, 53.6))
    assert np.log2(dlon) == int(np.log2(dlon))
    assert 4 / dlon <= 48 * 2  # about GRID_CELLS across, never twice as many
    assert dlat == pytest.approx(dlon * np.cos(np.radians(52.15)))


def test_grid_cells_count_areas_and_coverage_per_cell() -> None:
    points = np.array([[0.1, 0.1], [0.2, 0.3], [1.5, 0.1], [-0.5, 0.9]])
    cells = grid_cells(points, ["full", "partial", "none", "full"], (1.0, 1.0))
    assert cells == [[-1, 0, 1, 1, 0], [0, 0, 2, 1, 1], [1, 0, 1, 0, 0]]
    assert grid_cells(np.empty((0, 2)), [], (1.0, 1.0)) == []


# --- map answers ------------------------------------------------------------------------------


def build_map(areas: list[StoredArea], groups: list[StoredGroup]) -> OpsMap:
    return OpsMap.build(AreaLayer.build(7, areas), groups)


def test_map_answer_has_covered_flags_group_ids_and_group_outlines() -> None:
    shape = square(5.72, 50.9)
    m = build_map(row_of_areas(3), [group("g0", ("A0",)), group("own", geometry=shape)])
    data = json.loads(m.answer((5.69, 50.89, 5.75, 50.92)))
    assert data["mode"] == "areas"
    assert data["version"] == 7
    assert (data["areas_total"], data["areas_covered"], data["groups_total"]) == (3, 2, 2)
    features = data["features"]
    areas = {f["id"]: f["properties"] for f in features if f["properties"]["kind"] == "area"}
    assert areas["A0"] == {"kind": "area", "id": "A0", "name": "Buurt 0", "coverage": "full",
                           "covered": True, "groups": ["g0"]}
    assert areas["A1"]["covered"] is False
    assert areas["A1"]["groups"] == []
    assert areas["A2"]["groups"] == ["own"]
    [own] = [f for f in data["features"] if f["properties"]["kind"] == "group"]
    assert own["properties"] == {"kind": "group", "id": "own", "name": "Groep own"}
    assert data["covered_extent"] == pytest.approx([5.7, 50.9, 5.73, 50.91])


def test_map_answer_simplifies_to_the_view() -> None:
    # A circle of 400 vertices: shown whole at a national view it needs far fewer.
    ring = [[5.7 + 0.01 * np.cos(a), 50.9 + 0.01 * np.sin(a)]
            for a in np.linspace(0, 2 * np.pi, 400, endpoint=False)]
    ring.append(ring[0])
    round_area = StoredArea("R", "Rond", wkb({"type": "Polygon", "coordinates": [ring]}))
    m = build_map([round_area], [])
    near = json.loads(m.answer((5.68, 50.88, 5.72, 50.92)))
    far = json.loads(m.answer((3.3, 50.7, 7.3, 53.6)))
    n_near = len(near["features"][0]["geometry"]["coordinates"][0])
    n_far = len(far["features"][0]["geometry"]["coordinates"][0])
    assert n_far < n_near <= 401
    assert n_far <= 40


def test_a_view_with_too_many_areas_gets_a_grid_not_outlines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ops_map, "MAX_FEATURES", 3)
    m = build_map(row_of_areas(5), [group("g", ("A0", "A1"))])
    data = json.loads(m.answer((5.6, 50.8, 5.8, 51.0)))
    assert data["mode"] == "grid"
    assert data["features"] == []
    assert data["areas_in_view"] == 5
    cells = data["grid"]["cells"]
    assert sum(c[2] for c in cells) == 5
    assert sum(c[3] for c in cells) == 2


def test_names_and_centres_of_areas() -> None:
    m = build_map(row_of_areas(2), [])
    assert m.names_of(["A1", "gone"]) == ["Buurt 1", "gone"]
    centre = m.centre_of(["A0", "A1"])
    assert centre is not None
    assert centre[0] == pytest.approx(5.71, abs=1e-3)
    assert m.centre_of(["gone"]) is None


def test_whole_netherlands_is_a_small_grid_answer() -> None:
    if not BUURTEN.is_file():
        pytest.skip(f"real buurt data not found at {BUURTEN} (see ../shared/data/PROVENANCE.md)")
    features, _ = parse_feature_collection(json.loads(BUURTEN.read_bytes()))
    areas = [StoredArea(f.id, f.name, to_wkb_hex(f.geometry)) for f in features]
    stein = tuple(a.id for a in areas if a.id.startswith("BU0971"))
    m = build_map(areas, [group("stein", stein)])
    layer_extent = m.layer.extent
    assert layer_extent is not None
    nl = m.answer((layer_extent[0], layer_extent[1], layer_extent[2], layer_extent[3]))
    data = json.loads(nl)
    assert data["mode"] == "grid"
    assert data["areas_covered"] == len(stein) >= 10
    assert len(nl) < 100_000, f"the national view is {len(nl)} bytes"
    assert sum(c[3] for c in data["grid"]["cells"]) == len(stein)
    # Zoomed in on Stein (the covered extent): outlines, and its buurten covered.
    ext = data["covered_extent"]
    local = json.loads(m.answer((ext[0], ext[1], ext[2], ext[3])))
    assert local["mode"] == "areas"
    covered = {f["id"] for f in local["features"] if f["properties"]["covered"]}
    assert covered == set(stein)


# --- the feed ---------------------------------------------------------------------------------


def report(alert_id: str, text: str, at: datetime, channel: str = "web") -> AlertReceived:
    return AlertReceived.model_validate({
        "alert_id": alert_id, "kind": "report", "channel": channel, "sender_ref": "s:secret",
        "text": text, "location": Location(lat=50.96971, lon=5.76671), "called_112": True,
        "received_at": at,
    })


def routed(alert: AlertReceived, at: datetime, **extra: Any) -> AlertRouted:
    return AlertRouted.model_validate({
        "alert": alert, "area_ids": ["BU1"], "routed_at": at,
        "targets": [RouteTarget(group_id="g1"), RouteTarget(group_id="g2", relation="adjacent")],
        **extra,
    })


def notice_alert(alert_id: str, at: datetime, msg_type: str = "Alert") -> AlertReceived:
    notice = Notice.model_validate({
        "notice_id": alert_id, "sender": "dispatch:abc", "sent": at,
        "category": "missing_person", "headline": "Vermist: man van 80",
        "text": "Draagt een blauwe jas",
        "areas": [NoticeArea(circle=Circle(lat=50.97, lon=5.77, radius_m=300))],
        "raw_format": "json", "msg_type": msg_type,
        "references": ["n0"] if msg_type != "Alert" else [],
    })
    return AlertReceived(
        alert_id=alert_id, kind="notice", channel="dispatch", sender_ref="dispatch:abc",
        text="Vermist: man van 80", received_at=at, notice=notice,
    )


def test_reports_of_one_incident_are_one_item_without_their_texts() -> None:
    book = FeedBook()
    text = "Brand in de schuur achter huisnummer 12, bel 0612345678"
    first = routed(report("r1", text, T0), T0, incident_id="inc1", incident_count=1)
    book.add(first)
    book.add(first)  # a redelivery counts once
    later = T0 + timedelta(minutes=2)
    book.add(routed(report("r2", "Rook", later, "sms"), later, incident_id="inc1",
                    incident_count=2, merged=True, targets=[]))
    [item] = book.items(10)
    data = item.as_json()
    assert data["type"] == "incident"
    assert data["id"] == "incident:inc1"
    assert data["reports"] == 2
    assert data["channels"] == {"web": 1, "sms": 1}
    assert data["topic"] == "fire"
    assert data["groups"] == ["g1", "g2"]
    assert data["adjacent_groups"] == 1
    assert data["alert_ids"] == ["r1", "r2"]
    assert data["point"] == [5.767, 50.97]  # about 100 m, not the door
    assert data["last_at"] == later.isoformat()
    dumped = json.dumps(data)
    for secret in ("schuur", "0612345678", "Rook", "s:secret"):
        assert secret not in dumped


def test_held_report_then_released() -> None:
    book = FeedBook()
    alert = report("r1", "Kijk uit", T0)
    book.add(routed(alert, T0, held_reason="chatter", targets=[]))
    assert book.items(1)[0].held == 1
    book.add(routed(alert.model_copy(update={"released": True}), T0 + timedelta(seconds=5)))
    [item] = book.items(1)
    assert (item.held, item.reports) == (0, 1)


def test_notices_are_items_of_their_own_with_an_outline_and_no_text() -> None:
    book = FeedBook()
    book.add(routed(notice_alert("n0", T0), T0))
    later = T0 + timedelta(minutes=1)
    book.add(routed(notice_alert("n1", later, "Update"), later))
    book.add(routed(report("r1", "Inbraak", T0 - timedelta(minutes=1)), T0 - timedelta(minutes=1)))
    items = [i.as_json() for i in book.items(10)]
    assert [i["id"] for i in items] == ["n1", "n0", "r1"]
    update = items[0]
    assert update["notice"]["msg_type"] == "Update"
    assert update["notice"]["references"] == ["n0"]
    assert update["notice"]["category"] == "missing_person"
    assert update["outline"]["type"] == "Polygon"
    assert 5.76 < update["point"][0] < 5.78
    assert len(update["outline"]["coordinates"][0]) <= 30
    dumped = json.dumps(items)
    assert "Vermist" not in dumped
    assert "blauwe jas" not in dumped


def test_book_keeps_the_most_recently_active_items() -> None:
    book = FeedBook(max_items=3)
    for i in range(5):
        at = T0 + timedelta(seconds=i)
        book.add(routed(report(f"r{i}", "x", at), at))
    assert [i.key for i in book.items(10)] == ["r4", "r3", "r2"]
    assert len(book) == 3


def test_reach_summary() -> None:
    assert reach_summary([{}, {}]) is None
    summary = reach_summary([
        {"planned": 3, "delivered": 2, "failed_permanent": 1},
        {"planned": 2, "delivered": 1},
        {"merged": 1},
    ])
    assert summary == {
        "planned": 5, "reached": 3, "failed": 1, "pending": 1,
        "outcomes": {"delivered": 3, "failed_permanent": 1, "merged": 1},
    }
    assert reach_summary([{"no_recipients": 1}]) == {
        "planned": 0, "reached": 0, "failed": 0, "pending": 0, "outcomes": {"no_recipients": 1},
    }


# --- delivery stats ---------------------------------------------------------------------------


def test_summarise_delivery_buckets() -> None:
    buckets: list[dict[str, Any]] = [{} for _ in range(10)]
    buckets[0] = {"sms|delivered": "4", "sms|failed_transient": "1", "bogus": "3"}
    buckets[9] = {"sms|delivered": "5", "telegram|unconfirmed": "1", "none|held": "2",
                  "email|delivered": "0"}
    totals = {"sms|delivered": "100", "sms|undelivered": "2", "email|delivered": "-1"}
    out = summarise(buckets, first_minute=1000, totals=totals, recent_minutes=5)
    assert [c["channel"] for c in out["channels"]] == ["sms", "telegram"]
    sms, telegram = out["channels"]
    assert sms["window"] == {"delivered": 9, "failed_transient": 1}
    assert (sms["delivered"], sms["failed"], sms["failure_rate"]) == (9, 1, 0.1)
    assert sms["per_minute"]["delivered"] == [4, 0, 0, 0, 0, 0, 0, 0, 0, 5]
    assert sms["per_minute"]["failed"][0] == 1
    assert sms["recent_per_minute"] == 1.0  # 5 in the last 5 minutes
    assert sms["totals"] == {"delivered": 100, "undelivered": 2}
    assert telegram["failure_rate"] is None
    assert telegram["per_minute"]["other"][9] == 1
    assert out["no_recipient"] == {"held": 2}
    assert (out["minutes"], out["first_minute"]) == (10, 1000)


def test_stat_keys() -> None:
    assert minute_of(119.9) == 1
    assert stat_channel("outbox", "-") == "none"
    assert stat_channel("sms", "sms:abc") == "sms"


# --- the endpoints ----------------------------------------------------------------------------


class BookOnly(RoutedWatch):
    """A watch whose book is filled by the test (no NATS)."""

    def __init__(self, book: FeedBook) -> None:
        super().__init__(["nats://127.0.0.1:1"], "ALERTS", 60, 60)
        self.book_ = book

    async def book(self) -> FeedBook:
        return self.book_


ADMIN = {"Authorization": "Bearer admin-key-0123456789"}
DISPATCH = {"Authorization": "Bearer dispatch-key-0123456789"}


@pytest.fixture
def ops_client() -> Any:
    redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    registry = Registry(redis)

    async def fill() -> None:
        await registry.upsert_areas(row_of_areas(2))
        await registry.put_group(GroupIn(id="g1", name="G1", area_ids=["A0"]))
        await redis.hset("ba:reach:r1", mapping={"planned": 3, "delivered": 2})

    asyncio.run(fill())
    book = FeedBook()
    book.add(routed(report("r1", "Inbraak bij de buren", T0), T0))
    app = FastAPI()
    keys = key_roles(["admin-key-0123456789"], ["dispatch-key-0123456789"])
    install_ops(app, redis=redis, maps=OpsMapCache(AreaLayerCache(registry), registry),
                watch=BookOnly(book), keys=keys)
    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize("path", ["/v1/ops/map", "/v1/ops/feed", "/v1/ops/delivery"])
def test_ops_data_needs_an_admin_key(ops_client: TestClient, path: str) -> None:
    assert ops_client.get(path).status_code == 401
    assert ops_client.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert ops_client.get(path, headers=DISPATCH).status_code == 403
    resp = ops_client.get(path, headers=ADMIN)
    assert resp.status_code == 200
    assert resp.headers["cache-control"] == "no-store"


def test_ops_endpoints_answer(ops_client: TestClient) -> None:
    data = ops_client.get("/v1/ops/map", headers=ADMIN).json()
    assert {f["id"]: f["properties"]["covered"] for f in data["features"]} == {
        "A0": True, "A1": False}
    assert ops_client.get("/v1/ops/map?bbox=1,2,3", headers=ADMIN).status_code == 422
    feed = ops_client.get("/v1/ops/feed", headers=ADMIN).json()
    [item] = feed["items"]
    assert item["reach"]["reached"] == 2
    assert item["reach"]["planned"] == 3
    assert item["area_names"] == ["BU1"]  # not in this registry: the id stands in
    assert "Inbraak bij" not in json.dumps(feed)
    delivery = ops_client.get("/v1/ops/delivery?minutes=5", headers=ADMIN).json()
    assert delivery["minutes"] == 5
    assert delivery["channels"] == []


def test_ops_page_is_served_with_strict_headers(ops_client: TestClient) -> None:
    resp = ops_client.get("/ops")
    assert resp.status_code == 200
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    html = resp.text
    assert '<html lang="nl">' in html
    assert "<script>" not in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html
    for ref in ("/static/ops.js", "/static/ops-geo.js", "/static/ops.css"):
        assert ref in html
        assert (WEB_DIR / ref.removeprefix("/static/")).is_file()


def test_ops_files_name_no_other_origin_and_no_emoji() -> None:
    for name in ("ops.html", "ops.js", "ops-geo.js", "ops.css"):
        text = (WEB_DIR / name).read_text(encoding="utf-8")
        assert not [c for c in text if ord(c) >= 0x2190], name
        assert "https://" not in text, name
        assert "eval(" not in text, name
