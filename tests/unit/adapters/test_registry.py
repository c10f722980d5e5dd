"""The registry: built-ins, third-party adapters through the entry-point group, no shadowing."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from adapters.bank import BankAdapter
from adapters.base import ProviderConfig
from adapters.ecard import EcardAdapter
from adapters.registry import ENTRY_POINT_GROUP, UnknownAdapter, default_registry

pytestmark = pytest.mark.unit


def _install_plugin(root: Path, name: str, target: str) -> None:
    """A real installed distribution (dist-info with entry_points.txt) on sys.path."""
    (root / "campuspay_plugin_demo.py").write_text(
        textwrap.dedent("""
        from typing import ClassVar
        from adapters.base import BaseAdapter, Capabilities, Operation

        class DemoBank(BaseAdapter):
            name: ClassVar[str] = "demobank"
            capabilities: ClassVar[Capabilities] = Capabilities(
                methods=frozenset({"card"}), operations=frozenset({Operation.PAY}))
    """)
    )
    dist = root / "campuspay_plugin_demo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: campuspay-plugin-demo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{name} = {target}\n")


def test_builtins_are_registered() -> None:
    registry = default_registry(plugins=False)
    assert list(registry) == ["alipay", "bank", "ecard"]
    assert registry.capabilities("ecard") is EcardAdapter.capabilities
    assert registry.capabilities("bank") is BankAdapter.capabilities
    assert registry.capabilities("bank").funding == frozenset({"bank_agreement"})
    with pytest.raises(UnknownAdapter):
        registry.capabilities("nope")


async def test_a_plugin_is_loaded_from_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_plugin(tmp_path, "demobank", "campuspay_plugin_demo:DemoBank")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = default_registry()
    assert "demobank" in registry
    async with httpx.AsyncClient() as http:
        adapter = registry.create("demobank", ProviderConfig("http://bank.test", {}), http)
    assert adapter.name == "demobank"
    sys.modules.pop("campuspay_plugin_demo", None)


def test_a_plugin_cannot_shadow_a_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_plugin(tmp_path, "ecard", "campuspay_plugin_demo:DemoBank")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = default_registry()
    assert registry.capabilities("ecard") is EcardAdapter.capabilities
    sys.modules.pop("campuspay_plugin_demo", None)


def test_instance_names_resolve_to_their_adapter_and_odd_ones_are_refused() -> None:
    registry = default_registry(plugins=False)
    for name in ("ecard.backup", "ecard.b", "bank.branch-2", "ecard.a1b2c3d4e5f6g7h8i9j0"):
        assert name in registry, name
    assert registry.capabilities("ecard.backup") is EcardAdapter.capabilities
    odd = ("ecard.", "ecard.-", "ecard.--", "ecard.-x", "ecard.x-", "ecard.Backup", "ecard.a.b", "nope.x")
    for name in odd:
        assert name not in registry, name
        with pytest.raises(UnknownAdapter):
            registry.capabilities(name)
    assert list(registry) == ["alipay", "bank", "ecard"]  # instances are not listed as adapters


def test_a_plugin_cannot_take_an_instance_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_plugin(tmp_path, "ecard.backup", "campuspay_plugin_demo:DemoBank")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = default_registry()
    assert registry.capabilities("ecard.backup") is EcardAdapter.capabilities
    sys.modules.pop("campuspay_plugin_demo", None)
