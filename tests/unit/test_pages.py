"""The resident page, its static files and the areas.geojson endpoint, on a fakeredis registry."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.ingest.pages import (
    MAX_FEATURES,
    WEB_DIR,
    AreaLayerCache,
    BBoxError,
    install_pages,
    parse_bbox,
    simplify_tolerance,
)
from shared.geo import geometry_from_geojson, to_wkb_hex
from shared.registry import Registry, StoredArea

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


def square(lon: float, lat: float, size: float = 0.01) -> dict[str, Any]:
    """A GeoJSON square with its south-west corner at (lon, lat)."""
    return {
        "type": "Polygon",
        "coordinates": [
            [[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size], [lon, lat]]
        ],
    }


def area(area_id: str, name: str, lon: float, lat: float, size: float = 0.01) -> StoredArea:
    """A stored square area."""
    return StoredArea(area_id, name, to_wkb_hex(geometry_from_geojson(square(lon, lat, size))))


def make_client(areas: list[StoredArea]) -> tuple[TestClient, Registry]:
    """A tiny app with only the pages installed, over a fakeredis registry holding areas."""
    registry = Registry(fakeredis.FakeAsyncRedis(decode_responses=True))
    if areas:
        asyncio.run(registry.upsert_areas(areas))
    app = FastAPI()
    install_pages(app, registry)
    return TestClient(app), registry


@pytest.fixture
def client() -> Iterator[TestClient]:
    c, _ = make_client(
        [
            area("BU1", "Centrum", 5.76, 50.965),
            area("BU2", "Oost", 5.775, 50.965),
            area("BU3", "Ver weg", 6.5, 53.0),
        ]
    )
    with c:
        yield c


# --- the page and its files ------------------------------------------------------------------


def test_page_is_dutch_html_with_strict_security_headers(client: TestClient) -> None:
    resp = client.get("/")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    csp = resp.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"  # no 'unsafe-inline', no CDN
    assert "unsafe" not in csp
    assert directives["frame-ancestors"] == "'none'"
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["referrer-policy"] == "no-referrer"
    html = resp.text
    assert '<html lang="nl">' in html
    assert "Direct gevaar? Bel eerst 112." in html
    assert "Is 112 al gebeld?" in html
    assert "Gebruik mijn locatie" in html
    assert 'name="viewport"' in html
    # No inline script and nothing from another origin.
    assert "<script>" not in html
    assert "http://" not in html
    assert "https://" not in html


def test_head_of_page_is_answered(client: TestClient) -> None:
    assert client.head("/").status_code == 200


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/static/app.js", "javascript"),
        ("/static/style.css", "text/css"),
        ("/static/vendor/leaflet/leaflet.js", "javascript"),
        ("/static/vendor/leaflet/leaflet.css", "text/css"),
        ("/static/vendor/leaflet/images/marker-icon.png", "image/png"),
        ("/static/favicon.svg", "image/svg+xml"),
    ],
)
def test_static_files_are_served_with_headers(client: TestClient, path: str, kind: str) -> None:
    resp = client.get(path)
    assert resp.status_code == 200, path
    assert kind in resp.headers["content-type"]
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["cache-control"] == "no-cache"
    again = client.get(path, headers={"If-None-Match": resp.headers["etag"]})
    assert again.status_code == 304


def test_static_404_and_no_escape(client: TestClient) -> None:
    assert client.get("/static/nope.js").status_code == 404
    assert client.get("/static/../pages.py").status_code == 404


def test_every_file_the_page_names_exists() -> None:
    html = (WEB_DIR / "index.html").read_text(encoding="utf-8")
    for ref in ("/static/app.js", "/static/style.css", "/static/vendor/leaflet/leaflet.js",
                "/static/vendor/leaflet/leaflet.css", "/static/favicon.svg"):
        assert ref in html
        assert (WEB_DIR / ref.removeprefix("/static/")).is_file(), ref
    assert (WEB_DIR / "vendor" / "leaflet" / "LICENSE").is_file()


def test_page_texts_have_no_emoji() -> None:
    for name in ("index.html", "app.js", "style.css"):
        text = (WEB_DIR / name).read_text(encoding="utf-8")
        assert not [c for c in text if ord(c) >= 0x2190], name  # arrows, symbols, emoji


# --- areas.geojson ---------------------------------------------------------------------------


def test_bbox_returns_only_intersecting_areas(client: TestClient) -> None:
    resp = client.get("/v1/areas.geojson", params={"bbox": "5.70,50.90,5.80,51.00"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/geo+json")
    doc = resp.json()
    assert doc["type"] == "FeatureCollection"
    assert [f["properties"] for f in doc["features"]] == [
        {"id": "BU1", "name": "Centrum"},
        {"id": "BU2", "name": "Oost"},
    ]
    assert all(f["type"] == "Feature" and f["geometry"]["type"] == "Polygon"
               for f in doc["features"])
    assert doc["areas_total"] == 3
    assert doc["areas_extent"] == [5.76, 50.965, 6.51, 53.01]

    only_far = client.get("/v1/areas.geojson", params={"bbox": "6.4,52.9,6.6,53.1"}).json()
    assert [f["id"] for f in only_far["features"]] == ["BU3"]
    nothing = client.get("/v1/areas.geojson", params={"bbox": "4,51,4.1,51.1"}).json()
    assert nothing["features"] == []
    assert nothing["areas_total"] == 3


def test_bbox_touching_an_edge_counts(client: TestClient) -> None:
    doc = client.get("/v1/areas.geojson", params={"bbox": "5.77,50.97,5.775,50.971"}).json()
    assert [f["id"] for f in doc["features"]] == ["BU1", "BU2"]


@pytest.mark.parametrize(
    ("bbox", "needle"),
    [
        ("5,50,6", "four comma-separated numbers"),
        ("5,50,6,51,7", "four comma-separated numbers"),
        ("a,b,c,d", "numbers only"),
        ("5,50,nan,51", "finite"),
        ("5,50,inf,51", "finite"),
        ("5,95,6,96", "latitudes"),
        ("-200,50,6,51", "longitudes"),
        ("6,50,5,51", "minimum must not exceed"),
        ("", "four comma-separated numbers"),
    ],
)
def test_bad_bbox_is_422_with_detail(client: TestClient, bbox: str, needle: str) -> None:
    resp = client.get("/v1/areas.geojson", params={"bbox": bbox})
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert isinstance(detail, str)
    assert needle in detail


def test_missing_bbox_is_422(client: TestClient) -> None:
    resp = client.get("/v1/areas.geojson")
    assert resp.status_code == 422
    assert "detail" in resp.json()


def test_too_many_areas_is_422_asking_to_zoom_in() -> None:
    # A grid of MAX_FEATURES + 1 tiny squares.
    side = 50
    areas = [
        area(f"A{i}", f"Area {i}", 5 + (i % side) * 0.001, 51 + (i // side) * 0.001, 0.001)
        for i in range(MAX_FEATURES + 1)
    ]
    c, _ = make_client(areas)
    with c:
        resp = c.get("/v1/areas.geojson", params={"bbox": "4,50,6,53"})
        assert resp.status_code == 422
        assert "zoom in" in resp.json()["detail"]
        assert str(MAX_FEATURES) in resp.json()["detail"]
        small = c.get("/v1/areas.geojson", params={"bbox": "5,51,5.0105,51.0005"})
        assert small.status_code == 200
        assert 0 < len(small.json()["features"]) <= MAX_FEATURES


def test_empty_registry_answers_an_empty_collection() -> None:
    c, _ = make_client([])
    with c:
        doc = c.get("/v1/areas.geojson", params={"bbox": "3,50,8,54"}).json()
    assert doc["features"] == []
    assert doc["areas_total"] == 0
    assert doc["areas_extent"] is None


def test_geometry_is_simplified_for_a_wide_view() -> None:
    # A circle-like polygon with 720 vertices: a view of the whole country needs far fewer.
    circle = geometry_from_geojson(
        {"type": "Polygon", "coordinates": [list(_circle(5.5, 52.0, 0.05, 720))]}
    )
    c, _ = make_client([StoredArea("RING", "Rond", to_wkb_hex(circle))])
    with c:
        wide = c.get("/v1/areas.geojson", params={"bbox": "3,50,8,54"}).json()
        close = c.get("/v1/areas.geojson", params={"bbox": "5.4,51.9,5.6,52.1"}).json()
        street = c.get("/v1/areas.geojson", params={"bbox": "5.549,51.999,5.551,52.001"}).json()
    wide_n, close_n, street_n = (
        len(doc["features"][0]["geometry"]["coordinates"][0]) for doc in (wide, close, street)
    )
    assert wide_n < close_n < street_n
    assert wide_n < 40
    assert all(len(str(x).split(".")[-1]) <= 6
               for x in close["features"][0]["geometry"]["coordinates"][0][0])


def test_names_are_json_escaped() -> None:
    c, _ = make_client([area("X1", 'De "Hoek" <b>&amp;</b>', 5.0, 51.0)])
    with c:
        doc = c.get("/v1/areas.geojson", params={"bbox": "4.9,50.9,5.1,51.1"}).json()
    assert doc["features"][0]["properties"]["name"] == 'De "Hoek" <b>&amp;</b>'


def test_bad_stored_geometry_is_left_out() -> None:
    c, _ = make_client([area("OK", "Goed", 5.0, 51.0), StoredArea("BAD", "Kapot", "zz00"),
                        StoredArea("NONE", "Leeg", "")])
    with c:
        doc = c.get("/v1/areas.geojson", params={"bbox": "4,50,6,52"}).json()
    assert [f["id"] for f in doc["features"]] == ["OK"]


# --- the cache -------------------------------------------------------------------------------


async def test_cache_follows_the_registry_version() -> None:
    registry = Registry(fakeredis.FakeAsyncRedis(decode_responses=True))
    cache = AreaLayerCache(registry)
    first = await cache.get()
    assert first.ids == ()
    assert await cache.get() is first  # same version: no rebuild, no scan of Redis
    await registry.upsert_areas([area("BU1", "Centrum", 5.76, 50.965)])
    second = await cache.get()
    assert second is not first
    assert second.ids == ("BU1",)
    assert second.query((5.7, 50.9, 5.8, 51.0)) == [0]


async def test_cache_does_not_rescan_redis_when_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = Registry(fakeredis.FakeAsyncRedis(decode_responses=True))
    await registry.upsert_areas([area("BU1", "Centrum", 5.76, 50.965)])
    cache = AreaLayerCache(registry)
    await cache.get()
    calls = 0
    real = registry.all_areas

    async def counting() -> list[StoredArea]:
        nonlocal calls
        calls += 1
        return await real()

    monkeypatch.setattr(registry, "all_areas", counting)
    for _ in range(5):
        await cache.get()
    assert calls == 0


# --- pure helpers ----------------------------------------------------------------------------


def test_parse_bbox_accepts_spaces_and_a_point() -> None:
    assert parse_bbox(" 5.1, 50.2 ,5.3,50.4") == (5.1, 50.2, 5.3, 50.4)
    assert parse_bbox("5,50,5,50") == (5.0, 50.0, 5.0, 50.0)
    with pytest.raises(BBoxError):
        parse_bbox("5;50;6;51")


def test_tolerance_grows_with_the_view() -> None:
    assert simplify_tolerance((5, 50, 5.01, 50.01)) < simplify_tolerance((3, 50, 8, 54))
    assert simplify_tolerance((3, 50, 8, 54)) <= 5 / 1000
    assert simplify_tolerance((5, 50, 5, 50)) > 0


def _circle(lon: float, lat: float, r: float, n: int) -> Iterator[list[float]]:
    for i in range(n):
        t = 2 * math.pi * i / n
        yield [lon + r * math.cos(t), lat + r * math.sin(t)]
    yield [lon + r, lat]
