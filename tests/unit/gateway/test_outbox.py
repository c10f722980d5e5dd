"""The outbox's own rules: known types only, thin payloads, the resource an event is about."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.webhooks.outbox import emit, resource_id


def test_each_event_names_its_resource_or_itself() -> None:
    session = AsyncSession()  # unbound: emit only adds the row to the session
    paid = emit(session, school_id="sch_1", event_type="payment.succeeded", data={"payment_id": "pay_1"})
    refund = emit(
        session,
        school_id="sch_1",
        event_type="refund.failed",
        data={"refund_id": "ref_1", "payment_id": "pay_1"},
    )
    notice = emit(
        session, school_id="sch_1", event_type="guardian.notification", data={"kind": "low_balance"}
    )
    assert (paid.resource_id, refund.resource_id) == ("pay_1", "ref_1")
    assert notice.resource_id == notice.id  # a one-off notice is its own resource: version 1
    assert paid.resource_version is None  # the relay numbers it, after commit
    assert resource_id("webhook_endpoint.disabled", {"endpoint_id": "whe_1"}) == "whe_1"
    assert resource_id("consent.withdrawn", {"consent_id": 7}) is None


@pytest.mark.parametrize(
    "data",
    [
        {"payment_id": "pay_1", "card_no": "31000001"},
        {"student": "stu_1", "student_name": "Li Lei"},
        {"payment_id": "pay_1", "face_token": "fp123"},
        {"nested": {"items": [{"guardian": "grd_1", "email": "a@b.c"}]}},
    ],
)
def test_a_payload_that_is_not_thin_is_refused(data: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="ids and codes"):
        emit(AsyncSession(), school_id="sch_1", event_type="payment.succeeded", data=data)


def test_an_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        emit(AsyncSession(), school_id="sch_1", event_type="payment.exploded", data={})
