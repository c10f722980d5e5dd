"""Sandbox state that survives a restart of the sandbox process (`campuspay sandbox --state-dir`).

Opt-in: without a state directory everything stays in memory, as the README says. With one,
the providers' books (e-card merchants, cards, balances, orders, refunds, nonces; Alipay apps,
trades, buyers; bank merchants, accounts, agreements, transactions) and the control plane's
clocks and event sequence number are written after every request that reaches the sandbox and
right after a faulted operation is applied, before its answer is delayed or broken, so a
provider killed at any point keeps what it applied. Not kept: the event log itself, fault
rules, notifications still waiting for a retry, and the face cloud (its enrolments come back
as the fixed test users). See docs/decisions/0017-sandbox-state-dir.md.

Each provider's books are one pickle file, written to a temporary file and renamed into place
(so a kill mid-write leaves the previous copy), and only when they changed. Loading accepts only
the sandbox's own classes and plain data, so a state file cannot name arbitrary code to run.
"""

from __future__ import annotations

import asyncio
import io
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Book", "CommitMiddleware", "InPlace", "StateDirError", "StateStore"]

FORMAT = 1  # bump when the pickled classes change shape; older files are then refused
_DATETIME = frozenset({"date", "datetime", "time", "timedelta", "timezone"})


class StateDirError(RuntimeError):
    """The state directory cannot be used (unreadable, or written by another sandbox version)."""


def _lock() -> asyncio.Lock:
    return asyncio.Lock()


def _private_key(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _public_key(pem: bytes) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem)
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def _certificate(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


class _Pickler(pickle.Pickler):
    # Locks and key objects do not pickle; they are rebuilt from nothing (a lock is free between
    # requests, which is when state is written) or from their PEM form.
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, asyncio.Lock):
            return _lock, ()
        if isinstance(obj, rsa.RSAPrivateKey):
            pem = obj.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            return _private_key, (pem,)
        if isinstance(obj, rsa.RSAPublicKey):
            pem = obj.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            return _public_key, (pem,)
        if isinstance(obj, x509.Certificate):
            return _certificate, (obj.public_bytes(serialization.Encoding.PEM),)
        return NotImplemented


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("sandbox.") or (module == "datetime" and name in _DATETIME):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not sandbox state")


def dumps(state: object) -> bytes:
    out = io.BytesIO()
    _Pickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump((FORMAT, state))
    return out.getvalue()


def loads(data: bytes) -> object:
    version, state = _Unpickler(io.BytesIO(data)).load()
    if version != FORMAT:
        raise pickle.UnpicklingError(f"format {version}, this sandbox reads format {FORMAT}")
    return state


class Book(Protocol):
    """Something whose state is kept: a picklable snapshot of it, and a way back."""

    def snapshot(self) -> object: ...

    def restore(self, snapshot: object) -> None: ...


class InPlace:
    """A provider's state object as a book, restored in place, so everything that already holds
    a reference to it (routers, ledgers) sees the loaded state."""

    def __init__(self, target: object) -> None:
        self.target = target

    def snapshot(self) -> object:
        return self.target

    def restore(self, snapshot: object) -> None:
        if type(snapshot) is not type(self.target):
            raise TypeError(f"holds a {type(snapshot).__name__}, not a {type(self.target).__name__}")
        vars(self.target).update(vars(snapshot))


class StateStore:
    """Named books kept in one directory, one file each."""

    def __init__(self, directory: Path, books: Mapping[str, Book]) -> None:
        self.directory = directory
        self.books = dict(books)
        self._written: dict[str, bytes] = {}

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.pickle"

    def load(self) -> list[str]:
        """Restore every book that has a file; the names restored."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateDirError(f"cannot use {self.directory}: {exc}") from exc
        restored = []
        for name, book in self.books.items():
            path = self._path(name)
            if not path.exists():
                continue
            data = path.read_bytes()
            try:
                book.restore(loads(data))
            except Exception as exc:
                raise StateDirError(
                    f"{path} cannot be loaded ({exc}); it was written by another sandbox version "
                    "or damaged: remove the state directory to start afresh"
                ) from exc
            self._written[name] = data
            restored.append(name)
        return restored

    def save(self) -> None:
        """Write the books that changed since they were last written."""
        for name, book in self.books.items():
            data = dumps(book.snapshot())
            if self._written.get(name) == data:
                continue
            path = self._path(name)
            temporary = path.with_name(f".{path.name}.tmp")
            temporary.write_bytes(data)
            os.replace(temporary, path)  # atomic: a restart sees the old copy or the new one
            self._written[name] = data


class CommitMiddleware:
    """Writes the books before any answer starts, and once more when a request ends (an
    answer that never started: a reset, an exception)."""

    def __init__(self, app: ASGIApp, store: StateStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def committing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.store.save()
            await send(message)

        try:
            await self.app(scope, receive, committing_send)
        finally:
            self.store.save()
