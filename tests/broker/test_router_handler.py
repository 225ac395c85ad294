"""Router handler in FastStream's in-memory TestNatsBroker (acks off: fast handler tests only)."""

from __future__ import annotations

from datetime import UTC, datetime

import fakeredis
import pytest
from faststream.nats import JStream, NatsMessage, TestNatsBroker
from shapely.geometry import box

from services.router import handlers
from services.router.expiry import ExpiryScheduler
from shared import subjects
from shared.broker import create_runtime
from shared.geo import to_wkb_hex
from shared.registry import StoredArea, StoredGroup
from shared.routing_index import RoutingIndex
from shared.schemas import AlertReceived, AlertRouted, Location
from shared.settings import RouterSettings

pytestmark = pytest.mark.broker


class FixedIndex:
    def __init__(self, index: RoutingIndex) -> None:
        self.index = index

    async def get(self) -> RoutingIndex:
        return self.index


def make_index() -> RoutingIndex:
    areas = [StoredArea("BU1", "Noord", to_wkb_hex(box(5.0, 51.0, 5.1, 51.1))),
             StoredArea("BU2", "Zuid", to_wkb_hex(box(5.0, 50.9, 5.1, 51.0)))]
    groups = [StoredGroup("g-noord", "Noord", ("BU1",), "", 18),
              StoredGroup("g-eigen", "Eigen", (), to_wkb_hex(box(5.04, 51.04, 5.06, 51.06)), 18)]
    return RoutingIndex.build(areas, groups, version=1)


def received(lat: float, lon: float) -> AlertReceived:
    return AlertReceived(alert_id="a-1", kind="report", channel="web", text="Inbraak",
                         location=Location(lat=lat, lon=lon), called_112=True,
                         received_at=datetime(2026, 11, 22, tzinfo=UTC))


@pytest.mark.parametrize(
    ("lat", "lon", "areas", "groups"),
    [(51.05, 5.05, ["BU1"], ["g-eigen", "g-noord"]),
     (51.02, 5.02, ["BU1"], ["g-noord"]),
     (50.95, 5.05, ["BU2"], []),
     (52.5, 6.0, [], [])],
)
async def test_router_publishes_routed_event(
    lat: float, lon: float, areas: list[str], groups: list[str]
) -> None:
    settings = RouterSettings(_env_file=None, incident_radius_m=0)  # incidents: own test
    runtime = create_runtime("router", settings)
    runtime.redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    # Not started: no schedules in the in-memory broker (reports carry no expiry anyway).
    expiry = ExpiryScheduler(settings.nats_servers, settings.stream_name)
    handlers.register(runtime, settings, FixedIndex(make_index()), expiry)
    published: list[AlertRouted] = []

    @runtime.broker.subscriber(subjects.ROUTED, stream=JStream(settings.stream_name, declare=False))
    async def capture(msg: NatsMessage) -> None:
        published.append(AlertRouted.model_validate_json(msg.body))

    async with TestNatsBroker(runtime.broker) as br:
        await br.publish(received(lat, lon).model_dump_json().encode(),
                         subjects.received("web"), stream=settings.stream_name)
    assert len(published) == 1
    assert published[0].area_ids == areas
    assert [t.group_id for t in published[0].targets] == groups
    assert published[0].alert.alert_id == "a-1"
