"""Adapter for Alipay OpenAPI v1 (face payment and K12 withholding), RSA2-signed.

The protocol rules are in ../shared/PROTOCOLS.md (Alipay section); ``wire`` implements them and
is checked against the official ``alipay-sdk-python``.
"""

from adapters.alipay.adapter import AlipayAdapter, AlipayError, NotificationRejected

__all__ = ["AlipayAdapter", "AlipayError", "NotificationRejected"]
