"""Postcodes in resident texts, and the operator's gazetteer file."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest

from shared import gazetteer

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Inbraak bij 6171 AB nu", ["6171AB", "6171"]),
     ("inbraak 6171ab", ["6171AB", "6171"]),
     ("rond 6171 gezien", ["6171"]),
     ("om 0930 uur", []),
     ("1234 SA", ["1234"]),  # SA, SD and SS are never used as postcode letters
     ("geen postcode", [])],
)
def test_find_postcodes(text: str, expected: list[str]) -> None:
    assert gazetteer.find_postcodes(text) == expected


async def test_load_and_lookup_prefers_the_precise_code(tmp_path: Path) -> None:
    path = tmp_path / "pc.csv"
    path.write_text("postcode,lat,lon\n6171 AB,50.97,5.77\n6171,50.96,5.76\n")
    redis = fakeredis.FakeAsyncRedis()
    assert await gazetteer.load(redis, gazetteer.read_csv(path)) == 2
    assert await gazetteer.lookup(redis, ["6171AB", "6171"]) == ("6171AB", 50.97, 5.77)
    assert await gazetteer.lookup(redis, ["6171XY", "6171"]) == ("6171", 50.96, 5.76)
    assert await gazetteer.lookup(redis, ["9999"]) is None


@pytest.mark.parametrize("content", ["pc,lat,lon\n6171,1,2\n", "postcode,lat,lon\n6171,x,2\n",
                                     "postcode,lat,lon\n6171,95,2\n"])
def test_bad_gazetteer_rows_are_named(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=r"bad\.csv:2"):
        list(gazetteer.read_csv(path))


async def test_addresses_in_text_resolve_with_the_place_named(tmp_path: Path) -> None:
    path = tmp_path / "adressen.csv"
    path.write_text("street,number,city,lat,lon\n"
                    "Kerkstraat,12,Stein,50.97,5.77\n"
                    "Kerkstraat,12,Eersel,51.36,5.32\n"
                    "Burg. de Withstraat,3a,Stein,50.96,5.76\n")
    redis = fakeredis.FakeAsyncRedis()
    assert await gazetteer.load(redis, gazetteer.read_csv(path)) == 3
    assert await gazetteer.lookup_address(redis, "Inbraak bij Kerkstraat 12 in Eersel") == (
        "kerkstraat 12", 51.36, 5.32)
    assert await gazetteer.lookup_address(redis, "inbraak kerkstraat 12") == (
        "kerkstraat 12", 50.97, 5.77)
    assert await gazetteer.lookup_address(redis, "man loopt bij Burg. de Withstraat 3a rond") == (
        "burg. de withstraat 3a", 50.96, 5.76)
    assert await gazetteer.lookup_address(redis, "Dorpsstraat 1") is None
    assert await gazetteer.lookup_address(redis, "geen adres") is None
