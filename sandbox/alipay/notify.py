"""Asynchronous notifications (trade_status_sync) to the merchant's notify_url, as Alipay sends them.

A form POST signed with the Alipay key over every parameter except ``sign`` and ``sign_type``.
Delivered until the answer is HTTP 200 with the body exactly ``success``: the first attempt at
once, then retries after 4 m, 10 m, 10 m, 1 h, 2 h, 6 h and 15 h (8 attempts over about 25 h).
``scale`` multiplies that schedule (``POST /_control/alipay/notify-schedule {"scale": 0.001}``).
Retries repeat the same parameters (same ``notify_id``), so merchants can de-duplicate on it.
Delivery and faults are sandbox/notifications.py's; faults match ``out_trade_no`` and
``trade_status`` here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from urllib.parse import urlencode

from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.alipay import wire
from sandbox.alipay.trades import Notice
from sandbox.control import ControlPlane
from sandbox.notifications import Notifier, NotifyFaultSpec, Outgoing, ScheduleIn

__all__ = ["AlipayNotifier", "NotifyFaultIn", "ScheduleIn"]

PROVIDER = "alipay"
RETRY_SCHEDULE_S = (240, 600, 600, 3600, 7200, 21600, 54000)
FORM_TYPE = "application/x-www-form-urlencoded; charset=utf-8"


class NotifyFaultIn(NotifyFaultSpec):
    out_trade_no: str | None = None
    trade_status: str | None = None


@cache
def forger_key() -> rsa.RSAPrivateKey:
    """Someone else's RSA key: what a forged notification is signed with."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class AlipayNotifier(Notifier):
    def __init__(self, control: ControlPlane, sign: Callable[[bytes], str]) -> None:
        super().__init__(
            control, PROVIDER, RETRY_SCHEDULE_S, lambda status, text: status == 200 and text == "success"
        )
        self.sign = sign

    def notify(self, notice: Notice) -> None:
        content = wire.notification_string(notice.params).encode("utf-8")

        def signed(signature: str) -> bytes:
            return urlencode({**notice.params, "sign": signature}).encode("ascii")

        params = dict(notice.params)
        self.send(
            Outgoing(
                merchant_id=notice.app_id,
                url=notice.url,
                body=signed(self.sign(content)),
                content_type=FORM_TYPE,
                thread=f"{notice.app_id}:{notice.out_trade_no}",
                match={"out_trade_no": notice.out_trade_no, "trade_status": params.get("trade_status")},
                fields={
                    "out_trade_no": notice.out_trade_no,
                    "notify_id": params["notify_id"],
                    "trade_status": params.get("trade_status"),
                    "params": params,
                },
                forge=lambda: signed(wire.sign(forger_key(), content)),
            )
        )
