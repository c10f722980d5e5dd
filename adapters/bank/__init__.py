"""UnionPay-style bank gateway adapter (direct-debit agreement tokens, signMethod 01/11/12)."""

from adapters.bank.adapter import BankAdapter

__all__ = ["BankAdapter"]
