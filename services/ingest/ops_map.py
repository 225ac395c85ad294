"""The ops map: every area with the groups that cover it, simplified per view, no tile server.

Coverage is worked out once per registry version: an area is covered in full when a group
lists it, or when a group's own polygon covers (nearly) all of it; partly when a group polygon
only overlaps it. A view holding more areas than a browser draws well gets a coarse grid of
counts instead of outlines, so the whole of the Netherlands never travels as raw polygons.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import shapely

from services.ingest.pages import MAX_FEATURES, AreaLayer, AreaLayerCache, simplify_tolerance
from shared.registry import Registry, StoredGroup

Coverage = Literal["full", "partial", "none"]

#: A group polygon overlapping less than this share of an area only touches it (shared border,
#: rounding): not coverage.
MIN_OVERLAP = 0.001
#: A group polygon covering at least this share of an area covers it in full.
FULL_OVERLAP = 0.99
#: Grid cells across the wider side of a view too big for outlines.
GRID_CELLS = 48
_DECIMALS = 6

BBox = tuple[float, float, float, float]


def area_coverage(
    layer: AreaLayer, groups: Sequence[StoredGroup]
) -> tuple[list[tuple[str, ...]], list[Coverage]]:
    """Per area of the layer (same order): the ids of its groups, and how fully they cover it."""
    n = len(layer.ids)
    by_area: list[set[str]] = [set() for _ in range(n)]
    full = np.zeros(n, dtype=bool)
    position = {area_id: i for i, area_id in enumerate(layer.ids)}
    for group in groups:
        for area_id in group.area_ids:
            i = position.get(area_id)
            if i is not None:
                by_area[i].add(group.id)
                full[i] = True
    shaped = [g for g in groups if g.wkb_hex]
    if shaped and n:
        hexes = np.empty(len(shaped), dtype=object)
        hexes[:] = [g.wkb_hex for g in shaped]
        shapes = shapely.from_wkb(hexes, on_invalid="ignore")
        for group, shape in zip(shaped, shapes, strict=True):
            if shape is None or shapely.is_empty(shape):
                continue
            hits = layer.tree.query(shape, predicate="intersects")
            if not len(hits):
                continue
            areas = layer.geoms[hits]
            own = shapely.area(areas)
            share = np.divide(
                shapely.area(shapely.intersection(areas, shape)),
                own,
                out=np.zeros(len(hits)),
                where=own > 0,
            )
            for i, s in zip(hits, share, strict=True):
                if s >= MIN_OVERLAP:
                    by_area[int(i)].add(group.id)
                    if s >= FULL_OVERLAP:
                        full[int(i)] = True
    coverage: list[Coverage] = [
        "full" if full[i] else ("partial" if by_area[i] else "none") for i in range(n)
    ]
    return [tuple(sorted(g)) for g in by_area], coverage


def grid_step(bbox: BBox, cells: int = GRID_CELLS) -> tuple[float, float]:
    """Cell size (lon, lat degrees) for a coarse view: power-of-two steps, about square on the
    ground, so cells stay put while panning at one zoom."""
    mid_lat = (bbox[1] + bbox[3]) / 2
    shrink = max(math.cos(math.radians(mid_lat)), 0.05)
    span = max(bbox[2] - bbox[0], (bbox[3] - bbox[1]) / shrink, 1e-6)
    dlon = float(2.0 ** math.floor(math.log2(span / cells)))
    return dlon, dlon * shrink


def grid_cells(
    points: npt.NDArray[np.float64], coverage: Sequence[Coverage], step: tuple[float, float]
) -> list[list[int]]:
    """Areas counted per grid cell: [col, row, areas, covered in full, covered partly].

    `points` are the areas' representative points (lon, lat); cell (col, row) spans
    [col*dlon, (col+1)*dlon) by [row*dlat, (row+1)*dlat).
    """
    if not len(points):
        return []
    cols = np.floor(points[:, 0] / step[0]).astype(np.int64)
    rows = np.floor(points[:, 1] / step[1]).astype(np.int64)
    cells: dict[tuple[int, int], list[int]] = {}
    for col, row, cov in zip(cols.tolist(), rows.tolist(), coverage, strict=True):
        cell = cells.setdefault((col, row), [col, row, 0, 0, 0])
        cell[2] += 1
        if cov == "full":
            cell[3] += 1
        elif cov == "partial":
            cell[4] += 1
    return [cells[k] for k in sorted(cells)]


def _geojson_texts(geoms: npt.NDArray[np.object_], tolerance: float) -> list[str]:
    if not len(geoms):
        return []
    simple = shapely.simplify(geoms, tolerance, preserve_topology=True)
    simple = shapely.transform(simple, lambda xy: np.round(xy, _DECIMALS))
    return [str(t) for t in shapely.to_geojson(simple)]


@dataclass(frozen=True)
class OpsMap:
    """The area layer of one registry version with coverage, groups and group polygons."""

    layer: AreaLayer
    groups: list[tuple[str, ...]]
    coverage: list[Coverage]
    points: npt.NDArray[np.float64]
    shape_ids: tuple[str, ...]
    shape_names: tuple[str, ...]
    shapes: npt.NDArray[np.object_]
    shape_tree: Any  # shapely.STRtree
    groups_total: int
    covered_extent: list[float] | None
    positions: dict[str, int]

    @property
    def version(self) -> int:
        """The registry version this map shows."""
        return self.layer.version

    @classmethod
    def build(cls, layer: AreaLayer, groups: Sequence[StoredGroup]) -> OpsMap:
        """Coverage, representative points and group polygons for a layer (CPU work)."""
        by_area, coverage = area_coverage(layer, groups)
        points = (
            shapely.get_coordinates(shapely.point_on_surface(layer.geoms))
            if len(layer.ids)
            else np.empty((0, 2))
        )
        shaped = [g for g in groups if g.wkb_hex]
        hexes = np.empty(len(shaped), dtype=object)
        hexes[:] = [g.wkb_hex for g in shaped]
        shapes = shapely.from_wkb(hexes, on_invalid="ignore") if shaped else hexes
        keep = [i for i, s in enumerate(shapes) if s is not None and not shapely.is_empty(s)]
        kept = np.empty(len(keep), dtype=object)
        kept[:] = [shapes[i] for i in keep]
        covered = [i for i, c in enumerate(coverage) if c != "none"]
        extent_parts = list(layer.geoms[covered]) + list(kept)
        extent = (
            [round(float(v), _DECIMALS) for v in shapely.total_bounds(np.array(extent_parts))]
            if extent_parts
            else None
        )
        return cls(
            layer=layer,
            groups=by_area,
            coverage=coverage,
            points=points,
            shape_ids=tuple(shaped[i].id for i in keep),
            shape_names=tuple(shaped[i].name for i in keep),
            shapes=kept,
            shape_tree=shapely.STRtree(kept),
            groups_total=len(groups),
            covered_extent=extent,
            positions={a: i for i, a in enumerate(layer.ids)},
        )

    def summary(self) -> dict[str, Any]:
        """Counts for the whole registry: areas, covered areas, groups; extents."""
        return {
            "version": self.version,
            "areas_total": len(self.layer.ids),
            "areas_covered": sum(1 for c in self.coverage if c == "full"),
            "areas_partly_covered": sum(1 for c in self.coverage if c == "partial"),
            "groups_total": self.groups_total,
            "areas_extent": self.layer.extent,
            "covered_extent": self.covered_extent,
        }

    def answer(self, bbox: BBox) -> str:
        """The view as GeoJSON text: outlines with coverage, or a grid of counts when too many.

        Outlines (`"mode": "areas"`) are simplified to about a pixel of a 1000 px view; group
        polygons of their own come along as features of kind "group".
        """
        hits = self.layer.query(bbox)
        head: dict[str, Any] = {"type": "FeatureCollection", "bbox": list(bbox), **self.summary()}
        head["areas_in_view"] = len(hits)
        if len(hits) > MAX_FEATURES:
            step = grid_step(bbox)
            head["mode"] = "grid"
            head["grid"] = {
                "step": [step[0], step[1]],
                "cells": grid_cells(self.points[hits], [self.coverage[i] for i in hits], step),
            }
            return json.dumps(head)[:-1] + ',"features":[]}'
        head["mode"] = "areas"
        tolerance = simplify_tolerance(bbox)
        features: list[str] = []
        texts = _geojson_texts(self.layer.geoms[hits], tolerance)
        for i, geometry in zip(hits, texts, strict=True):
            props = {
                "kind": "area",
                "id": self.layer.ids[i],
                "name": self.layer.names[i],
                "coverage": self.coverage[i],
                "covered": self.coverage[i] != "none",
                "groups": list(self.groups[i]),
            }
            features.append(
                f'{{"type":"Feature","id":{json.dumps(self.layer.ids[i])},'
                f'"properties":{json.dumps(props)},"geometry":{geometry}}}'
            )
        view = shapely.box(*bbox)
        shape_hits = (
            sorted(int(i) for i in self.shape_tree.query(view, predicate="intersects"))
            if len(self.shape_ids)
            else []
        )[:MAX_FEATURES]
        for i, geometry in zip(
            shape_hits, _geojson_texts(self.shapes[shape_hits], tolerance), strict=True
        ):
            props = {"kind": "group", "id": self.shape_ids[i], "name": self.shape_names[i]}
            features.append(
                f'{{"type":"Feature","id":{json.dumps("group:" + self.shape_ids[i])},'
                f'"properties":{json.dumps(props)},"geometry":{geometry}}}'
            )
        # The geometries are JSON text already (see AreaLayer.feature_collection).
        return json.dumps(head)[:-1] + ',"features":[' + ",".join(features) + "]}"

    def names_of(self, area_ids: Sequence[str]) -> list[str]:
        """Names of areas by id (the id itself for an area not in the layer)."""
        return [
            self.layer.names[self.positions[a]] if a in self.positions else a for a in area_ids
        ]

    def centre_of(self, area_ids: Sequence[str]) -> tuple[float, float] | None:
        """(lon, lat) in the middle of the given areas' representative points, if any known."""
        found = [self.positions[a] for a in area_ids if a in self.positions]
        if not found:
            return None
        pts = self.points[found]
        return float(pts[:, 0].mean()), float(pts[:, 1].mean())


class OpsMapCache:
    """The OpsMap of the current registry version, rebuilt when areas or groups change."""

    def __init__(self, layers: AreaLayerCache, registry: Registry) -> None:
        self.layers = layers
        self.registry = registry
        self._map: OpsMap | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> OpsMap:
        """The map for the registry as it is now."""
        layer = await self.layers.get()
        current = self._map
        if current is not None and current.layer is layer:
            return current
        async with self._lock:
            current = self._map
            if current is None or current.layer is not layer:
                groups = await self.registry.all_groups()
                current = await asyncio.to_thread(OpsMap.build, layer, groups)
                self._map = current
            return current
