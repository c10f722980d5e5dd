"""Offline batches and the card blacklist (CONTRACT.md "Offline records", COMPLIANCE 19, 20)."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from gateway.cards.losses import losses_of
from gateway.client import CampusPayClient, CampusPayError
from gateway.store.models import Card, OfflineRecord
from gateway.store.payments import PaymentRepository
from tests.bank_helpers import CARD, bind_co_branded_card
from tests.harness import Harness, start_harness
from tests.routing_helpers import configure_ecard, debits
from tests.signing_helpers import assert_problem, idempotency_rows, signed

pytestmark = pytest.mark.integration


def _record(
    h: Harness, seq: int, *, card: str = "31000001", amount: int = 800, **overrides: Any
) -> dict[str, Any]:
    body = {
        "terminal_seq": seq,
        "merchant_order_id": f"off-{seq}",
        "amount": amount,
        "currency": "CNY",
        "card_no": card,
        "store_id": h.store_id,
        "occurred_at": (datetime.now(UTC) - timedelta(minutes=30)).isoformat(),
    }
    body.update(overrides)
    return body


async def _upload(client: CampusPayClient, records: list[dict[str, Any]], key: str | None = None) -> Any:
    response = await client.request(
        "POST",
        "/v1/offline-batches",
        json={"records": records},
        idempotency_key=key or f"batch-{datetime.now(UTC).timestamp()}",
    )
    return response


async def test_records_are_posted_once_and_answered_one_by_one(harness: Harness) -> None:
    async with harness.client() as client:
        two = _record(harness, 2)
        records = [
            _record(harness, 1),
            two,
            _record(harness, 4, card="99999999"),
            {"terminal_seq": 5, "amount": "lots"},
            two,
        ]
        first = await _upload(client, records, key="b-1")
        assert first.status_code == 200, first.text
        body = first.json()
        by = [(r["terminal_seq"], r["status"], r.get("reason")) for r in body["results"]]
        assert (1, "posted", None) in by and (2, "posted", None) in by
        assert (2, "duplicate", None) in by  # the same sequence number twice in one batch
        assert (4, "rejected", "card_unknown") in by
        assert (5, "rejected", "invalid_record") in by
        assert {"from": 3, "to": 3} in body["gaps"]
        replay = await _upload(client, records, key="b-1")
        assert replay.headers.get("idempotent-replayed") == "true" and replay.content == first.content
        again = await _upload(client, [records[0], two], key="b-2")
        assert [r["status"] for r in again.json()["results"]] == ["duplicate", "duplicate"]
        posted = [r for r in body["results"] if r["status"] == "posted"]
        payment = await client.get_payment(posted[0]["payment_id"])
        assert payment["status"] == "succeeded" and payment["amount"] == 800
    assert await harness.balance("31000001") == 100_000 - 1600


async def test_a_card_lost_before_the_record_is_held_for_review(harness: Harness) -> None:
    base = f"/v1/schools/{harness.school_id}/cards"
    before = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    r = await harness.admin("POST", f"{base}/report-lost", {"card_no": "31000001"})
    assert r.status_code == 200 and r.json()["status"] == "lost", r.text
    after = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    async with harness.client() as client:
        refused = await client.create_payment(**harness.payment())
        assert refused.body["status"] == "failed" and refused.body["failure_code"] == "card_reported_lost"
        body = (
            await _upload(
                client, [_record(harness, 10, occurred_at=before), _record(harness, 11, occurred_at=after)]
            )
        ).json()
        results = {r["terminal_seq"]: r for r in body["results"]}
        assert results[10]["status"] == "posted"
        assert results[11]["status"] == "held_for_review"
        assert results[11]["reason"] == "card_lost_before_record"
        blacklist = await client.request("GET", "/v1/cards/blacklist", params={"since_version": 0})
        changes = blacklist.json()["changes"]
        assert any(c["card_no"] == "31000001" and c["status"] == "lost" for c in changes)
        latest = blacklist.json()["version"]
        quiet = await client.request("GET", "/v1/cards/blacklist", params={"since_version": latest})
        assert quiet.json()["changes"] == []
    r = await harness.admin("POST", f"{base}/cancel-loss", {"card_no": "31000001"})
    assert r.json()["status"] == "active"
    async with harness.client() as client:
        assert (await client.create_payment(**harness.payment())).body["status"] == "succeeded"


async def test_a_replacement_card_takes_over_the_account(harness: Harness) -> None:
    r = await harness.admin(
        "POST",
        f"/v1/schools/{harness.school_id}/cards/replace",
        {"old_card_no": "31000001", "new_card_no": "31009999"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["student_id"] == harness.cards["31000001"]
    async with harness.client() as client:
        new = await client.create_payment(**harness.payment(credential={"card_no": "31009999"}, amount=300))
        old = await client.create_payment(**harness.payment(credential={"card_no": "31000001"}, amount=300))
    assert new.body["status"] == "succeeded" and new.body["student"] == harness.cards["31000001"]
    assert old.body["failure_code"] == "card_reported_lost"


async def test_a_replacement_the_e_card_system_refuses_is_a_409_with_its_reason(harness: Harness) -> None:
    """Found by schemathesis: a verified refusal (the new number is already a card) was a 502
    `provider_check_failed`, which tells the admin to send it again, to the same refusal."""
    r = await harness.admin(
        "POST",
        f"/v1/schools/{harness.school_id}/cards/replace",
        {"old_card_no": "31000001", "new_card_no": "31000002"},
    )
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "provider_refused"
    assert "CARD_EXISTS" in r.json()["detail"]
    async with harness.client() as client:  # nothing changed: the old card still pays
        paid = await client.create_payment(**harness.payment(credential={"card_no": "31000001"}, amount=300))
    assert paid.body["status"] == "succeeded"


async def test_batches_over_500_records_are_refused_whole(harness: Harness) -> None:
    async with harness.client() as client:
        with pytest.raises(CampusPayError) as err:
            response = await _upload(client, [_record(harness, i) for i in range(501)])
            if response.status_code >= 400:
                raise CampusPayError.from_response(response)
    assert err.value.status in (413, 422)


async def test_one_order_is_charged_once_whatever_its_sequence_numbers(harness: Harness) -> None:
    async with harness.client() as client:
        online = await client.create_payment(**harness.payment(merchant_order_id="lunch-7", amount=500))
        assert online.body["status"] == "succeeded"
        body = (
            await _upload(
                client,
                [
                    _record(harness, 20, merchant_order_id="off-a"),
                    _record(harness, 21, merchant_order_id="off-a"),  # the same order again
                    _record(harness, 22, merchant_order_id="lunch-7"),  # an order paid online
                ],
            )
        ).json()
    by = [(r["index"], r["terminal_seq"], r["status"], r.get("reason")) for r in body["results"]]
    assert by == [
        (0, 20, "posted", None),
        (1, 21, "rejected", "duplicate_order"),
        (2, 22, "rejected", "duplicate_order"),
    ]
    assert [d["amount"] for d in await harness.debits()] == [500, 800]


async def test_a_rejected_record_is_charged_once_corrected(harness: Harness) -> None:
    async with harness.client() as client:
        wrong = _record(harness, 30, store_id="sto_nowhere")
        first = (await _upload(client, [wrong])).json()["results"]
        assert first[0]["status"] == "rejected" and first[0]["reason"] == "store_unknown"
        fixed = {**wrong, "store_id": harness.store_id}
        second = (await _upload(client, [fixed])).json()["results"]
        assert second[0]["status"] == "posted"
        third = (await _upload(client, [fixed])).json()["results"]
        assert third[0]["status"] == "duplicate" and third[0]["payment_id"] == second[0]["payment_id"]
        # the sequence number now belongs to that sale: another sale under it is refused
        other = (await _upload(client, [{**fixed, "amount": 999}])).json()["results"]
        assert other[0]["status"] == "rejected" and other[0]["reason"] == "sequence_reused"
    assert [d["amount"] for d in await harness.debits()] == [800]


async def test_malformed_records_are_answered_in_their_place(harness: Harness) -> None:
    async with harness.client() as client:
        body = (
            await _upload(client, [{"terminal_seq": 40, "amount": "lots"}, _record(harness, 41), {"x": 1}])
        ).json()
    statuses = [(r["index"], r["terminal_seq"], r["status"]) for r in body["results"]]
    assert statuses == [(0, 40, "rejected"), (1, 41, "posted"), (2, None, "rejected")]
    assert body["counts"] == {"posted": 1, "rejected": 2}


async def test_an_image_in_a_record_refuses_the_whole_batch_and_stores_nothing(harness: Harness) -> None:
    """COMPLIANCE rule 11 covers every device body (issue 7 A5): a record carrying an image (a
    JPEG's base64 where the order id goes) is not answered "invalid_record" beside posted ones;
    the batch is refused 422 before anything is looked at, and the same key then uploads."""
    assert harness.device is not None
    jpeg = base64.b64encode(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01" + bytes(range(256)) * 4).decode()
    records = [_record(harness, 60), _record(harness, 61, merchant_order_id=jpeg)]
    key = "batch-with-a-photo"
    request = signed(
        harness, harness.device, "POST", "/v1/offline-batches", body={"records": records}, idempotency_key=key
    )
    assert_problem(await harness.gateway.send(request), 422, "biometric_data_not_accepted")
    async with harness.services.db.transaction() as session:
        mine = select(OfflineRecord.id).where(OfflineRecord.device_id == harness.device.device_id)
        stored = (await session.execute(mine)).scalars().all()
    assert stored == [] and await idempotency_rows(harness, key) == 0
    assert await harness.debits() == []
    async with harness.client() as client:
        again = await _upload(client, [_record(harness, 60)], key=key)
    assert again.status_code == 200 and again.json()["results"][0]["status"] == "posted"


async def test_a_bank_funded_card_is_held_not_posted_to_the_ecard(harness: Harness) -> None:
    await bind_co_branded_card(harness)
    async with harness.client() as client:
        body = (await _upload(client, [_record(harness, 50, card=CARD)])).json()
    assert body["results"][0]["status"] == "held_for_review"
    assert body["results"][0]["reason"] == "funding_not_offline"
    assert await harness.debits() == []
    bank = await harness.sandbox.get("/_control/events", params={"provider": "bank", "kind": "bank.debit"})
    assert bank.json()["events"] == []


async def test_a_loss_report_blocks_the_card_even_when_the_ecard_does_not_answer(harness: Harness) -> None:
    base = f"/v1/schools/{harness.school_id}/cards"
    await harness.fault(operation="report_lost", action="error_500")
    r = await harness.admin("POST", f"{base}/report-lost", {"card_no": "31000001"})
    assert r.status_code == 502 and "blocked at the gateway" in r.json()["detail"]
    async with harness.client() as client:
        refused = await client.create_payment(**harness.payment())
        assert refused.body["failure_code"] == "card_reported_lost"
        assert await harness.debits() == []
        again = await harness.admin("POST", f"{base}/report-lost", {"card_no": "31000001"})  # now it answers
        assert again.status_code == 200 and again.json()["status"] == "lost"
        blacklist = await client.request("GET", "/v1/cards/blacklist", params={"since_version": 0})
    assert any(c["card_no"] == "31000001" and c["status"] == "lost" for c in blacklist.json()["changes"])


async def test_a_card_blocked_here_stays_blocked_whatever_history_is_replayed(harness: Harness) -> None:
    """A loss report the e-card did not confirm blocks the card at the gateway; a terminal reading
    the blacklist from version 0 replays older e-card history (lost, then found), which must not
    unblock it. And the card keeps the time it was first reported lost."""
    base = f"/v1/schools/{harness.school_id}/cards"
    card = {"card_no": "31000001"}
    assert (await harness.admin("POST", f"{base}/report-lost", card)).status_code == 200
    assert (await harness.admin("POST", f"{base}/cancel-loss", card)).json()["status"] == "active"
    await harness.fault(operation="report_lost", action="error_500")
    assert (await harness.admin("POST", f"{base}/report-lost", card)).status_code == 502
    first_reported = datetime.now(UTC)
    async with harness.client() as client:
        replay = await client.request("GET", "/v1/cards/blacklist", params={"since_version": 0})
        assert replay.status_code == 200
        refused = await client.create_payment(**harness.payment())
        assert refused.body["failure_code"] == "card_reported_lost"
        await asyncio.sleep(1.1)  # the e-card confirms a moment later, with its own, later time
        assert (await harness.admin("POST", f"{base}/report-lost", card)).json()["status"] == "lost"
        made = (first_reported + timedelta(milliseconds=500)).isoformat()
        body = (await _upload(client, [_record(harness, 60, occurred_at=made)])).json()
    assert body["results"][0]["status"] == "held_for_review"
    assert body["results"][0]["reason"] == "card_lost_before_record"
    assert await harness.debits() == []


async def test_a_card_of_a_second_ecard_merchant_is_reported_lost_there(harness: Harness) -> None:
    backup = await configure_ecard(harness, "ecard.backup")
    async with harness.services.db.transaction() as session:  # the school moved this card's account
        await session.execute(update(Card).where(Card.last4 == "0006").values(funding_adapter="ecard.backup"))
    cards = f"/v1/schools/{harness.school_id}/cards"
    r = await harness.admin("POST", f"{cards}/report-lost", {"card_no": "31000006"})
    assert r.status_code == 200 and r.json()["status"] == "lost"
    merchants = "/_control/ecard/merchants"
    at_backup = await harness.sandbox.get(f"{merchants}/{backup['merchant_id']}/cards/31000006")
    assert at_backup.json()["status"] == "LOST"  # offline terminals of that merchant learn it too
    at_main = await harness.sandbox.get(f"{merchants}/{harness.merchant_id}/cards/31000006")
    assert at_main.json()["status"] == "ACTIVE"


async def test_what_one_provider_posted_is_kept_when_another_fails(harness: Harness) -> None:
    """A batch spanning two e-card merchants: the first posts, the second cannot be reached
    with its settings. The first one's sale is recorded at once; the retry with the same key
    re-sends only the other, and every sale is charged exactly once."""
    nowhere = {"merchant_id": "M-NOPE", "secret": "x" * 32}
    backup = await configure_ecard(harness, "ecard.backup", merchant=nowhere)
    async with harness.services.db.transaction() as session:
        await session.execute(update(Card).where(Card.last4 == "0006").values(funding_adapter="ecard.backup"))
    records = [_record(harness, 70), _record(harness, 71, card="31000006", amount=650)]
    async with harness.client() as client:
        failed = await _upload(client, records, key="two-merchants")
        assert failed.status_code == 502, failed.text
        kept = await client.request("GET", "/v1/payments", params={"merchant_order_id": "off-70"})
        assert [p["status"] for p in kept.json()["data"]] == ["succeeded"]
        real = await configure_ecard(harness, "ecard.backup")  # the school fixes the settings
        done = (await _upload(client, records, key="two-merchants")).json()
    assert [(r["terminal_seq"], r["status"]) for r in done["results"]] == [(70, "duplicate"), (71, "posted")]
    assert done["results"][0]["payment_id"] == kept.json()["data"][0]["id"]
    assert [d["amount"] for d in await harness.debits()] == [800]
    assert [d["amount"] for d in await debits(harness, real["merchant_id"])] == [650]
    assert backup["merchant_id"] == "M-NOPE"


async def test_a_card_whose_provider_is_not_configured_refuses_the_batch_whole(harness: Harness) -> None:
    async with harness.services.db.transaction() as session:
        moved = update(Card).where(Card.last4 == "0006").values(funding_adapter="ecard.nowhere")
        await session.execute(moved)
    async with harness.client() as client:
        records = [_record(harness, 80), _record(harness, 81, card="31000006")]
        refused = await _upload(client, records, key="not-configured")
        assert refused.status_code == 422 and refused.json()["code"] == "provider_not_configured"
        kept = await client.request("GET", "/v1/payments", params={"merchant_order_id": "off-80"})
    assert kept.json()["data"] == [] and await harness.debits() == []


async def test_two_batches_sent_at_once_charge_one_order_once(harness: Harness) -> None:
    """Other keys and sequence numbers, one order: uploads of one device run one at a time, so
    the second sees the first's sale and is refused before anything is sent."""
    async with harness.client() as client:
        first, second = await asyncio.gather(
            _upload(client, [_record(harness, 90, merchant_order_id="same-order")], key="at-once-1"),
            _upload(client, [_record(harness, 91, merchant_order_id="same-order")], key="at-once-2"),
        )
    answers = sorted(
        (r.json()["results"][0]["status"], r.json()["results"][0].get("reason")) for r in (first, second)
    )
    assert answers == [("posted", None), ("rejected", "duplicate_order")]
    assert [d["amount"] for d in await harness.debits()] == [800]


async def test_an_order_held_offline_is_not_charged_again_online(harness: Harness) -> None:
    await bind_co_branded_card(harness)
    async with harness.client() as client:
        held = (await _upload(client, [_record(harness, 95, card=CARD, merchant_order_id="t-95")])).json()
        assert held["results"][0]["status"] == "held_for_review"
        online = harness.payment(merchant_order_id="t-95", credential={"card_no": CARD})
        with pytest.raises(CampusPayError) as err:
            await client.create_payment(**online)
    assert err.value.code == "duplicate_order"
    bank = await harness.sandbox.get("/_control/events", params={"provider": "bank", "kind": "bank.debit"})
    assert bank.json()["events"] == []


# -- the sale time is the terminal's word: bounded, and kept apart from the posting time ------


async def _signed_upload(h: Harness, records: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """An upload signed on the gateway's clock (which these tests move), not the host's."""
    assert h.device is not None
    request = signed(
        h, h.device, "POST", "/v1/offline-batches", body={"records": records}, idempotency_key=key
    )
    response = await h.gateway.send(request)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _at(moment: datetime) -> str:
    return moment.isoformat()


async def test_a_back_dated_record_is_held_not_charged_to_a_card_lost_since(harness: Harness) -> None:
    """A record dated two years ago, made (by its own word) before the card's loss report, is not
    posted on that word: past the offline window it is held for review, as is one dated beyond
    the signature skew in the future. Inside the window the record still posts."""
    harness.clock.freeze()
    now = harness.clock()
    lost = await harness.admin(
        "POST", f"/v1/schools/{harness.school_id}/cards/report-lost", {"card_no": "31000001"}
    )
    assert lost.status_code == 200, lost.text
    window = timedelta(hours=harness.settings.offline_max_age_hours)
    assert window == timedelta(hours=72)  # the documented default
    records = [
        _record(harness, 100, occurred_at=_at(now - timedelta(days=730))),
        _record(harness, 101, card="31000004", occurred_at=_at(now - window - timedelta(seconds=1))),
        _record(harness, 102, card="31000004", occurred_at=_at(now - window + timedelta(minutes=1))),
        _record(harness, 103, card="31000004", occurred_at=_at(now + timedelta(seconds=301))),
        _record(harness, 104, card="31000004", occurred_at=_at(now + timedelta(seconds=299))),
    ]
    async with harness.client() as client:
        body = (await _upload(client, records)).json()
    by = {r["terminal_seq"]: (r["status"], r.get("reason")) for r in body["results"]}
    assert by == {
        100: ("held_for_review", "too_old"),
        101: ("held_for_review", "too_old"),
        102: ("posted", None),
        103: ("held_for_review", "occurred_in_future"),
        104: ("posted", None),
    }
    assert await harness.balance("31000001") == 100_000  # the lost card was not charged
    assert sorted(d["amount"] for d in await harness.debits()) == [800, 800]


async def test_the_offline_window_is_configurable(tmp_path: Path) -> None:
    async with start_harness(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        data_dir=tmp_path,
        offline_max_age_hours=1,
    ) as h:
        now = datetime.now(UTC)
        records = [
            _record(h, 1, occurred_at=_at(now - timedelta(minutes=90))),
            _record(h, 2, occurred_at=_at(now - timedelta(minutes=30))),
        ]
        async with h.client() as client:
            body = (await _upload(client, records)).json()
    assert [(r["status"], r.get("reason")) for r in body["results"]] == [
        ("held_for_review", "too_old"),
        ("posted", None),
    ]


async def test_every_loss_report_counts_lost_found_and_lost_again(harness: Harness) -> None:
    """Lost (blocked at the gateway; the e-card did not confirm), found, lost again. A record made
    during the first loss is held although the card was found since and the e-card system never
    heard of that loss; one made while the card was found posts; one after the second loss is
    held."""
    cards = f"/v1/schools/{harness.school_id}/cards"
    card = {"card_no": "31000001"}
    harness.clock.freeze()
    start = harness.clock()
    harness.clock.advance(hours=-3)
    await harness.fault(operation="report_lost", action="error_500")
    assert (await harness.admin("POST", f"{cards}/report-lost", card)).status_code == 502  # blocked here
    harness.clock.advance(hours=1)
    assert (await harness.admin("POST", f"{cards}/cancel-loss", card)).json()["status"] == "active"
    harness.clock.advance(hours=1)
    assert (await harness.admin("POST", f"{cards}/report-lost", card)).json()["status"] == "lost"
    harness.clock.advance(hours=1)
    body = await _signed_upload(
        harness,
        [
            _record(harness, 110, occurred_at=_at(start - timedelta(hours=2, minutes=30))),  # first loss
            _record(
                harness, 111, amount=650, occurred_at=_at(start - timedelta(hours=1, minutes=30))
            ),  # found
            _record(harness, 112, occurred_at=_at(start - timedelta(minutes=30))),  # lost again
        ],
        key="lost-found-lost",
    )
    by = {r["terminal_seq"]: (r["status"], r.get("reason")) for r in body["results"]}
    assert by == {
        110: ("held_for_review", "card_lost_before_record"),
        111: ("posted", None),
        112: ("held_for_review", "card_lost_before_record"),
    }
    assert [d["amount"] for d in await harness.debits()] == [650]
    card_id = await _card_id(harness, "0001")
    async with harness.services.db.transaction(readonly=True) as session:
        periods = await losses_of(session, [card_id])
    [history] = periods.values()
    assert [(lost - start, found and found - start) for lost, found in history] == [
        (timedelta(hours=-3), timedelta(hours=-2)),
        (timedelta(hours=-1), None),
    ]


async def _card_id(h: Harness, last4: str) -> str:
    async with h.services.db.transaction() as session:
        card_id = await session.scalar(
            select(Card.id).where(Card.school_id == h.school_id, Card.last4 == last4)
        )
    assert card_id is not None
    return str(card_id)


async def test_a_posted_record_is_taken_now_and_sold_then(harness: Harness) -> None:
    """``created_at`` is the posting time (today's cancel window), ``occurred_at`` the sale time."""
    harness.clock.freeze()
    now = harness.clock()
    sold = now - timedelta(hours=30)  # always an earlier day in the store's time zone
    async with harness.client() as client:
        body = (await _upload(client, [_record(harness, 120, occurred_at=_at(sold))])).json()
        [result] = body["results"]
        assert result["status"] == "posted", result
        payment = await client.get_payment(result["payment_id"])
        assert datetime.fromisoformat(payment["occurred_at"]) == sold
        assert datetime.fromisoformat(payment["created_at"]) == now
        listed = await client.request("GET", "/v1/payments", params={"merchant_order_id": "off-120"})
        assert listed.json()["data"][0]["occurred_at"] == payment["occurred_at"]
        online = await client.create_payment(**harness.payment())
        assert online.body["occurred_at"] == online.body["created_at"]
        canceled = await client.cancel_payment(result["payment_id"])  # posted today: cancelable today
    assert canceled.status_code == 200 and canceled.body["status"] == "canceled"
    assert await harness.balance("31000001") == 100_000 - 1250


async def test_limits_count_an_offline_record_on_its_sale_day(harness: Harness) -> None:
    """What guardians' limits count (COMPLIANCE 15): a record posted today for yesterday's sale
    is yesterday's spending, not today's."""
    harness.clock.freeze()
    now = harness.clock()
    zone = ZoneInfo("Asia/Shanghai")  # the harness store's time zone
    today = datetime.combine(now.astimezone(zone).date(), time.min, tzinfo=zone)
    yesterday_noon = today - timedelta(hours=12)
    async with harness.client() as client:
        body = (await _upload(client, [_record(harness, 130, occurred_at=_at(yesterday_noon))])).json()
        assert body["results"][0]["status"] == "posted"
        assert (await client.create_payment(**harness.payment(amount=300))).body["status"] == "succeeded"
    student = harness.cards["31000001"]
    async with harness.services.db.transaction() as session:
        repo = PaymentRepository(session, harness.clock)
        assert await repo.spent(student, today, today + timedelta(days=1)) == 300
        assert await repo.spent(student, today - timedelta(days=1), today) == 800
