"""The bank's business rules: agreements, consume, void, refund, query (docs/bank-protocol.md).

Every function works on validated fields and never awaits, so none is caught half-way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandbox.bank.state import Agreement, BankState, Merchant, Txn, last4, masked

RESP_MSG = {
    "00": "Success",
    "03": "Communication timeout, query the transaction",
    "04": "Transaction status unknown, query the transaction",
    "05": "Transaction accepted and being processed, query later",
    "10": "Malformed message",
    "11": "Signature verification failed",
    "12": "Duplicate transaction",
    "13": "Required field missing",
    "31": "Merchant unknown",
    "34": "No such transaction",
    "35": "Original transaction missing or in a wrong state",
    "36": "Does not match the original transaction",
    "40": "Agreement check failed",
    "61": "Invalid account number",
    "63": "Account status is not normal",
    "64": "Insufficient balance",
    "98": "File does not exist (yet)",
}
NOT_IDEMPOTENCY_DETAILS = frozenset({"signature", "certId", "signMethod", "signPubKeyCert"})
TOKEN_DATA = re.compile(r"\{([^{}]*)\}")


@dataclass
class Outcome:
    resp_code: str
    extras: dict[str, str] = field(default_factory=dict)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    notify: Txn | None = None  # a transaction that just succeeded: notify its backUrl


def parse_token_data(value: str) -> dict[str, str] | None:
    """`{k=v&k=v}` → dict, or None when malformed."""
    match = TOKEN_DATA.fullmatch(value)
    if match is None:
        return None
    out: dict[str, str] = {}
    for part in match.group(1).split("&"):
        key, sep, val = part.partition("=")
        if not sep or not key or key in out:
            return None
        out[key] = val
    return out


def details(fields: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k not in NOT_IDEMPOTENCY_DETAILS}


class Ledger:
    def __init__(self, state: BankState) -> None:
        self.state = state

    # --- helpers -----------------------------------------------------------------------------
    def _record(
        self, merchant: Merchant, fields: dict[str, str], code: str, now: datetime, **kwargs: Any
    ) -> Txn:
        txn = Txn(
            mer_id=merchant.mer_id,
            order_id=fields["orderId"],
            txn_time=fields["txnTime"],
            txn_type=fields["txnType"],
            txn_sub_type=fields["txnSubType"],
            query_id=self.state.new_query_id(now),
            resp_code=code,
            details=details(fields),
            back_url=fields.get("backUrl"),
            recorded_at=now.timestamp(),
            **kwargs,
        )
        self.state.orders[(txn.mer_id, txn.order_id)] = txn
        self.state.by_query_id[txn.query_id] = txn
        return txn

    def _settled(self, txn: Txn, now: datetime) -> None:
        txn.resp_code = "00"
        txn.settle_day = now.strftime("%Y%m%d")
        trace = f"{self.state.next_seq() % 1_000_000:06d}"
        txn.extras.update(
            traceNo=trace,
            traceTime=now.strftime("%m%d%H%M%S"),
            settleDate=now.strftime("%m%d"),
            settleAmt=str(txn.amount),
            settleCurrencyCode="156",
        )

    def _declined(self, merchant: Merchant, fields: dict[str, str], code: str, now: datetime) -> Outcome:
        txn = self._record(merchant, fields, code, now, amount=int(fields.get("txnAmt", "0")))
        event = {
            "order_id": txn.order_id,
            "query_id": txn.query_id,
            "txn_type": txn.txn_type,
            "resp_code": code,
        }
        return Outcome(code, {"queryId": txn.query_id}, [("bank.declined", event)])

    def existing(self, merchant: Merchant, fields: dict[str, str]) -> Txn | None:
        return self.state.orders.get((merchant.mer_id, fields["orderId"]))

    @staticmethod
    def same_details(txn: Txn, fields: dict[str, str]) -> bool:
        return txn.details == details(fields)

    @staticmethod
    def answer_of(txn: Txn) -> Outcome:
        """The answer a transaction gives now (an idempotent replay of its order)."""
        code = "04" if txn.pending_queries is not None else txn.resp_code
        return Outcome(code, {"queryId": txn.query_id, **txn.extras})

    # --- agreement open (79) -------------------------------------------------------------------
    def open_agreement(self, merchant: Merchant, fields: dict[str, str], now: datetime) -> Outcome:
        token_data = parse_token_data(fields["tokenPayData"]) or {}
        acc_no, payer_ref = fields["accNo"], fields["reqReserved"]
        account = self.state.accounts.get(acc_no)
        if token_data.get("trId") != merchant.tr_id:
            return self._declined(merchant, fields, "40", now)
        if account is None:
            return self._declined(merchant, fields, "61", now)
        if account.status != "ACTIVE":
            return self._declined(merchant, fields, "63", now)
        agreement = next(
            (
                a
                for a in self.state.agreements.values()
                if a.active
                and a.mer_id == merchant.mer_id
                and a.tr_id == merchant.tr_id
                and a.acc_no == acc_no
                and a.payer_ref == payer_ref
            ),
            None,
        )
        reused = agreement is not None
        if agreement is None:
            begin = now.strftime("%Y%m%d%H%M%S")
            end = f"{now.year + 10}{begin[4:]}"
            agreement = Agreement(
                self.state.new_token(), merchant.mer_id, merchant.tr_id, acc_no, payer_ref, begin, end
            )
            self.state.agreements[agreement.token] = agreement
        token_pay_data = (
            f"{{token={agreement.token}&trId={agreement.tr_id}&tokenLevel=40&tokenBegin={agreement.begin}"
            f"&tokenEnd={agreement.end}&tokenType=01}}"
        )
        txn = self._record(merchant, fields, "00", now, token=agreement.token, acc_no=acc_no)
        txn.settle_day = now.strftime("%Y%m%d")
        txn.extras.update(accNo=masked(acc_no), tokenPayData=token_pay_data)
        event = {
            "order_id": txn.order_id,
            "query_id": txn.query_id,
            "token": agreement.token,
            "acc_last4": last4(acc_no),
            "payer_ref": payer_ref,
            "reused": reused,
        }
        return Outcome("00", {"queryId": txn.query_id, **txn.extras}, [("bank.agreement", event)])

    # --- consume (01) --------------------------------------------------------------------------
    def consume(
        self, merchant: Merchant, fields: dict[str, str], now: datetime, *, processing: bool = False
    ) -> Outcome:
        token_data = parse_token_data(fields["tokenPayData"]) or {}
        agreement = self.state.agreements.get(token_data.get("token", ""))
        amount = int(fields["txnAmt"])
        if (
            agreement is None
            or not agreement.active
            or agreement.mer_id != merchant.mer_id
            or token_data.get("trId") != agreement.tr_id
        ):
            return self._declined(merchant, fields, "40", now)
        account = self.state.accounts[agreement.acc_no]
        if account.status != "ACTIVE":
            return self._declined(merchant, fields, "63", now)
        if account.balance < amount:
            return self._declined(merchant, fields, "64", now)
        txn = self._record(
            merchant, fields, "05", now, amount=amount, token=agreement.token, acc_no=agreement.acc_no
        )
        txn.notify_fields = dict(fields)
        if processing:  # magic 71: settled by the second query
            txn.pending_queries = 0
            event = {"order_id": txn.order_id, "query_id": txn.query_id, "amount": amount, "magic": 71}
            return Outcome("04", {"queryId": txn.query_id}, [("bank.processing", event)])
        return self._debit(txn, now)

    def _debit(self, txn: Txn, now: datetime) -> Outcome:
        assert txn.acc_no is not None
        account = self.state.accounts[txn.acc_no]
        if account.status != "ACTIVE" or account.balance < txn.amount:
            txn.resp_code = "63" if account.status != "ACTIVE" else "64"
            return Outcome(txn.resp_code, {"queryId": txn.query_id})
        account.balance -= txn.amount
        self._settled(txn, now)
        event = {
            "order_id": txn.order_id,
            "query_id": txn.query_id,
            "amount": txn.amount,
            "token": txn.token,
            "acc_last4": last4(txn.acc_no),
        }
        return Outcome("00", {"queryId": txn.query_id, **txn.extras}, [("bank.debit", event)], notify=txn)

    # --- void (31) and refund (04) -------------------------------------------------------------
    def _original(self, merchant: Merchant, fields: dict[str, str]) -> Txn | None:
        orig = self.state.by_query_id.get(fields["origQryId"])
        if orig is None or orig.mer_id != merchant.mer_id or orig.txn_type != "01" or orig.resp_code != "00":
            return None
        if orig.pending_queries is not None or orig.voided:
            return None
        return orig

    def void(self, merchant: Merchant, fields: dict[str, str], now: datetime) -> Outcome:
        orig = self._original(merchant, fields)
        if orig is None or orig.refunded or orig.settle_day != now.strftime("%Y%m%d"):
            return self._declined(merchant, fields, "35", now)
        amount = int(fields["txnAmt"])
        if amount != orig.amount:
            return self._declined(merchant, fields, "36", now)
        assert orig.acc_no is not None
        orig.voided = True
        self.state.accounts[orig.acc_no].balance += amount
        txn = self._record(
            merchant, fields, "00", now, amount=amount, orig_query_id=orig.query_id, acc_no=orig.acc_no
        )
        txn.notify_fields = dict(fields)
        self._settled(txn, now)
        event = {
            "order_id": txn.order_id,
            "query_id": txn.query_id,
            "orig_query_id": orig.query_id,
            "amount": amount,
            "acc_last4": last4(orig.acc_no),
        }
        return Outcome("00", {"queryId": txn.query_id, **txn.extras}, [("bank.void", event)], notify=txn)

    def refund(self, merchant: Merchant, fields: dict[str, str], now: datetime) -> Outcome:
        orig = self._original(merchant, fields)
        if orig is None:
            return self._declined(merchant, fields, "35", now)
        amount = int(fields["txnAmt"])
        if orig.refunded + amount > orig.amount:
            return self._declined(merchant, fields, "36", now)
        assert orig.acc_no is not None
        orig.refunded += amount
        self.state.accounts[orig.acc_no].balance += amount
        txn = self._record(
            merchant, fields, "00", now, amount=amount, orig_query_id=orig.query_id, acc_no=orig.acc_no
        )
        txn.notify_fields = dict(fields)
        self._settled(txn, now)
        event = {
            "order_id": txn.order_id,
            "query_id": txn.query_id,
            "orig_query_id": orig.query_id,
            "amount": amount,
            "refunded_total": orig.refunded,
            "acc_last4": last4(orig.acc_no),
        }
        return Outcome("00", {"queryId": txn.query_id, **txn.extras}, [("bank.refund", event)], notify=txn)

    # --- query (00) ----------------------------------------------------------------------------
    def query(
        self,
        merchant: Merchant,
        fields: dict[str, str],
        now: datetime,
        hide_recorded_after: float | None = None,
    ) -> Outcome:
        """The transaction's state; `hide_recorded_after` (query_lag) answers 34 for younger ones."""
        txn = self.state.orders.get((merchant.mer_id, fields["orderId"]))
        if txn is None or txn.txn_time != fields["txnTime"]:
            return Outcome("34")
        if hide_recorded_after is not None and txn.recorded_at > hide_recorded_after:
            return Outcome("34")
        outcome = Outcome("00")
        if txn.pending_queries is not None:
            if txn.pending_queries == 0:
                txn.pending_queries = 1
            else:
                txn.pending_queries = None
                settled = self._debit(txn, now)
                outcome.events, outcome.notify = settled.events, settled.notify
        orig_code = "05" if txn.pending_queries is not None else txn.resp_code
        extras = {
            "origRespCode": orig_code,
            "origRespMsg": RESP_MSG[orig_code],
            "origTxnType": txn.txn_type,
            "queryId": txn.query_id,
            "orderId": txn.order_id,
            "txnTime": txn.txn_time,
            "txnAmt": str(txn.amount) if txn.txn_type != "79" else "",
            "currencyCode": "156" if txn.txn_type != "79" else "",
            "origQryId": txn.orig_query_id or "",
        }
        extras.update({k: v for k, v in txn.extras.items() if k != "accNo"})
        outcome.extras = {k: v for k, v in extras.items() if v}
        return outcome
