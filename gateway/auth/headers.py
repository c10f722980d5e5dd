"""The headers of a device request, one value per name, as the signature check and the
Idempotency-Key handling both read them.

HTTP lets a header name appear more than once, and readers disagree about which copy counts
(Starlette's ``headers.get`` takes the first, a ``dict`` built from ``items()`` the last). A
signature check reading one copy and the idempotency store the other let a party on the path
make an honest retry execute a second time under a key nobody signed. So every header that a
signature covers, and the signature headers themselves, must come exactly once: the value used
is then the value signed, whoever reads it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping

from gateway.errors import Unauthorized

__all__ = ["SIGNATURE_HEADERS", "RequestHeaders"]

# Read on every device request whether or not a given signature lists them.
SIGNATURE_HEADERS = ("signature", "signature-input", "content-digest", "idempotency-key")


class RequestHeaders(Mapping[str, str]):
    """Lower-cased names to values, from the raw ASGI header list, remembering which names came
    more than once. Values are decoded as latin-1, as Starlette does."""

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        pairs = [(name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in raw]
        counts = Counter(name for name, _ in pairs)
        self.repeated = frozenset(name for name, n in counts.items() if n > 1)
        self._values: dict[str, str] = {}
        for name, value in pairs:
            self._values.setdefault(name, value)

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def require_single(self, names: Iterable[str]) -> None:
        """401 ``signature_malformed`` if any of ``names`` was sent more than once."""
        twice = sorted({name.lower() for name in names} & self.repeated)
        if twice:
            raise Unauthorized("signature_malformed", f"sent more than once: {', '.join(twice)}")
