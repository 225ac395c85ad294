"""A local gazetteer: Dutch postcodes and addresses to coordinates, loaded by the operator.

No online geocoder is ever called. Stored in one Redis hash `ba:gazetteer`:
  PC6 ("1234AB") or PC4 ("1234")        -> "lat,lon"
  "a:<street> <number>" (lower case)    -> "lat,lon|city;lat,lon|city;..." (one street name
                                           can exist in several places)
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


# "Kerkstraat 12", "Burg. de Withstraat 3a": a name of letters, then a house number.
_ADDRESS = re.compile(r"([A-Za-zÀ-ÿ][A-Za-zÀ-ÿ.'\- ]{1,60}?)\s+(\d{1,5}[a-zA-Z]?)\b")


def address_key(street: str, number: str) -> str:
    """Gazetteer field of one street address."""
    return "a:" + " ".join(f"{street} {number}".lower().split())


def find_addresses(text: str) -> list[str]:
    """Candidate address keys in a text, each ending street name tried at every word start."""
    keys: list[str] = []
    for match in _ADDRESS.finditer(text):
        words = match.group(1).split()
        # "inbraak bij kerkstraat 12": the street is some tail of the words before the number.
        for start in range(len(words)):
            keys.append(address_key(" ".join(words[start:]), match.group(2)))
    return keys


def read_csv(path: Path) -> Iterator[tuple[str, float, float]]:
    """Rows of a CSV: postcode,lat,lon or street,number,city,lat,lon (header required)."""
    with path.open(newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            try:
                lat, lon = float(row["lat"]), float(row["lon"])
                if row.get("postcode"):
                    code = row["postcode"].replace(" ", "").upper()
                else:
                    code = address_key(row["street"], row["number"]) + "|" + row["city"]
            except (KeyError, ValueError, AttributeError, TypeError) as exc:
                raise ValueError(
                    f"{path}:{n}: need columns postcode,lat,lon or street,number,city,lat,lon"
                ) from exc
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise ValueError(f"{path}:{n}: lat/lon out of range")
            yield code, lat, lon


async def load(redis: Redis, rows: Iterable[tuple[str, float, float]]) -> int:
    """Upsert rows into the gazetteer; the number written."""
    count = 0
    batch: dict[str | bytes, str | bytes] = {}
    places: dict[str, list[str]] = {}
    for code, lat, lon in rows:
        count += 1
        if code.startswith("a:"):
            key, _, city = code.partition("|")
            places.setdefault(key, []).append(f"{lat},{lon}|{city.strip().lower()}")
            continue
        batch[code] = f"{lat},{lon}"
        if len(batch) >= 5000:
            await redis.hset(GAZETTEER, mapping=batch)  # type: ignore[arg-type]
            batch = {}
    batch.update({key: ";".join(values) for key, values in places.items()})
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


async def lookup_address(redis: Redis, text: str) -> tuple[str, float, float] | None:
    """The first known street address in a text; where the street exists in several places,
    the one whose place name the text mentions (else the first loaded)."""
    keys = find_addresses(text)
    if not keys:
        return None
    values = await redis.hmget(GAZETTEER, keys)
    lowered = text.lower()
    for key, value in zip(keys, values, strict=True):
        if not value:
            continue
        raw = value.decode() if isinstance(value, bytes) else str(value)
        options = [o.split("|", 1) for o in raw.split(";")]
        chosen = next((o for o in options if len(o) == 2 and o[1] and o[1] in lowered), options[0])
        lat, lon = chosen[0].split(",")
        return key[2:], float(lat), float(lon)
    return None
