"""The resident page in real headless Chromium, against the real system (NATS, Redis, services).

Chromium is Debian's (`scripts/ensure-browser.sh` installs it), driven by the playwright
package; playwright never downloads a browser here. Every request the page makes is checked to
stay on the edge's own origin: no CDN, no tile server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.integration.test_end_to_end import outbox, wait_for
from tests.servers import System

if TYPE_CHECKING:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        FloatRect,
        Geolocation,
        Page,
        Route,
        ViewportSize,
    )

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

CHROMIUM = Path(os.environ.get("BUURTALERT_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE: ViewportSize = {"width": 390, "height": 844}
TIMEOUT_MS = 15_000

# Two buurten of about 1 km side by side in Stein (Limburg); the group covers "Centrum".
CENTRUM = [[5.76, 50.965], [5.775, 50.965], [5.775, 50.975], [5.76, 50.975], [5.76, 50.965]]
OOST = [[5.775, 50.965], [5.79, 50.965], [5.79, 50.975], [5.775, 50.975], [5.775, 50.965]]
#: Where "Gebruik mijn locatie" says the phone is: inside Centrum.
PHONE_AT: Geolocation = {"latitude": 50.9697, "longitude": 5.7667, "accuracy": 20}


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by playwright; skip when either is missing."""
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="the playwright package is not installed (pip install -e '.[dev]')",
    )
    if not CHROMIUM.exists():
        reason = (
            f"no Chromium at {CHROMIUM}: run scripts/ensure-browser.sh as root "
            "(apt-get install chromium), or set BUURTALERT_CHROMIUM"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI installs it (make test runs ensure-browser): a miss is a bug
        pytest.skip(reason)
    with sync_api.sync_playwright() as pw:
        launched: Browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


class PageWatch:
    """What a page did: its requests to other origins, console errors, report POSTs."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.foreign: list[str] = []
        self.errors: list[str] = []
        self.report_posts: list[dict[str, Any]] = []

    def attach(self, context: BrowserContext, page: Page) -> None:
        """Block and record every request that leaves the edge's origin; record errors."""

        def route(r: Route) -> None:
            url = r.request.url
            if url.startswith(self.origin + "/"):
                if url.endswith("/v1/reports") and r.request.method == "POST":
                    self.report_posts.append(
                        {"headers": r.request.headers, "body": r.request.post_data_json}
                    )
                r.continue_()
            else:
                self.foreign.append(url)
                r.abort()

        context.route("**/*", route)
        page.on(
            "console",
            lambda m: self.errors.append(m.text) if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: self.errors.append(str(e)))


def new_phone(browser: Browser, origin: str) -> tuple[BrowserContext, Page, PageWatch]:
    """A phone-sized context with a granted, fake geolocation."""
    context = browser.new_context(
        viewport=PHONE,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        locale="nl-NL",
        geolocation=PHONE_AT,
        permissions=["geolocation"],
        service_workers="block",
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    watch = PageWatch(origin)
    watch.attach(context, page)
    return context, page, watch


def import_areas(system: System, tmp_path: Path) -> None:
    """Load the two buurten with the real import command."""
    collection = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"BU_CODE": code, "BU_NAAM": name},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
            for code, name, ring in [
                ("BU09710001", "Centrum", CENTRUM),
                ("BU09710002", "Oost", OOST),
            ]
        ],
    }
    path = tmp_path / "buurten.geojson"
    path.write_text(json.dumps(collection))
    done = subprocess.run(
        [sys.executable, "-m", "buurtalert", "areas", "import", str(path), "--no-progress",
         "--redis-url", system.redis_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def wait_for_status(page: Page, text: str) -> None:
    """Wait until the place status shows text (a locator: the page's CSP forbids eval)."""
    page.locator("#plek-status", has_text=text).wait_for()


def tap_area(page: Page, index: int) -> None:
    """Tap the middle of the index-th drawn area polygon (left to right), once they stand still."""
    paths = page.locator("#kaart path.leaflet-interactive")
    boxes: list[FloatRect] = []
    for _ in range(50):
        now = sorted(
            (b for b in (paths.nth(i).bounding_box() for i in range(paths.count())) if b),
            key=lambda b: b["x"],
        )
        if now and now == boxes:
            break
        boxes = now
        page.wait_for_timeout(100)
    box = boxes[index]
    page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def test_resident_reports_from_the_page_on_a_phone(
    system: System, tmp_path: Path, browser: Browser
) -> None:
    import_areas(system, tmp_path)
    system.start_all()
    origin = system.url("ingest")
    with system.client() as client:
        admin = system.admin_headers()
        created = client.post(
            "/v1/groups",
            headers=admin,
            json={"id": "stein-centrum", "name": "Stein centrum", "area_ids": ["BU09710001"]},
        )
        assert created.status_code == 201, created.text
        member = client.post(
            "/v1/groups/stein-centrum/members",
            headers=admin,
            json={"channel": "sms", "address": "06 12345678"},
        )
        assert member.status_code == 201, member.text
        member_id = member.json()["member_id"]

        page_resp = client.get("/")
        assert page_resp.status_code == 200, (
            "GET / is not served: install_pages() must be wired into services/ingest/app.py"
        )

        context, page, watch = new_phone(browser, origin)
        try:
            page.goto(origin + "/")
            saar = page.locator("#saar")
            assert saar.is_visible()
            assert "Direct gevaar? Bel eerst 112." in saar.inner_text()

            # The page starts on the registry's areas and draws both polygons, no tiles.
            areas = page.locator("#kaart path.leaflet-interactive")
            areas.nth(1).wait_for()
            assert areas.count() == 2
            assert page.locator("#kaart img.leaflet-tile").count() == 0

            # Tap inside the group's buurt: the place is chosen and named.
            tap_area(page, 0)
            status = page.locator("#plek-status")
            wait_for_status(page, "Plek gekozen in Centrum.")
            assert "Plek gekozen in Centrum." in status.inner_text()
            assert page.locator("#kaart .leaflet-marker-icon").count() == 1

            text = "Twee mannen proberen de achterdeur van nummer 12 te openen."
            page.fill("#tekst", text)
            assert "van 2000 tekens" in page.inner_text("#tekst-teller")

            # No 112 choice: the page refuses to send, in Dutch, and nothing is posted.
            page.click("#versturen")
            fout = page.locator("#fout-112")
            fout.wait_for(state="visible")
            assert fout.inner_text() == "Geef aan of 112 al is gebeld."
            assert "De melding is nog niet verstuurd" in page.inner_text("#verstuurfout")
            assert watch.report_posts == []

            page.click("label[for=gebeld-nee]")
            assert fout.is_hidden()
            assert "Bel dan nu eerst" in page.inner_text("#advies-nee")

            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "web-page.png"), full_page=True)

            # A double tap on send is one report: the button locks, and the key is the same.
            with page.expect_response(lambda r: r.url.endswith("/v1/reports")) as answer:
                page.dblclick("#versturen")
            assert answer.value.status == 202
            alert_id = answer.value.json()["alert_id"]

            heading = page.locator("#bevestiging-kop")
            heading.wait_for(state="visible")
            assert heading.inner_text() == "Melding verstuurd"
            advice = page.inner_text("#advies-112")
            assert advice.startswith("Bel 112 als er direct gevaar is.")
            assert page.locator("#meldformulier").is_hidden()
            assert answer.value.json()["covered"] is True
            assert page.locator("#buiten-gebied").is_hidden()  # a group covers this place
            page.screenshot(path=str(ARTIFACTS / "web-page-confirmation.png"), full_page=True)

            assert len(watch.report_posts) == 1
            sent = watch.report_posts[0]
            assert sent["body"]["called_112"] is False
            assert sent["body"]["text"] == text
            assert len(sent["headers"].get("idempotency-key", "")) >= 16

            entries = wait_for(
                lambda: outbox(client, system),
                lambda es: any(e["alert_id"] == alert_id for e in es),
            )
            mine = [e for e in entries if e["alert_id"] == alert_id]
            assert len(mine) == 1
            assert mine[0]["member_id"] == member_id
            assert "112 is nog niet gebeld" in mine[0]["text"]

            # A second report with "Gebruik mijn locatie" (fake GPS inside Centrum) and "Ja".
            page.click("#nieuwe-melding")
            assert page.locator("#meldformulier").is_visible()
            assert page.inner_text("#plek-status") == "Nog geen plek gekozen."
            page.click("#mijn-locatie")
            wait_for_status(page, "Plek gekozen in Centrum.")
            assert "Breedte 50.96970, lengte 5.76670" in status.inner_text()
            page.click("label[for=gebeld-ja]")
            assert page.locator("#advies-nee").is_hidden()
            page.fill("#tekst", "Rook uit het dak van de kerk, brandweer is gebeld.")
            with page.expect_response(lambda r: r.url.endswith("/v1/reports")) as second:
                page.click("#versturen")
            assert second.value.status == 202
            second_id = second.value.json()["alert_id"]
            assert second_id != alert_id  # a new form fill is a new key
            page.locator("#bevestiging-kop").wait_for(state="visible")
            assert "112 al is gebeld" in page.inner_text("#advies-112")
            assert watch.report_posts[1]["headers"]["idempotency-key"] != (
                watch.report_posts[0]["headers"]["idempotency-key"]
            )
            entries = wait_for(
                lambda: outbox(client, system),
                lambda es: any(e["alert_id"] == second_id for e in es),
            )
            [again] = [e for e in entries if e["alert_id"] == second_id]
            assert "112 is gebeld." in again["text"]
            assert [e["alert_id"] for e in entries].count(alert_id) == 1

            assert watch.foreign == [], "the page loaded something from another origin"
            assert watch.errors == [], "console errors (a CSP violation shows up here)"
        finally:
            context.close()


