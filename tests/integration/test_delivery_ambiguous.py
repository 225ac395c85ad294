"""A provider that takes the message but answers too late: the person must still get it once.

Found by the fault suite (tests/fault): under load some Twilio requests outlived the notifier's
provider timeout after the stub had accepted them; the notifier counted that as a transient
failure, released its in-flight marker and sent the SMS again (4 people got an alert twice).
Now the marker stays and the receipt decides, as for a stopped notifier's request.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.test_delivery import (
    TWILIO_TOKEN,
    WA_SECRET,
    notice,
    outcomes,
    reach,
    received_for,
)
from tests.integration.test_end_to_end import SQUARE, wait_for
from tests.providers import RemoteStubs, StubsConfig, TwilioConfig, WhatsAppConfig, spawn_stubs
from tests.servers import System

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MEMBERS = ("+31612340001", "+31612340002", "+31612340003")
UNANSWERED = "no answer from the provider"


@pytest.fixture
def stubs() -> Iterator[RemoteStubs]:
    config = StubsConfig(
        twilio=TwilioConfig(auth_token=TWILIO_TOKEN, per_second=50),
        whatsapp=WhatsAppConfig(per_second=80, app_secret=WA_SECRET),
    )
    with spawn_stubs(config) as running:
        yield running


@pytest.mark.parametrize(
    ("receipts", "grace_s", "outcome", "detail"),
    [
        (True, "60", "delivered", f"{UNANSWERED}; confirmed by the provider's receipt"),
        # No receipt can ever tell (grace 0): recorded as unknown, never sent twice.
        (False, "0", "unconfirmed", UNANSWERED),
    ],
)
def test_sms_answered_after_the_timeout_is_not_sent_again(
    system: System, stubs: RemoteStubs, receipts: bool, grace_s: str, outcome: str, detail: str
) -> None:
    system.env()
    edge = system.url("ingest")
    system.extra_env.update(stubs.env())
    system.extra_env.update(
        {
            "BUURTALERT_PUBLIC_URL": edge,
            "BUURTALERT_TWILIO_PER_SECOND": "50",
            "BUURTALERT_PROVIDER_TIMEOUT_S": "1",
            "BUURTALERT_RETRY_BASE_S": "0.2",
            "BUURTALERT_MAX_SEND_ATTEMPTS": "3",
            "BUURTALERT_ACK_WAIT_S": "5",
            "BUURTALERT_RECEIPT_GRACE_S": grace_s,
        }
    )
    # Twilio accepts (and posts its receipts 50 ms later, when on) but answers after 1.5 s:
    # past the notifier's 1 s timeout. The message is with the provider.
    stubs.configure("sms", latency_s=1.5, status_callbacks=receipts)
    system.start_all()
    client, admin = system.client(), system.admin_headers()
    assert (
        client.post(
            "/v1/groups", headers=admin, json={"id": "stein", "name": "Stein", "geometry": SQUARE}
        ).status_code
        == 201
    )
    for number in MEMBERS:
        resp = client.post(
            "/v1/groups/stein/members", headers=admin, json={"channel": "sms", "address": number}
        )
        assert resp.status_code == 201, resp.text
    alert_id = notice(client, system, "Vermist: vrouw (70), rode fiets")
    wait_for(
        lambda: reach(client, system, alert_id),
        lambda r: r.get("pending") == 0 and r.get("planned") == len(MEMBERS),
        timeout_s=90,
    )
    got = received_for(stubs, "vrouw (70)")
    recorded = {o["recipient"]: o["outcome"] for o in outcomes(client, system, alert_id)}
    print(f"messages per person {dict(got)}; outcomes {recorded}")
    assert len(got) == len(MEMBERS)
    assert set(got.values()) == {1}, f"sent more than once: {dict(got)}"
    assert set(recorded.values()) == {outcome}, recorded
    assert {o["detail"] for o in outcomes(client, system, alert_id)} == {detail}
    client.close()
