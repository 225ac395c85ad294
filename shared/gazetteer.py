"""A local gazetteer: Dutch postcodes to coordinates, loaded by the operator (no online geocoder).

Stored in one Redis hash `ba:gazetteer`: field PC6 ("1234AB") or PC4 ("1234") -> "lat,lon".
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from redis.asyncio import Redis

GAZETTEER = "ba:gazetteer"

# Dutch postcodes: four digits (no leading zero), optional space, two letters (not SA, SD, SS).
_PC6 = re.compile(r"\b([1-9][0-9]{3})\s?(?!SA|SD|SS)([A-Z]{2})\b", re.IGNORECASE)
_PC4 = re.compile(r"\b([1-9][0-9]{3})\b")


def find_postcodes(text: str) -> list[str]:
    """Postcodes in a text, most precise first: PC6 ("1234AB") then PC4 ("1234")."""
    pc6 = [f"{d}{letters.upper()}" for d, letters in _PC6.findall(text)]
    pc4 = [d for d in _PC4.findall(text) if all(not p.startswith(d) for p in pc6)]
    return pc6 + [p[:4] for p in pc6] + pc4


def read_csv(path: Path) -> Iterator[tuple[str, float, float]]:
    """Rows of a CSV with columns postcode, lat, lon (header required); bad rows raise."""
    with path.open(newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            try:
                code = row["postcode"].replace(" ", "").upper()
                lat, lon = float(row["lat"]), float(row["lon"])
            except (KeyError, ValueError, AttributeError) as exc:
                raise ValueError(f"{path}:{n}: need columns postcode,lat,lon") from exc
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise ValueError(f"{path}:{n}: lat/lon out of range")
            yield code, lat, lon


async def load(redis: Redis, rows: Iterable[tuple[str, float, float]]) -> int:
    """Upsert rows into the gazetteer; the number written."""
    count = 0
    batch: dict[str | bytes, str | bytes] = {}
    for code, lat, lon in rows:
        batch[code] = f"{lat},{lon}"
        count += 1
        if len(batch) >= 5000:
            await redis.hset(GAZETTEER, mapping=batch)  # type: ignore[arg-type]
            batch = {}
    if batch:
        await redis.hset(GAZETTEER, mapping=batch)  # type: ignore[arg-type]
    return count


async def lookup(redis: Redis, codes: list[str]) -> tuple[str, float, float] | None:
    """The first of the codes the gazetteer knows, with its coordinates."""
    if not codes:
        return None
    values = await redis.hmget(GAZETTEER, codes)
    for code, value in zip(codes, values, strict=True):
        if value:
            text = value.decode() if isinstance(value, bytes) else str(value)
            lat, lon = text.split(",")
            return code, float(lat), float(lon)
    return None
