"""Asynchronous notifications to a transaction's ``backUrl`` (docs/bank-protocol.md).

A form POST signed like a response in the merchant's mode; delivered when the answer is HTTP 200
(any body). The first attempt goes at once, retries after 60, 120, 240 and 480 s (5 attempts),
each wait multiplied by ``scale`` (``POST /_control/bank/notify-schedule``). Delivery and faults
are sandbox/notifications.py's; faults match ``order_id`` and ``txn_type`` here, and a void's or
refund's notification is about the same payment as its consume's (``out_of_order``).
"""

from __future__ import annotations

from collections.abc import Callable

from sandbox.bank.wire import FORM_TYPE, encode_form
from sandbox.control import ControlPlane
from sandbox.notifications import Notifier, NotifyFaultSpec, Outgoing, ScheduleIn

__all__ = ["BankNotifier", "NotifyFaultIn", "ScheduleIn"]

PROVIDER = "bank"
RETRY_SCHEDULE_S = (60, 120, 240, 480)


class NotifyFaultIn(NotifyFaultSpec):
    order_id: str | None = None
    txn_type: str | None = None  # 01 consume, 31 void, 04 refund


class BankNotifier(Notifier):
    def __init__(self, control: ControlPlane) -> None:
        super().__init__(control, PROVIDER, RETRY_SCHEDULE_S, lambda status, _text: status == 200)

    def notify(
        self, mer_id: str, url: str, fields: dict[str, str], forge: Callable[[], dict[str, str]]
    ) -> None:
        """Deliver the signed `fields`; `forge()` signs the same ones with a key not the bank's."""
        payment = fields.get("origQryId") or fields.get("queryId")
        self.send(
            Outgoing(
                merchant_id=mer_id,
                url=url,
                body=encode_form(fields),
                content_type=FORM_TYPE,
                thread=f"{mer_id}:{payment}",
                match={"order_id": fields.get("orderId"), "txn_type": fields.get("txnType")},
                fields={
                    "order_id": fields.get("orderId"),
                    "query_id": fields.get("queryId"),
                    "txn_type": fields.get("txnType"),
                },
                forge=lambda: encode_form(forge()),
            )
        )
