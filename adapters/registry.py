"""The one place adapter names map to adapter classes.

Built-in adapters are listed here; third parties ship their own package and declare an entry
point in the group ``campuspay.adapters`` (``name = "package.module:AdapterClass"``). A built-in
name cannot be shadowed by an entry point: a school's money must not silently move to a plugin
because someone installed a package.

Instances: ``<name>.<instance>`` (e.g. ``ecard.backup``) is the adapter ``<name>`` under another
name, so a school can configure a second merchant or endpoint of the same provider -- with its
own settings, breaker and routing entries -- without code. ``<instance>`` is 1-20 of
``[a-z0-9-]``, starting and ending with a letter or digit. Plugins cannot register dotted names.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from importlib.metadata import entry_points

import httpx

from adapters.base import Adapter, AdapterFactory, Capabilities, ProviderConfig

__all__ = ["ENTRY_POINT_GROUP", "AdapterRegistry", "UnknownAdapter", "default_registry"]

ENTRY_POINT_GROUP = "campuspay.adapters"
_INSTANCE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,18}[a-z0-9])?")
log = logging.getLogger(__name__)


class UnknownAdapter(KeyError):
    """No adapter is registered under that name."""


class AdapterRegistry:
    def __init__(self) -> None:
        self._factories: dict[str, AdapterFactory] = {}
        self._capabilities: dict[str, Capabilities] = {}

    def register(self, name: str, factory: AdapterFactory, capabilities: Capabilities) -> None:
        if name in self._factories:
            raise ValueError(f"adapter {name!r} is already registered")
        self._factories[name] = factory
        self._capabilities[name] = capabilities

    def _base(self, name: str) -> str:
        """The registered adapter behind ``name`` (itself, or the base of an instance name)."""
        if name in self._factories:
            return name
        base, dot, instance = name.partition(".")
        if dot and base in self._factories and _INSTANCE.fullmatch(instance):
            return base
        raise UnknownAdapter(name)

    def create(self, name: str, config: ProviderConfig, http: httpx.AsyncClient) -> Adapter:
        return self._factories[self._base(name)](config, http)

    def capabilities(self, name: str) -> Capabilities:
        return self._capabilities[self._base(name)]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self._base(name)
        except UnknownAdapter:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._factories))

    def load_entry_points(self) -> None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self._factories:
                continue  # built-ins (and the project's own entry points) win
            if "." in ep.name:
                # dotted names are instances of registered adapters: a plugin must not take one
                log.warning("entry point %s has a dot in its name (reserved for instances); ignored", ep.name)
                continue
            cls = ep.load()
            caps = getattr(cls, "capabilities", None)
            if not isinstance(caps, Capabilities):
                log.warning("entry point %s has no Capabilities; ignored", ep.name)
                continue
            self.register(ep.name, cls, caps)


def default_registry(*, plugins: bool = True) -> AdapterRegistry:
    """The built-in adapters, plus installed plugins."""
    from adapters.alipay.adapter import AlipayAdapter
    from adapters.bank.adapter import BankAdapter
    from adapters.ecard.adapter import EcardAdapter

    registry = AdapterRegistry()
    registry.register(EcardAdapter.name, EcardAdapter, EcardAdapter.capabilities)
    registry.register(AlipayAdapter.name, AlipayAdapter, AlipayAdapter.capabilities)
    registry.register(BankAdapter.name, BankAdapter, BankAdapter.capabilities)
    if plugins:
        registry.load_entry_points()
    return registry
