"""The sandbox e-card in depth against docs/ecard-protocol.md: subsidy wallet, PIN thresholds,
meal periods, loss report / cancel / replacement / blacklist, offline records."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from .ecard_client import Ecard, balance, events

pytestmark = pytest.mark.unit

CTRL = "/_control/ecard/merchants/m_test"
SHANGHAI = timezone(timedelta(hours=8))
GRACE, HENRY, IVY, JACK = "31000007", "31000008", "31000009", "31000010"


async def card(client: httpx.AsyncClient, card_no: str) -> dict[str, Any]:
    response = await client.get(f"{CTRL}/cards/{card_no}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def ok(response: httpx.Response, ecard: Ecard) -> dict[str, Any]:
    assert response.status_code == 200 and ecard.response_verifies(response), response.text
    body: dict[str, Any] = response.json()
    assert body["result"] == "SUCCESS", body
    return body


async def code_of(response: httpx.Response, ecard: Ecard) -> str:
    assert ecard.response_verifies(response), response.text
    assert response.json()["result"] == "FAIL", response.text
    code: str = response.json()["code"]
    return code


async def set_periods(client: httpx.AsyncClient, periods: list[dict[str, str]]) -> None:
    response = await client.put(f"{CTRL}/meal-periods", json={"periods": periods})
    assert response.status_code == 200, response.text


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# A fixed moment in the recent past, so the same record built twice is identical.
EARLIER = iso(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5))


def record(seq: int, card_no: str = "31000001", amount: int = 300, **extra: Any) -> dict[str, Any]:
    body = {
        "terminal_seq": seq,
        "order_ref": f"off_{seq}",
        "card_no": card_no,
        "amount": amount,
        "occurred_at": EARLIER,
    }
    return {**body, **extra}


async def upload(ecard: Ecard, records: list[Any], terminal_id: str = "pos-7") -> list[dict[str, Any]]:
    body = await ok(
        await ecard.post("offline/upload", {"terminal_id": terminal_id, "records": records}), ecard
    )
    assert body["terminal_id"] == terminal_id
    results: list[dict[str, Any]] = body["results"]
    assert [r["index"] for r in results] == list(range(len(records)))
    return results


# --- subsidy wallet ---------------------------------------------------------------------------


async def test_the_subsidy_is_spent_before_the_balance(ecard: Ecard) -> None:
    first = await ok(await ecard.consume("ord_s1", 2000, GRACE), ecard)
    assert (first["subsidy_used"], first["balance_used"]) == (2000, 0)
    assert (first["subsidy_after"], first["balance_after"]) == (1000, 10_000)
    second = await ok(await ecard.consume("ord_s2", 2500, GRACE), ecard)
    assert (second["subsidy_used"], second["balance_used"]) == (1000, 1500)
    assert (second["subsidy_after"], second["balance_after"]) == (0, 8500)
    debits = await events(ecard.client, kind="ecard.debit")
    assert [d["subsidy_used"] for d in debits] == [2000, 1000]
    # A card without a wallet: everything from the balance, and the answer says so.
    plain = await ok(await ecard.consume("ord_s3", 100), ecard)
    assert (plain["subsidy_used"], plain["balance_used"], plain["subsidy_after"]) == (0, 100, 0)


async def test_subsidy_plus_balance_is_what_can_be_spent(ecard: Ecard) -> None:
    assert await code_of(await ecard.consume("ord_x", 13_001, GRACE), ecard) == "INSUFFICIENT_BALANCE"
    exact = await ok(await ecard.consume("ord_y", 13_000, GRACE), ecard)
    assert (exact["subsidy_used"], exact["balance_used"], exact["balance_after"]) == (3000, 10_000, 0)


async def test_an_expired_subsidy_is_never_spent(ecard: Ecard) -> None:
    paid = await ok(await ecard.consume("ord_e", 100, HENRY), ecard)
    assert (paid["subsidy_used"], paid["balance_used"], paid["subsidy_after"]) == (0, 100, 5000)
    assert await code_of(await ecard.consume("ord_e2", 19_901, HENRY), ecard) == "INSUFFICIENT_BALANCE"
    info = await ok(await ecard.call("GET", f"/v1/cards/{HENRY}"), ecard)
    assert info["subsidy"] == {"amount": 5000, "valid_from": "2020-09-01", "valid_to": "2021-01-31"}


async def test_refunds_and_reverse_restore_the_subsidy_part_first(ecard: Ecard) -> None:
    await ok(await ecard.consume("ord_r", 4000, GRACE), ecard)  # 3000 subsidy + 1000 balance
    refund = await ok(
        await ecard.post("refund", {"order_ref": "ord_r", "refund_ref": "rf_1", "amount": 1000}), ecard
    )
    assert (refund["subsidy_restored"], refund["balance_restored"], refund["subsidy_forfeited"]) == (
        1000,
        0,
        0,
    )
    assert (refund["subsidy_after"], refund["balance_after"]) == (1000, 9000)
    first = await ok(await ecard.post("reverse", {"order_ref": "ord_r"}), ecard)
    assert first["reversed_amount"] == 3000
    assert (first["subsidy_restored"], first["balance_restored"], first["subsidy_forfeited"]) == (
        2000,
        1000,
        0,
    )
    again = await ok(await ecard.post("reverse", {"order_ref": "ord_r"}), ecard)
    assert again == first  # idempotent, nothing moves twice
    info = await card(ecard.client, GRACE)
    assert (info["subsidy"], info["balance"]) == (3000, 10_000)


async def test_the_subsidy_part_of_a_refund_is_forfeited_once_the_wallet_expired(ecard: Ecard) -> None:
    await ok(await ecard.consume("ord_f", 2500, GRACE), ecard)  # 2500 subsidy, 0 balance
    expired = {"amount": 500, "valid_from": "2020-01-01", "valid_to": "2020-12-31"}
    assert (await ecard.client.put(f"{CTRL}/accounts/A1007/subsidy", json=expired)).status_code == 200
    refund = await ok(
        await ecard.post("refund", {"order_ref": "ord_f", "refund_ref": "rf_f", "amount": 2000}), ecard
    )
    assert (refund["subsidy_restored"], refund["balance_restored"], refund["subsidy_forfeited"]) == (
        0,
        0,
        2000,
    )
    reverse = await ok(await ecard.post("reverse", {"order_ref": "ord_f"}), ecard)
    assert (reverse["subsidy_forfeited"], reverse["balance_restored"]) == (500, 0)
    info = await card(ecard.client, GRACE)
    assert (info["subsidy"], info["balance"]) == (500, 10_000)  # no subsidy turned into cash
    query = await ok(await ecard.post("query", {"order_ref": "ord_f"}), ecard)
    assert (query["status"], query["refunded_amount"]) == ("REVERSED", 2500)


async def test_control_refuses_a_bad_subsidy(client: httpx.AsyncClient) -> None:
    bad = {"amount": 1, "valid_from": "2021-01-01", "valid_to": "2020-01-01"}
    assert (await client.put(f"{CTRL}/accounts/A1007/subsidy", json=bad)).status_code == 422
    ok_body = {"amount": 1, "valid_from": "2020-01-01", "valid_to": "2020-01-01"}
    assert (await client.put(f"{CTRL}/accounts/NOPE/subsidy", json=ok_body)).status_code == 404


# --- PIN thresholds ---------------------------------------------------------------------------


async def test_over_the_per_payment_threshold_the_pin_is_required(ecard: Ecard) -> None:
    await ok(await ecard.consume("ord_p1", 2000, IVY), ecard)  # at the threshold: no PIN
    assert await code_of(await ecard.consume("ord_p2", 2001, IVY), ecard) == "PIN_REQUIRED"
    # The refusal is stored under its order_ref; the terminal's next attempt uses a new one.
    assert await code_of(await ecard.consume("ord_p2", 2001, IVY, pin="8642"), ecard) == "PIN_REQUIRED"
    await ok(await ecard.consume("ord_p3", 2001, IVY, pin="8642"), ecard)
    assert await balance(ecard.client, IVY) == 50_000 - 4001


async def test_the_daily_threshold_counts_todays_payments(ecard: Ecard) -> None:
    await ok(await ecard.consume("ord_d1", 2000, IVY), ecard)
    await ok(await ecard.consume("ord_d2", 2000, IVY), ecard)
    assert await code_of(await ecard.consume("ord_d3", 1001, IVY), ecard) == "PIN_REQUIRED"
    await ok(await ecard.consume("ord_d4", 1000, IVY), ecard)  # exactly 5000 today
    assert await code_of(await ecard.consume("ord_d5", 1, IVY), ecard) == "PIN_REQUIRED"
    # A partial refund does not lower today's spending; a reverse does.
    await ok(await ecard.post("refund", {"order_ref": "ord_d1", "refund_ref": "rf_d", "amount": 1000}), ecard)
    assert await code_of(await ecard.consume("ord_d6", 1, IVY), ecard) == "PIN_REQUIRED"
    await ok(await ecard.post("reverse", {"order_ref": "ord_d2"}), ecard)
    await ok(await ecard.consume("ord_d7", 2000, IVY), ecard)


async def test_accounts_without_thresholds_never_need_a_pin(ecard: Ecard) -> None:
    await ok(await ecard.consume("ord_n", 19_000, "31000004"), ecard)


async def test_three_wrong_pins_lock_it_and_a_right_pin_resets_the_count(ecard: Ecard) -> None:
    assert await code_of(await ecard.consume("ord_w1", 2500, IVY, pin="0000"), ecard) == "PIN_INVALID"
    assert await code_of(await ecard.consume("ord_w2", 2500, IVY, pin="0000"), ecard) == "PIN_INVALID"
    await ok(await ecard.consume("ord_w3", 2500, IVY, pin="8642"), ecard)  # resets the counter
    assert (await card(ecard.client, IVY))["pin_failures"] == 0
    assert await code_of(await ecard.consume("ord_w4", 100, IVY, pin="1111"), ecard) == "PIN_INVALID"
    assert await code_of(await ecard.consume("ord_w5", 100, IVY, pin="1111"), ecard) == "PIN_INVALID"
    assert await code_of(await ecard.consume("ord_w6", 100, IVY, pin="1111"), ecard) == "PIN_LOCKED"
    assert await code_of(await ecard.consume("ord_w7", 2500, IVY, pin="8642"), ecard) == "PIN_LOCKED"
    assert await code_of(await ecard.consume("ord_w8", 2500, IVY), ecard) == "PIN_LOCKED"  # needs one
    await ok(await ecard.consume("ord_w9", 100, IVY), ecard)  # under the thresholds, no PIN: pays
    info = await ok(await ecard.call("GET", f"/v1/cards/{IVY}"), ecard)
    assert info["pin_locked"] is True
    assert (await ecard.client.post(f"{CTRL}/cards/{IVY}/unlock-pin")).status_code == 200
    await ok(await ecard.consume("ord_w10", 2500, IVY, pin="8642"), ecard)
    assert "pin_locked" not in await ok(await ecard.call("GET", f"/v1/cards/{IVY}"), ecard)
    assert await balance(ecard.client, IVY) == 50_000 - 2500 - 100 - 2500


async def test_a_replayed_wrong_pin_is_not_counted_again(ecard: Ecard) -> None:
    for _ in range(4):
        assert await code_of(await ecard.consume("ord_same", 100, IVY, pin="0000"), ecard) == "PIN_INVALID"
    assert (await card(ecard.client, IVY))["pin_failures"] == 1


# --- meal periods -----------------------------------------------------------------------------


async def test_fixed_prices_and_meal_periods_at_a_canteen(ecard: Ecard) -> None:
    await set_periods(ecard.client, [{"name": "lunch", "start": "00:00", "end": "24:00"}])
    paid = await ok(await ecard.consume("ord_m1", 1500, store_ref="canteen-1", meal_period="lunch"), ecard)
    assert paid["meal_period"] == "lunch"
    wrong_price = await ecard.consume("ord_m2", 1200, store_ref="canteen-1")
    assert await code_of(wrong_price, ecard) == "PRICE_MISMATCH"
    other_meal = await ecard.consume("ord_m3", 1500, store_ref="canteen-1", meal_period="dinner")
    assert await code_of(other_meal, ecard) == "OUTSIDE_MEAL_PERIOD"
    free_price = await ok(await ecard.consume("ord_m4", 777, store_ref="canteen-2"), ecard)
    assert free_price["meal_period"] == "lunch"
    assert await balance(ecard.client, "31000001") == 100_000 - 1500 - 777


async def test_outside_every_period_only_canteens_refuse(ecard: Ecard) -> None:
    await set_periods(ecard.client, [])
    for store in ("canteen-1", "canteen-2"):
        response = await ecard.consume(f"ord_{store}", 500, store_ref=store)
        assert await code_of(response, ecard) == "OUTSIDE_MEAL_PERIOD"
    shop = await ok(await ecard.consume("ord_shop", 500, store_ref="shop-1"), ecard)
    assert shop["meal_period"] is None
    assert (await ok(await ecard.consume("ord_any", 500, store_ref="store_1"), ecard))["meal_period"] is None
    assert (await ok(await ecard.consume("ord_none", 500), ecard))["meal_period"] is None
    claimed = await ecard.consume("ord_claim", 500, meal_period="breakfast")
    assert await code_of(claimed, ecard) == "OUTSIDE_MEAL_PERIOD"


@pytest.mark.parametrize(
    ("local_time", "amount", "expected"),
    [("12:00", 1500, "lunch"), ("07:00", 500, "breakfast"), ("18:00", 1200, "dinner"), ("15:00", 500, None)],
)
async def test_default_periods_follow_the_shanghai_clock(
    ecard: Ecard, local_time: str, amount: int, expected: str | None
) -> None:
    hour, minute = map(int, local_time.split(":"))
    target = datetime.now(SHANGHAI).replace(hour=hour, minute=minute, second=0, microsecond=0)
    offset = target.timestamp() - time.time()
    assert (
        await ecard.client.post("/_control/clock", json={"offset_seconds": round(offset)})
    ).status_code == 200
    body = {"order_ref": "ord_t", "card_no": "31000001", "amount": amount, "currency": "CNY"}
    response = await ecard.post(
        "consume", {**body, "store_ref": "canteen-1"}, timestamp=int(target.timestamp())
    )
    if expected is None:
        assert await code_of(response, ecard) == "OUTSIDE_MEAL_PERIOD"
    else:
        assert (await ok(response, ecard))["meal_period"] == expected


async def test_control_refuses_malformed_meal_periods(client: httpx.AsyncClient) -> None:
    for period in (
        {"name": "lunch", "start": "13:00", "end": "12:00"},
        {"name": "brunch", "start": "10:00", "end": "11:00"},
        {"name": "lunch", "start": "25:00", "end": "26:00"},
    ):
        response = await client.put(f"{CTRL}/meal-periods", json={"periods": [period]})
        assert response.status_code == 422, period


# --- loss report, cancel, replacement, blacklist ----------------------------------------------


async def test_the_initial_blacklist_holds_the_lost_test_card(ecard: Ecard) -> None:
    body = await ok(await ecard.post("blacklist", {"since_version": 0}), ecard)
    assert body == {
        "result": "SUCCESS",
        "version": 1,
        "changes": [
            {
                "version": 1,
                "card_no": "31000003",
                "status": "LOST",
                "at": "2025-09-01T00:00:00Z",
                "reason": "initial",
            }
        ],
    }


async def test_report_lost_refuses_at_once_and_cancel_restores(ecard: Ecard) -> None:
    lost = await ok(await ecard.post("cards/report-lost", {"card_no": "31000001"}), ecard)
    assert lost == {
        "result": "SUCCESS",
        "card_no": "31000001",
        "status": "LOST",
        "version": 2,
        "changed": True,
    }
    assert await code_of(await ecard.consume("ord_l1", 100), ecard) == "CARD_LOST"
    again = await ok(await ecard.post("cards/report-lost", {"card_no": "31000001"}), ecard)
    assert (again["version"], again["changed"]) == (2, False)
    restored = await ok(await ecard.post("cards/cancel-loss", {"card_no": "31000001"}), ecard)
    assert (restored["status"], restored["version"], restored["changed"]) == ("ACTIVE", 3, True)
    assert not (await ok(await ecard.post("cards/cancel-loss", {"card_no": "31000001"}), ecard))["changed"]
    await ok(await ecard.consume("ord_l2", 100), ecard)

    changes = (await ok(await ecard.post("blacklist", {"since_version": 1}), ecard))["changes"]
    assert [(c["version"], c["card_no"], c["status"], c["reason"]) for c in changes] == [
        (2, "31000001", "LOST", "report_lost"),
        (3, "31000001", "ACTIVE", "cancel_loss"),
    ]
    assert (await ok(await ecard.post("blacklist", {"since_version": 3}), ecard))["changes"] == []
    ahead = await ok(await ecard.post("blacklist", {"since_version": 99}), ecard)
    assert ahead["version"] == 3 and [c["version"] for c in ahead["changes"]] == [1, 2, 3]
    logged = await events(ecard.client, kind="ecard.card_status")
    assert [(e["status"], e["version"]) for e in logged] == [("LOST", 2), ("ACTIVE", 3)]


async def test_card_operations_refusals(ecard: Ecard) -> None:
    assert (
        await code_of(await ecard.post("cards/report-lost", {"card_no": "39999999"}), ecard)
        == "CARD_NOT_FOUND"
    )
    assert (
        await code_of(await ecard.post("cards/cancel-loss", {"card_no": "31000005"}), ecard) == "CARD_FROZEN"
    )
    # A frozen card can still be reported lost.
    assert (await ok(await ecard.post("cards/report-lost", {"card_no": "31000005"}), ecard))["changed"]
    bad = await ecard.post("blacklist", {"since_version": -1})
    assert bad.status_code == 422 and ecard.response_verifies(bad)


async def test_a_replacement_card_takes_over_the_account(ecard: Ecard) -> None:
    await ok(await ecard.consume("ord_before", 1000, GRACE), ecard)  # subsidy 3000 -> 2000
    body = {"old_card_no": GRACE, "new_card_no": "31000107"}
    replaced = await ok(await ecard.post("cards/replace", body), ecard)
    assert replaced == {
        "result": "SUCCESS",
        "old_card_no": GRACE,
        "new_card_no": "31000107",
        "account_no": "A1007",
        "status": "ACTIVE",
        "version": 3,
        "changed": True,
    }
    assert await code_of(await ecard.consume("ord_old", 100, GRACE), ecard) == "CARD_LOST"
    new_info = await ok(await ecard.call("GET", "/v1/cards/31000107"), ecard)
    assert (new_info["status"], new_info["account_no"], new_info["balance"]) == ("ACTIVE", "A1007", 10_000)
    assert new_info["subsidy"]["amount"] == 2000 and new_info["student_ref"] == "stu_grace"
    old_info = await ok(await ecard.call("GET", f"/v1/cards/{GRACE}"), ecard)
    assert (old_info["status"], old_info["replaced_by"]) == ("LOST", "31000107")
    paid = await ok(await ecard.consume("ord_new", 2500, "31000107", pin="2468"), ecard)  # the PIN goes along
    assert (paid["subsidy_used"], paid["balance_used"]) == (2000, 500)

    changes = (await ok(await ecard.post("blacklist", {"since_version": 1}), ecard))["changes"]
    assert [(c["card_no"], c["status"], c["reason"]) for c in changes] == [
        (GRACE, "LOST", "replaced"),
        ("31000107", "ACTIVE", "issued"),
    ]
    repeat = await ok(await ecard.post("cards/replace", body), ecard)
    assert (repeat["changed"], repeat["version"]) == (False, 3)
    other = {"old_card_no": GRACE, "new_card_no": "31000108"}
    assert await code_of(await ecard.post("cards/replace", other), ecard) == "CARD_REPLACED"
    assert await code_of(await ecard.post("cards/cancel-loss", {"card_no": GRACE}), ecard) == "CARD_REPLACED"


async def test_replacing_a_lost_card_and_other_refusals(ecard: Ecard) -> None:
    body = {"old_card_no": "31000003", "new_card_no": "31000103"}
    replaced = await ok(await ecard.post("cards/replace", body), ecard)
    assert replaced["version"] == 2  # only the new card's change: the old one was already lost
    await ok(await ecard.consume("ord_c", 20_000, "31000103"), ecard)
    for old, new, code in (
        ("39999999", "31000199", "CARD_NOT_FOUND"),
        ("31000005", "31000199", "CARD_FROZEN"),
        ("31000001", "31000002", "CARD_EXISTS"),
    ):
        response = await ecard.post("cards/replace", {"old_card_no": old, "new_card_no": new})
        assert await code_of(response, ecard) == code
    assert (await ok(await ecard.post("blacklist", {"since_version": 0}), ecard))["version"] == 2


# --- offline records --------------------------------------------------------------------------


async def test_offline_records_post_once_and_repeat_as_duplicates(ecard: Ecard) -> None:
    first = await upload(ecard, [record(1), record(2, amount=200), record(1)])
    assert [r["result"] for r in first] == ["posted", "posted", "duplicate"]
    assert first[0]["txn_id"].startswith("txn_") and first[0]["terminal_seq"] == 1
    assert (first[2]["original_result"], first[2]["txn_id"]) == ("posted", first[0]["txn_id"])
    assert await balance(ecard.client, "31000001") == 100_000 - 500
    again = await upload(ecard, [record(1), record(2, amount=200)])
    assert [r["result"] for r in again] == ["duplicate", "duplicate"]
    assert await balance(ecard.client, "31000001") == 100_000 - 500
    # The same sequence number on another terminal is another record.
    assert (await upload(ecard, [record(1, order_ref="off_b1")], terminal_id="pos-8"))[0][
        "result"
    ] == "posted"
    debits = await events(ecard.client, kind="ecard.debit")
    assert len(debits) == 3 and all(d["source"] == "offline" for d in debits)
    query = await ok(await ecard.post("query", {"order_ref": "off_1"}), ecard)
    assert (query["status"], query["amount"], query["txn_id"]) == ("SUCCESS", 300, first[0]["txn_id"])
    refund = await ecard.post("refund", {"order_ref": "off_1", "refund_ref": "rf_off", "amount": 300})
    assert (await ok(refund, ecard))["balance_after"] == 100_000 - 500 + 300 - 300


async def test_offline_rejections_move_nothing(ecard: Ecard) -> None:
    await upload(ecard, [record(1)])
    await ok(await ecard.consume("ord_online", 100), ecard)
    future = iso(datetime.now(UTC) + timedelta(hours=1))
    results = await upload(
        ecard,
        [
            record(1, amount=999),  # same seq, other details
            record(2, order_ref="ord_online"),
            record(3, card_no="39999999"),
            record(4, occurred_at=future),
            {"terminal_seq": 5, "order_ref": "off_5", "card_no": "31000001", "amount": 300},
            record(6, occurred_at="2026-01-01T12:00:00"),  # no offset
            record(7, amount=0),
            record(8, extra_field=1),
            "not an object",
            {**record(9), "terminal_seq": True},
        ],
    )
    reasons = [(r["result"], r["reason"]) for r in results]
    assert reasons == [
        ("rejected", "sequence_reused"),
        ("rejected", "order_ref_in_use"),
        ("rejected", "card_not_found"),
        ("rejected", "occurred_in_future"),
        *[("rejected", "malformed")] * 6,
    ]
    assert results[4]["terminal_seq"] == 5 and "occurred_at" in results[4]["message"]
    assert "terminal_seq" not in results[8] and "terminal_seq" not in results[9]
    assert await balance(ecard.client, "31000001") == 100_000 - 300 - 100
    # A rejected record is not stored: fixed, it may come again under the same sequence number.
    assert (await upload(ecard, [record(3)]))[0]["result"] == "posted"


async def test_a_record_after_the_loss_report_is_held_one_before_is_posted(ecard: Ecard) -> None:
    now = datetime.now(UTC)
    await ok(await ecard.post("cards/report-lost", {"card_no": "31000001"}), ecard)
    results = await upload(
        ecard,
        [
            record(1, occurred_at=iso(now - timedelta(hours=1))),
            record(2, occurred_at=iso(now + timedelta(seconds=60))),
            record(3, card_no="31000003", occurred_at="2025-08-31T23:59:59Z"),
            record(4, card_no="31000003"),
        ],
    )
    assert [(r["result"], r.get("reason")) for r in results] == [
        ("posted", None),
        ("held_for_review", "card_lost_before_record"),
        ("posted", None),
        ("held_for_review", "card_lost_before_record"),
    ]
    assert await balance(ecard.client, "31000001") == 100_000 - 300
    assert (await ok(await ecard.post("query", {"order_ref": "off_2"}), ecard))["status"] == "NOT_FOUND"
    duplicate = (await upload(ecard, [record(2, occurred_at=iso(now + timedelta(seconds=60)))]))[0]
    assert (duplicate["result"], duplicate["original_result"], duplicate["reason"]) == (
        "duplicate",
        "held_for_review",
        "card_lost_before_record",
    )
    # The order_ref of a held record belongs to it: an online consume cannot take it.
    taken = await ecard.consume("off_2", 300, "31000006")
    assert taken.status_code == 409 and await code_of(taken, ecard) == "ORDER_CONFLICT"
    held = await events(ecard.client, kind="ecard.offline_held")
    assert [e["terminal_seq"] for e in held] == [2, 4]
    stored = (await ecard.client.get(f"{CTRL}/offline-records")).json()["records"]
    assert [(s["terminal_seq"], s["result"]) for s in stored] == [
        (1, "posted"),
        (2, "held_for_review"),
        (3, "posted"),
        (4, "held_for_review"),
    ]


async def test_after_a_cancelled_loss_records_post_again(ecard: Ecard) -> None:
    await ok(await ecard.post("cards/report-lost", {"card_no": "31000001"}), ecard)
    await ok(await ecard.post("cards/cancel-loss", {"card_no": "31000001"}), ecard)
    later = iso(datetime.now(UTC) + timedelta(seconds=30))
    assert (await upload(ecard, [record(1, occurred_at=later)]))[0]["result"] == "posted"


async def test_over_limit_frozen_and_poor_records_are_held(ecard: Ecard) -> None:
    results = await upload(
        ecard,
        [
            record(1, IVY, 2001),  # over the per-payment threshold: online it would need the PIN
            record(2, IVY, 2000),
            record(3, IVY, 2000),
            record(4, IVY, 1001),  # 5001 today
            record(5, "31000005", 100),
            record(6, "31000002", 501),
        ],
    )
    assert [(r["result"], r.get("reason")) for r in results] == [
        ("held_for_review", "over_limit"),
        ("posted", None),
        ("posted", None),
        ("held_for_review", "over_limit"),
        ("held_for_review", "card_frozen"),
        ("held_for_review", "insufficient_balance"),
    ]
    assert await balance(ecard.client, IVY) == 50_000 - 4000
    assert await balance(ecard.client, "31000002") == 500
    # Posted offline spending counts towards the online daily threshold too.
    assert await code_of(await ecard.consume("ord_after", 1001, IVY), ecard) == "PIN_REQUIRED"


async def test_offline_records_spend_the_subsidy_first(ecard: Ecard) -> None:
    posted = (await upload(ecard, [record(1, GRACE, 3500)]))[0]
    assert (posted["subsidy_used"], posted["balance_used"], posted["amount"]) == (3000, 500, 3500)
    info = await card(ecard.client, GRACE)
    assert (info["subsidy"], info["balance"]) == (0, 9500)
    # On a day the wallet was not valid, it is not spent.
    old = (await upload(ecard, [record(2, JACK, 100, occurred_at="2019-06-01T04:00:00Z")]))[0]
    assert (old["subsidy_used"], old["balance_used"]) == (0, 100)


async def test_an_upload_holds_at_most_500_records(ecard: Ecard) -> None:
    too_many = [record(i, "31000006", 1) for i in range(501)]
    response = await ecard.post("offline/upload", {"terminal_id": "pos-9", "records": too_many})
    assert response.status_code == 422 and ecard.response_verifies(response)
    assert response.json()["code"] == "INVALID_REQUEST"
    assert await balance(ecard.client, "31000006") == 100_000_000
    empty = await ecard.post("offline/upload", {"terminal_id": "pos-9", "records": []})
    assert empty.status_code == 422
    results = await upload(ecard, too_many[:500], terminal_id="pos-9")
    assert {r["result"] for r in results} == {"posted"}
    assert await balance(ecard.client, "31000006") == 100_000_000 - 500


async def test_fault_rules_reach_the_new_operations(ecard: Ecard) -> None:
    rule = {"provider": "ecard", "operation": "offline_upload", "action": "error_500"}
    assert (await ecard.client.post("/_control/faults", json=rule)).status_code == 200
    response = await ecard.post("offline/upload", {"terminal_id": "pos-1", "records": [record(1)]})
    assert response.status_code == 500 and ecard.response_verifies(response)
    assert await balance(ecard.client, "31000001") == 100_000
    rule = {"provider": "ecard", "operation": "report_lost", "action": "error_500_after_apply"}
    assert (await ecard.client.post("/_control/faults", json=rule)).status_code == 200
    assert (await ecard.post("cards/report-lost", {"card_no": "31000001"})).status_code == 500
    assert (await card(ecard.client, "31000001"))["status"] == "LOST"
