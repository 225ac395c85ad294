"""`import_areas` against a real redis-server: upsert, idempotence, adjacency across files."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from buurtalert.areas_import import AreaImportError, ImportReport, import_areas
from shared.geo import GeoJSONError, compute_adjacency, from_wkb_hex, parse_feature_collection
from shared.registry import Registry, StoredArea

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

#: tests/integration/<this file> -> repo root -> its parent -> shared/data (never in the repo).
BUURTEN = Path(__file__).resolve().parents[3] / "shared" / "data" / "nl_buurten_2014.geojson"
CELL = 0.01


def square(col: int, row: int) -> dict[str, Any]:
    """A GeoJSON Polygon: one grid cell near Stein (lon 5.75, lat 50.95)."""
    x, y = 5.75 + col * CELL, 50.95 + row * CELL
    ring = [[x, y], [x + CELL, y], [x + CELL, y + CELL], [x, y + CELL], [x, y]]
    return {"type": "Polygon", "coordinates": [ring]}


def grid_collection(cols: range, rows: range, *extra: dict[str, Any]) -> dict[str, Any]:
    """A FeatureCollection of grid cells with CBS-style properties, ids like BU_c_r."""
    features = [
        {
            "type": "Feature",
            "properties": {"BU_CODE": f"BU_{c}_{r}", "BU_NAAM": f"Cell {c},{r}"},
            "geometry": square(c, r),
        }
        for c in cols
        for r in rows
    ]
    return {"type": "FeatureCollection", "features": [*features, *extra]}


def write(path: Path, doc: object) -> Path:
    """Write a JSON document and return its path."""
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


@pytest.fixture
async def registry(redis_url: str) -> AsyncIterator[Registry]:
    """A registry on a fresh redis-server."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        yield Registry(redis)
    finally:
        await redis.aclose()


async def snapshot(registry: Registry) -> list[StoredArea]:
    """Everything the registry holds about areas."""
    return sorted(await registry.all_areas(), key=lambda a: a.id)


async def test_import_twice_is_idempotent(tmp_path: Path, registry: Registry) -> None:
    point = {
        "type": "Feature",
        "properties": {"id": "P1"},
        "geometry": {"type": "Point", "coordinates": [5.8, 51.0]},
    }
    path = write(tmp_path / "a.geojson", grid_collection(range(3), range(2), point))

    first = await import_areas(path, registry, progress=False)
    after_first = await snapshot(registry)
    second = await import_areas(path, registry, progress=False)
    after_second = await snapshot(registry)

    assert (first.imported, first.updated, first.total_areas) == (6, 0, 6)
    assert (second.imported, second.updated, second.total_areas) == (0, 6, 6)
    # 3x2 grid: 2 horizontal neighbours per row * 2 rows + 3 vertical = 7 shared edges.
    assert first.adjacency_pairs == second.adjacency_pairs == 7
    assert [(p.index, p.feature_id) for p in first.problems] == [(6, "P1")]
    assert "Point" in first.problems[0].reason
    assert after_first == after_second
    assert [a.id for a in after_first] == sorted(f"BU_{c}_{r}" for c in range(3) for r in range(2))

    corner = await registry.get_area("BU_0_0")
    assert corner is not None
    assert corner.name == "Cell 0,0"
    assert corner.adjacent == ["BU_0_1", "BU_1_0"]  # not BU_1_1: that is only a corner
    middle = await registry.get_area("BU_1_0")
    assert middle is not None
    assert middle.adjacent == ["BU_0_0", "BU_1_1", "BU_2_0"]
    stored = {a.id: a for a in after_first}
    assert from_wkb_hex(stored["BU_2_1"].wkb_hex).bounds == pytest.approx(
        (5.75 + 2 * CELL, 50.95 + CELL, 5.75 + 3 * CELL, 50.95 + 2 * CELL)
    )


