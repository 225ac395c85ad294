"""The router's index follows the registry at once: an alert after a 201 sees that change."""

from __future__ import annotations

import fakeredis
import pytest

from shared.geo import geometry_from_geojson, to_wkb_hex
from shared.index_cache import IndexCache
from shared.registry import Registry
from shared.schemas import GroupIn

pytestmark = pytest.mark.unit

SQUARE = {"type": "Polygon", "coordinates": [[[5, 51], [5.1, 51], [5.1, 51.1], [5, 51.1], [5, 51]]]}


async def test_group_added_is_seen_by_the_very_next_lookup() -> None:
    registry = Registry(fakeredis.FakeAsyncRedis(decode_responses=True))
    cache = IndexCache(registry)
    assert (await cache.get()).match(5.05, 51.05) == ([], [])
    await registry.put_group(GroupIn(id="g", name="g", geometry=SQUARE),
                             to_wkb_hex(geometry_from_geojson(SQUARE)))
    assert (await cache.get()).match(5.05, 51.05) == ([], ["g"])
    first = await cache.get()
    assert await cache.get() is first  # unchanged registry: no rebuild
