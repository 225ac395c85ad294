"""The ops page in real headless Chromium, against the real system and provider stubs.

Debian's Chromium driven by playwright (see test_web_page_chromium). Real CBS buurten of Stein
from ../shared/data when present (two synthetic squares otherwise). The page must ask for an
admin key, refuse a dispatch key, draw the area polygons itself (no tile server, nothing from
another origin), mark the covered ones, show a notice posted after it opened with its reach,
and chart the delivery failure per channel. The screenshot lands in test-artifacts/.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import shapely
from shapely.geometry import Point, shape

from tests.integration.test_ops_endpoints import (
    IN_CENTRUM,
    add_group_with_members,
    import_features,
    post_notice,
    stubs,
    synthetic_buurten,
    wire,
)
from tests.integration.test_web_page_chromium import (
    ARTIFACTS,
    TIMEOUT_MS,
    PageWatch,
    browser,
)
from tests.providers import ProviderStubs
from tests.servers import System

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

__all__ = ["browser", "stubs"]  # fixtures, imported for pytest

BUURTEN = Path(__file__).resolve().parents[3] / "shared" / "data" / "nl_buurten_2014.geojson"
DESKTOP = {"width": 1400, "height": 950}


def stein_buurten() -> list[dict[str, Any]]:
    """The real buurten of Stein (GM0971) when the data is there, else two synthetic squares."""
    if not BUURTEN.is_file():
        return synthetic_buurten()
    doc = json.loads(BUURTEN.read_bytes())
    return [f for f in doc["features"] if f["properties"].get("gemeente_code") == "GM0971"]


def area_ids_at(features: list[dict[str, Any]], lat: float, lon: float) -> list[str]:
    """Ids of the features containing a point (CBS ids in `id` or `BU_CODE`)."""
    here = Point(lon, lat)
    found = []
    for f in features:
        geom = shapely.make_valid(shape(f["geometry"]))
        if geom.contains(here):
            props = f["properties"]
            found.append(str(props.get("id") or props.get("BU_CODE")))
    return found


def open_page(browser: Browser, origin: str) -> tuple[BrowserContext, Page, PageWatch]:
    context = browser.new_context(
        viewport=DESKTOP,  # type: ignore[arg-type]
        locale="nl-NL",
        service_workers="block",
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    watch = PageWatch(origin)
    watch.attach(context, page)
    return context, page, watch


def enter_key(page: Page, key: str) -> None:
    page.locator("#sleutel-scherm").wait_for(state="visible")
    page.fill("#sleutel", key)
    page.click("#sleutel-openen")


def test_ops_page_draws_coverage_and_shows_a_notice_with_its_reach(
    system: System, stubs: ProviderStubs, tmp_path: Path, browser: Browser
) -> None:
    features = stein_buurten()
    covered = area_ids_at(features, IN_CENTRUM["lat"], IN_CENTRUM["lon"])
    assert covered, "the notice's place must lie in one of the buurten"
    import_features(system, tmp_path, features)
    wire(system, stubs)
    system.start_all()
    origin = system.url("ingest")
    with system.client() as client:
        add_group_with_members(client, system, covered)
        context, page, watch = open_page(browser, origin)
        try:
            page.goto(origin + "/ops")
            assert page.locator("#ops").is_hidden()  # nothing before a key

            # A dispatch key is refused (403), in Dutch, and the key is not kept.
            enter_key(page, system.dispatch_key)
            fout = page.locator("#sleutel-fout")
            fout.wait_for(state="visible")
            assert "geen beheersleutel" in fout.inner_text()
            assert page.evaluate("sessionStorage.getItem('buurtalert.ops.key')") is None
            # The refused requests are the browser's only complaint so far.
            assert all("403" in e for e in watch.errors), watch.errors
            watch.errors.clear()

            enter_key(page, system.admin_key)
            areas = page.locator("#laag-gebieden path.gebied")
            areas.first.wait_for()
            # The first view is the covered buurten, with their neighbours around them.
            page.wait_for_function(
                "n => document.querySelectorAll('#laag-gebieden path.gebied.gedekt').length >= n"
                " && document.querySelectorAll('#laag-gebieden path.gebied.niet').length > 0",
                arg=len(covered),
            )
            drawn = areas.count()
            assert 0 < drawn <= len(features)
            gedekt = page.locator("#laag-gebieden path.gebied.gedekt")
            assert gedekt.count() == len(covered)
            assert sorted(
                gedekt.nth(i).get_attribute("data-id") or "" for i in range(gedekt.count())
            ) == sorted(covered)
            assert page.locator("#laag-gebieden path[data-covered=ja]").count() == len(covered)
            assert page.locator("#laag-gebieden path.gebied.niet").count() == drawn - len(covered)
            summary = page.inner_text("#dekking-samenvatting")
            assert f"{len(covered)} van {len(features)} buurten gedekt" in summary
            assert "1 groep" in summary

            # The polygons lie inside the map, drawn by the page's own projection.
            svg_box = page.locator("#kaart-svg").bounding_box()
            first = page.locator(f"#laag-gebieden path[data-id='{covered[0]}']").bounding_box()
            assert svg_box is not None
            assert first is not None
            assert first["width"] > 5
            assert first["height"] > 5
            assert svg_box["x"] - 1 <= first["x"]
            assert first["x"] + first["width"] <= svg_box["x"] + svg_box["width"] + 1
            projected = page.evaluate(
                "() => buurtOpsGeo.project(5.0, 52.0, buurtOpsGeo.scaleFor(52.0))"
            )
            assert projected == pytest.approx([5.0 * math.cos(math.radians(52.0)), -52.0])
            back = page.evaluate(
                "() => { const g = buurtOpsGeo, k = g.scaleFor(51);"
                " const v = g.fitView([5.7, 50.9, 5.9, 51.0], 800, 400, k, 0);"
                " return g.viewBBox(v, k); }"
            )
            assert back[0] <= 5.7 + 1e-9
            assert back[2] >= 5.9 - 1e-9
            assert back[1] == pytest.approx(50.9, abs=1e-6)
            assert back[3] == pytest.approx(51.0, abs=1e-6)

            # A notice posted now appears in the live feed, with its reach and a marker.
            notice_id = post_notice(client, system)
            item = page.locator(f"#feed li.item.notice[data-id='{notice_id}']")
            item.wait_for()
            page.wait_for_function(
                "id => { const li = document.querySelector(`#feed li[data-id='${id}']`);"
                " return li && li.textContent.includes('Bereikt 1 van 2'); }",
                arg=notice_id,
                timeout=60_000,
            )
            text = item.inner_text()
            assert "Politiebericht: Vermiste persoon" in text
            assert "1 mislukt" in text
            assert "Stein centrum" not in text  # group ids and counts, not member data
            assert "1 groep" in text
            assert item.locator("svg.bereikbalk rect.afgeleverd").count() == 1
            assert page.locator(f"#laag-markers circle.bericht[data-id='{notice_id}']").count() == 1
            assert page.locator("#laag-berichten path.berichtgebied").count() >= 1

            # A resident's report appears as an incident, with its own marker.
            report = client.post("/v1/reports", json={
                "text": "Inbraak bezig bij nummer 12: twee mannen bij de achterdeur",
                "called_112": True, "location": {"lat": 50.9712, "lon": 5.7685}})
            assert report.status_code == 202, report.text
            report_id = report.json()["alert_id"]
            incident = page.locator(f"#feed li.item.incident[data-id='{report_id}']")
            incident.wait_for(timeout=30_000)
            assert "Melding: Inbraak" in incident.inner_text()
            assert "1× web" in incident.inner_text()
            page.locator(f"#laag-markers circle.incident[data-id='{report_id}']").wait_for()
            assert "achterdeur" not in page.inner_text("body")

            # Delivery per channel: the blocked Telegram chat is a failure, SMS went out.
            telegram = page.locator(".kanaal[data-channel=telegram]")
            telegram.wait_for(timeout=30_000)
            page.wait_for_function(
                "() => { const k = document.querySelector('.kanaal[data-channel=telegram]');"
                " return !!k && k.textContent.includes('2 mislukt (100 %)'); }",
                timeout=30_000,
            )
            sms = page.locator(".kanaal[data-channel=sms]")
            assert "2 afgeleverd" in sms.inner_text()
            assert sms.locator("svg.grafiek rect.afgeleverd").count() >= 1

            # Nothing private on the page: no phone number, no chat id, no headline.
            body = page.inner_text("body")
            for private in ("+31612345678", "612345678", "4242", "blauwe jas"):
                assert private not in body, private
            assert page.evaluate("sessionStorage.getItem('buurtalert.ops.key')") == (
                system.admin_key
            )

            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "ops-page.png"), full_page=True)

            # Zoom in with the button: the view changes and the polygons are fetched again.
            before = page.get_attribute("#kaart-svg", "viewBox")
            with page.expect_response(lambda r: "/v1/ops/map?bbox=" in r.url):
                page.click("#inzoomen")
            assert page.get_attribute("#kaart-svg", "viewBox") != before
            assert page.locator("#laag-gebieden path.gebied").count() > 0

            # "Sleutel vergeten" forgets the key in this tab.
            page.click("#sleutel-wissen")
            page.locator("#sleutel-scherm").wait_for(state="visible")
            assert page.evaluate("sessionStorage.getItem('buurtalert.ops.key')") is None

            assert watch.foreign == [], "the page loaded something from another origin"
            assert watch.errors == [], "console errors (a CSP violation shows up here)"
        finally:
            context.close()

        # A link may carry the key once, in the fragment: used, stored, taken off the URL.
        context, page, watch = open_page(browser, origin)
        try:
            page.goto(f"{origin}/ops#sleutel={system.admin_key}")
            page.locator("#laag-gebieden path.gebied").first.wait_for()
            assert page.locator("#sleutel-scherm").is_hidden()
            assert system.admin_key not in page.url
            page.locator(f"#feed li[data-id='{notice_id}']").wait_for()
            assert watch.foreign == []
            assert watch.errors == []
        finally:
            context.close()
