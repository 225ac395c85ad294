"""Benchmark shared.geo on real Dutch buurten: parse, adjacency, index build, point lookups.

Usage: python bench/bench_geo.py [path/to/buurten.geojson]

Defaults to ../shared/data/nl_buurten_2014.geojson beside the repository. Prints figures only;
it asserts nothing about timings (a busy machine is not a failing build).
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import shapely
from shapely.geometry import Point

# Run as a plain script from a checkout: make the repository importable.
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from shared.geo import (  # noqa: E402
    AreaFeature,
    AreaIndex,
    FeatureProblem,
    compute_adjacency,
    parse_feature_collection,
)

DEFAULT_DATA = REPO.parent / "shared" / "data" / "nl_buurten_2014.geojson"
#: Bounding box of the Netherlands (lon, lat), for random points.
NL_BBOX = (3.31, 50.75, 7.23, 53.56)
VECTOR_POINTS = 100_000
SINGLE_POINTS = 10_000
REPEATS = 3

T = TypeVar("T")


def best_of(fn: Callable[[], T], repeats: int = REPEATS) -> tuple[float, T]:
    """Best wall time of a few runs (the least disturbed one), and the last result."""
    best = float("inf")
    result: T
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def peak_rss_mib() -> float:
    """Peak resident set size of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def load(path: Path) -> tuple[float, float, list[AreaFeature], list[FeatureProblem]]:
    """Seconds to load the JSON and to parse it, and what parsing gave."""
    started = time.perf_counter()
    doc = json.loads(path.read_bytes())
    loaded = time.perf_counter()
    features, problems = parse_feature_collection(doc)
    return loaded - started, time.perf_counter() - loaded, features, problems


def main(argv: list[str]) -> int:
    """Run the benchmark and print its figures."""
    path = Path(argv[1]) if len(argv) > 1 else DEFAULT_DATA
    if not path.is_file():
        print(
            f"no data at {path}: pass a GeoJSON FeatureCollection of areas, or put the "
            "handbook data beside the repository (../shared/data/, see PROVENANCE.md)",
            file=sys.stderr,
        )
        return 2

    json_s, parse_s, features, problems = load(path)
    # The parsed JSON (millions of small objects) is gone now; collect it so the garbage
    # collector does not bill its traversal to the lookups below, as no service keeps it.
    gc.collect()
    adjacency_s, adjacency = best_of(lambda: compute_adjacency(features))
    items = [(f.id, f.geometry) for f in features]
    build_s, index = best_of(lambda: AreaIndex.build(items))

    rng = np.random.default_rng(20140)
    lons = rng.uniform(NL_BBOX[0], NL_BBOX[2], VECTOR_POINTS)
    lats = rng.uniform(NL_BBOX[1], NL_BBOX[3], VECTOR_POINTS)
    many_s, hits = best_of(lambda: index.lookup_many(lons, lats))

    # Baseline: shapely's own tree and vectorised query, with nothing of ours around it
    # (point creation included, as lookup_many has to make the points too).
    raw_tree = shapely.STRtree(np.array([g for _, g in items], dtype=object))
    raw_s, raw = best_of(lambda: raw_tree.query(shapely.points(lons, lats), predicate="intersects"))

    single_lons = lons[:SINGLE_POINTS].tolist()
    single_lats = lats[:SINGLE_POINTS].tolist()
    single_s, _ = best_of(
        lambda: [index.lookup(x, y) for x, y in zip(single_lons, single_lats, strict=True)]
    )
    raw_single_s, _ = best_of(
        lambda: [
            raw_tree.query(Point(x, y), predicate="intersects")
            for x, y in zip(single_lons, single_lats, strict=True)
        ]
    )

    pairs = sum(len(n) for n in adjacency.values()) // 2
    found = sum(1 for h in hits if h)
    if found != len(np.unique(raw[0])):
        print("WARNING: lookup_many and the raw query disagree", file=sys.stderr)

    us = 1e6
    print(f"data                 {path}")
    print(f"features             {len(features):,} parsed, {len(problems):,} problems reported")
    print(f"json load            {json_s:8.3f} s")
    print(f"parse                {parse_s:8.3f} s")
    print(f"adjacency            {adjacency_s:8.3f} s   ({pairs:,} neighbour pairs)")
    print(f"AreaIndex build      {build_s:8.3f} s")
    print(
        f"lookup_many          {many_s / VECTOR_POINTS * us:8.2f} µs/point "
        f"({VECTOR_POINTS:,} random points in the NL bbox, {found:,} inside an area)"
    )
    print(
        f"  raw STRtree.query  {raw_s / VECTOR_POINTS * us:8.2f} µs/point "
        f"(shapely.points + query(predicate='intersects'))   "
        f"ratio {many_s / raw_s:.2f}x"
    )
    print(f"lookup one by one    {single_s / SINGLE_POINTS * us:8.2f} µs/point ({SINGLE_POINTS:,})")
    print(
        f"  raw query one Point{raw_single_s / SINGLE_POINTS * us:8.2f} µs/point "
        f"(Point(x, y) + query(predicate='intersects'))   ratio {single_s / raw_single_s:.2f}x"
    )
    print(f"peak RSS             {peak_rss_mib():8.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