def test_page_without_areas_still_takes_a_place_and_explains(
    system: System, browser: Browser
) -> None:
    system.start("ingest")
    origin = system.url("ingest")
    context, page, watch = new_phone(browser, origin)
    try:
        page.goto(origin + "/")
        notitie = page.locator("#kaart-notitie")
        notitie.wait_for(state="visible")
        assert "nog geen buurtgrenzen" in notitie.inner_text()
        assert page.locator("#kaart path.leaflet-interactive").count() == 0
        box = page.locator("#kaart").bounding_box()
        assert box is not None
        assert box["width"] <= PHONE["width"]
        page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        wait_for_status(page, "Plek gekozen.")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web-page-empty.png"))
        # The NL view: the middle of the map lies in the Netherlands.
        found = re.search(
            r"Breedte (-?\d+\.\d+), lengte (-?\d+\.\d+)", page.inner_text("#plek-status")
        )
        assert found is not None
        lat, lon = float(found[1]), float(found[2])
        assert 50.7 < lat < 53.6
        assert 3.3 < lon < 7.3
        # Nothing wider than the phone: no sideways scrolling at 390 px (nor at 360 px).
        for width in (390, 360):
            page.set_viewport_size({"width": width, "height": 800})
            scroll_width = page.evaluate("document.documentElement.scrollWidth")
            assert scroll_width <= width, f"page is {scroll_width}px wide at {width}px"
        assert watch.foreign == []
        assert watch.errors == []
    finally:
        context.close()

    # Should Leaflet fail to load, the form still takes a place from "Gebruik mijn locatie".
    context, page, watch = new_phone(browser, origin)
    try:
        page.route("**/vendor/leaflet/leaflet.js", lambda r: r.abort())
        page.goto(origin + "/")
        notitie = page.locator("#kaart-notitie")
        notitie.wait_for(state="visible")
        assert "De kaart kon niet worden geladen" in notitie.inner_text()
        assert page.locator("#kaart").is_hidden()
        page.click("#mijn-locatie")
        wait_for_status(page, "Plek gekozen.")
        assert "Breedte 50.96970, lengte 5.76670" in page.inner_text("#plek-status")
        # The blocked file is the only complaint: no script error follows from it.
        assert [e for e in watch.errors if "Failed to load resource" not in e] == []
    finally:
        context.close()