async def test_second_file_that_adjoins_links_them(tmp_path: Path, registry: Registry) -> None:
    west = write(tmp_path / "west.geojson", grid_collection(range(2), range(2)))
    east = write(tmp_path / "east.geojson", grid_collection(range(2, 4), range(2)))

    await import_areas(west, registry, progress=False)
    before = await registry.get_area("BU_1_0")
    assert before is not None
    assert before.adjacent == ["BU_0_0", "BU_1_1"]

    report = await import_areas(east, registry, progress=False)
    assert (report.imported, report.updated, report.total_areas) == (4, 0, 8)
    # 4x2 grid: 3 * 2 horizontal + 4 vertical.
    assert report.adjacency_pairs == 10
    west_edge = await registry.get_area("BU_1_0")
    east_edge = await registry.get_area("BU_2_0")
    assert west_edge is not None
    assert east_edge is not None
    assert west_edge.adjacent == ["BU_0_0", "BU_1_1", "BU_2_0"]
    assert east_edge.adjacent == ["BU_1_0", "BU_2_1", "BU_3_0"]


async def test_moved_area_leaves_its_old_neighbours(tmp_path: Path, registry: Registry) -> None:
    await import_areas(
        write(tmp_path / "grid.geojson", grid_collection(range(3), range(1))),
        registry,
        progress=False,
    )
    # Re-import only BU_2_0, moved far east: BU_1_0 (not in this file) must lose it.
    moved = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {"BU_CODE": "BU_2_0"}, "geometry": square(9, 0)}
        ],
    }
    report = await import_areas(write(tmp_path / "moved.geojson", moved), registry, progress=False)
    assert (report.imported, report.updated, report.total_areas) == (0, 1, 3)
    middle = await registry.get_area("BU_1_0")
    moved_area = await registry.get_area("BU_2_0")
    assert middle is not None
    assert moved_area is not None
    assert middle.adjacent == ["BU_0_0"]
    assert moved_area.adjacent == []
    assert moved_area.name == "BU_2_0"  # no name given: the id stands in


async def test_import_real_buurten_of_stein(tmp_path: Path, registry: Registry) -> None:
    if not BUURTEN.is_file():
        pytest.skip(f"real buurt data not found at {BUURTEN} (see ../shared/data/PROVENANCE.md)")
    doc = json.loads(BUURTEN.read_bytes())
    stein = [f for f in doc["features"] if f["properties"].get("gemeente_code") == "GM0971"]
    path = write(tmp_path / "stein.geojson", {"type": "FeatureCollection", "features": stein})

    report = await import_areas(path, registry, progress=False)

    expected, problems = parse_feature_collection({"type": "FeatureCollection", "features": stein})
    assert report.problems == problems
    assert report.imported == report.total_areas == len(expected) >= 10
    adjacency = compute_adjacency(expected)
    for area in expected:
        got = await registry.get_area(area.id)
        assert got is not None
        assert got.name == area.name
        assert got.adjacent == sorted(adjacency[area.id])
        assert got.adjacent, f"{area.id} {area.name} has no neighbours"


async def test_progress_bar_goes_to_stderr(
    tmp_path: Path, registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "a.geojson", grid_collection(range(2), range(1)))
    report = await import_areas(path, registry, progress=True)
    assert isinstance(report, ImportReport)
    assert report.total_areas == 2
    out, _ = capsys.readouterr()
    assert out == ""


@pytest.mark.parametrize(
    ("content", "error", "words"),
    [
        pytest.param(None, AreaImportError, ["no such file"], id="missing"),
        pytest.param(b"", AreaImportError, ["empty"], id="empty-file"),
        pytest.param(
            b'{"type": "FeatureCollection", "features": [',
            AreaImportError,
            ["not valid JSON", "line 1"],
            id="truncated-json",
        ),
        pytest.param(b"\xff\xfe\x00garbage", AreaImportError, ["not"], id="binary"),
        pytest.param(b'{"type": "Topology"}', GeoJSONError, ["TopoJSON"], id="topojson"),
        pytest.param(b"[1, 2]", GeoJSONError, ["FeatureCollection"], id="array"),
    ],
)
async def test_unreadable_files_raise_clear_errors(
    tmp_path: Path,
    registry: Registry,
    content: bytes | None,
    error: type[ValueError],
    words: list[str],
) -> None:
    path = tmp_path / "areas.geojson"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(error) as info:
        await import_areas(path, registry, progress=False)
    for word in words:
        assert word in str(info.value)
    assert await registry.area_ids() == set()
