"""shared.geo on the real CBS buurten of 2014 (all 10,637 of the Netherlands).

The data lives beside the repository (`../shared/data/`, see its PROVENANCE.md), never in it;
these tests skip when it is absent. The file is parsed once for the whole module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.geo import (
    AreaFeature,
    AreaIndex,
    FeatureProblem,
    compute_adjacency,
    parse_feature_collection,
)

pytestmark = pytest.mark.unit

#: tests/unit/<this file> -> repo root (/work/main) -> its parent -> shared/data.
DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"
BUURTEN = DATA_DIR / "nl_buurten_2014.geojson"
FEATURES_IN_FILE = 10_637

#: Municipalities named in the seed articles.
STEIN, LEUDAL, EERSEL = "0971", "1640", "0770"


@dataclass(frozen=True)
class Parsed:
    """The parsed file, its adjacency and a point index: built once per module."""

    features: list[AreaFeature]
    problems: list[FeatureProblem]
    adjacency: dict[str, set[str]]
    index: AreaIndex

    def buurten_of(self, gemeente: str) -> list[AreaFeature]:
        """Buurten of one gemeente: a CBS buurt code is BU + gemeente (4) + wijk (2) + 2."""
        return [f for f in self.features if f.id.startswith(f"BU{gemeente}")]


@pytest.fixture(scope="module")
def nl() -> Parsed:
    """All Dutch buurten of 2014, parsed, with adjacency and an index."""
    if not BUURTEN.is_file():
        pytest.skip(
            f"real buurt data not found at {BUURTEN} (it lives beside the repository in "
            "../shared/data/, see PROVENANCE.md; it is never copied into the repository)"
        )
    doc = json.loads(BUURTEN.read_bytes())
    features, problems = parse_feature_collection(doc)
    return Parsed(
        features,
        problems,
        compute_adjacency(features),
        AreaIndex.build([(f.id, f.geometry) for f in features]),
    )


def test_every_feature_is_parsed_or_reported(nl: Parsed) -> None:
    skipped = [p for p in nl.problems if p.skipped]
    assert len(nl.features) + len(skipped) == FEATURES_IN_FILE
    # Some small buurten collapsed to nothing in the source: reported, not raised, and few.
    assert len(nl.features) > 0.97 * FEATURES_IN_FILE
    assert len({f.id for f in nl.features}) == len(nl.features)
    for problem in nl.problems:
        assert problem.feature_id is not None
        assert problem.feature_id.startswith("BU")
        assert problem.reason.endswith(".")
    assert all(f.geometry.is_valid and not f.geometry.is_empty for f in nl.features)


def test_adjacency_is_symmetric_without_self(nl: Parsed) -> None:
    assert set(nl.adjacency) == {f.id for f in nl.features}
    for area_id, neighbours in nl.adjacency.items():
        assert area_id not in neighbours
        for other in neighbours:
            assert area_id in nl.adjacency[other], (area_id, other)
    # Buurten tile the country: almost all have neighbours, and several on average.
    lonely = [a for a, n in nl.adjacency.items() if not n]
    assert len(lonely) < 10
    pairs = sum(len(n) for n in nl.adjacency.values()) // 2
    assert 2 * pairs / len(nl.adjacency) > 4


def test_every_buurt_of_stein_has_neighbours(nl: Parsed) -> None:
    stein = nl.buurten_of(STEIN)
    assert len(stein) >= 10
    for buurt in stein:
        assert nl.adjacency[buurt.id], f"{buurt.id} {buurt.name} has no neighbours"
    # Borders across municipal lines count too: Stein borders Sittard-Geleen and Beek.
    across = {n[2:6] for b in stein for n in nl.adjacency[b.id]} - {STEIN}
    assert {"1883", "0888"} <= across


def test_neighbours_share_a_border_not_a_corner(nl: Parsed) -> None:
    by_id = {f.id: f for f in nl.features}
    for buurt in nl.buurten_of(STEIN):
        for other in nl.adjacency[buurt.id]:
            shared = buurt.geometry.boundary.intersection(by_id[other].geometry.boundary)
            assert shared.length > 0, (buurt.id, other)


@pytest.mark.parametrize("gemeente", [STEIN, LEUDAL, EERSEL])
def test_representative_point_is_found_in_its_buurt(nl: Parsed, gemeente: str) -> None:
    buurten = nl.buurten_of(gemeente)
    assert buurten, f"no buurten of GM{gemeente} in the file"
    lons, lats = [], []
    for buurt in buurten:
        point = buurt.geometry.representative_point()
        assert nl.index.lookup(point.x, point.y) == [buurt.id], buurt.id
        lons.append(point.x)
        lats.append(point.y)
    assert nl.index.lookup_many(lons, lats) == [[b.id] for b in buurten]
