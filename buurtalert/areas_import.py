"""`buurtalert areas import`: load a GeoJSON FeatureCollection into the area registry.

Reading, parsing and the adjacency computation are CPU-bound and run in a worker thread, so a
caller's event loop (and the progress bar) keeps running. Adjacency is always computed over every
area in the registry, not just the file's, so two files that border each other get linked.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from shared.geo import (
    AreaFeature,
    FeatureProblem,
    compute_adjacency,
    from_wkb_hex,
    parse_feature_collection,
    to_wkb_hex,
)
from shared.registry import Registry, StoredArea

#: Areas per upsert call: big enough for few round trips, small enough to move the bar.
_STORE_CHUNK = 1000
_READ_CHUNK = 1 << 20


class AreaImportError(ValueError):
    """The file cannot be read as JSON (missing, unreadable, not JSON)."""


@dataclass
class ImportReport:
    """What an import did."""

    imported: int
    updated: int
    total_areas: int
    problems: list[FeatureProblem]
    adjacency_pairs: int
    seconds: float


async def import_areas(path: Path, registry: Registry, *, progress: bool = True) -> ImportReport:
    """Upsert the areas of a GeoJSON file and recompute adjacency over the whole registry."""
    started = time.perf_counter()
    # stderr, so the summary a script reads from stdout stays clean.
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not progress,
        transient=False,
    )
    with bar:
        read_task = bar.add_task("reading", total=_file_size(path))
        doc = await asyncio.to_thread(_read_json, path, _advancer(bar, read_task))

        parse_task = bar.add_task("parsing", total=_feature_count(doc))
        features, problems = await asyncio.to_thread(
            parse_feature_collection, doc, progress=_advancer(bar, parse_task)
        )
        del doc  # the parsed dict of a national file is larger than its geometries

        existing = await registry.all_areas()
        adjacency_task = bar.add_task("adjacency", total=None)
        merged = _merge(existing, features)
        adjacency = await asyncio.to_thread(compute_adjacency, merged)
        bar.update(adjacency_task, total=1, completed=1)

        # New and changed areas are written with their final neighbours in the same hash
        # write, so a reader never sees a new geometry with a stale neighbour list.
        rows = [
            StoredArea(f.id, f.name, to_wkb_hex(f.geometry), tuple(sorted(adjacency[f.id])))
            for f in features
        ]
        # Areas already stored and not in this file only need their neighbour lists, and only
        # where those changed: re-importing the same file writes nothing here.
        imported_ids = {f.id for f in features}
        changed: dict[str, Iterable[str]] = {}
        for area in existing:
            neighbours = tuple(sorted(adjacency.get(area.id, ())))
            if area.id not in imported_ids and neighbours != area.adjacent:
                changed[area.id] = neighbours
        store_task = bar.add_task("storing", total=len(rows) + len(changed))
        for start in range(0, len(rows), _STORE_CHUNK):
            chunk = rows[start : start + _STORE_CHUNK]
            await registry.upsert_areas(chunk)
            bar.advance(store_task, len(chunk))
        if changed:
            await registry.set_adjacency(changed)
            bar.advance(store_task, len(changed))

    existing_ids = {area.id for area in existing}
    updated = len(imported_ids & existing_ids)
    return ImportReport(
        imported=len(imported_ids) - updated,
        updated=updated,
        total_areas=len(existing_ids | imported_ids),
        problems=problems,
        adjacency_pairs=sum(len(n) for n in adjacency.values()) // 2,
        seconds=time.perf_counter() - started,
    )


def _merge(existing: list[StoredArea], features: list[AreaFeature]) -> list[AreaFeature]:
    """Every area with a geometry: stored ones, replaced by the file's where ids match."""
    by_id: dict[str, AreaFeature] = {}
    for area in existing:
        if not area.wkb_hex:
            continue
        try:
            geometry = from_wkb_hex(area.wkb_hex)
        except ValueError:
            # A stored area without a readable shape cannot border anything; it keeps its
            # row, gets no neighbours, and is fixed by importing it again.
            continue
        by_id[area.id] = AreaFeature(area.id, area.name, geometry)
    for feature in features:
        by_id[feature.id] = feature
    return list(by_id.values())


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None  # _read_json reports why, with the file name


def _read_json(path: Path, advance: Callable[[int], None]) -> object:
    """The parsed JSON document; AreaImportError with the reason when it cannot be had."""
    try:
        with path.open("rb") as fh:
            buf = bytearray()
            while chunk := fh.read(_READ_CHUNK):
                buf += chunk
                advance(len(chunk))
    except FileNotFoundError as exc:
        raise AreaImportError(f"cannot read {path}: no such file") from exc
    except IsADirectoryError as exc:
        raise AreaImportError(f"cannot read {path}: it is a directory, not a file") from exc
    except PermissionError as exc:
        raise AreaImportError(f"cannot read {path}: permission denied") from exc
    except OSError as exc:
        raise AreaImportError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not buf.strip():
        raise AreaImportError(f"{path} is empty; expected a GeoJSON FeatureCollection")
    try:
        # json.loads on bytes detects UTF-8/16/32 and skips a UTF-8 byte-order mark.
        return json.loads(bytes(buf))
    except UnicodeDecodeError as exc:
        raise AreaImportError(f"{path} is not UTF-8 text, so not GeoJSON") from exc
    except json.JSONDecodeError as exc:
        raise AreaImportError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from exc


def _feature_count(doc: object) -> int | None:
    features = doc.get("features") if isinstance(doc, dict) else None
    return len(features) if isinstance(features, list) else None


def _advancer(bar: Progress, task: TaskID) -> Callable[[int], None]:
    # Called from the worker thread; rich's Progress takes its own lock on every update.
    def advance(n: int) -> None:
        bar.advance(task, n)

    return advance
