"""Each public package's ``__all__`` is complete and importable; the sandbox stays independent."""

import ast
import importlib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).parents[2]
PUBLIC = [
    "adapters",
    "adapters.base",
    "adapters.registry",
    "adapters.ecard",
    "adapters.alipay",
    "sandbox",
    "gateway.client",
    "gateway.errors",
    "gateway.settings",
    "gateway.app",
    "gateway.outbound",
    "gateway.protection.published",
]


@pytest.mark.parametrize("name", PUBLIC)
def test_all_is_complete(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    for symbol in exported:
        assert hasattr(module, symbol), f"{name}.__all__ names missing {symbol}"
    tree = ast.parse(Path(module.__file__ or "").read_text())
    defined = {
        n.name
        for n in tree.body
        if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and not n.name.startswith("_")
    }
    assert defined <= exported | {"main"}, f"{name}: public but not exported: {defined - exported}"


@pytest.mark.parametrize("package", ["sandbox", "adapters"])
def test_dependency_arrows_point_one_way(package: str) -> None:
    forbidden = {"sandbox": ("gateway", "adapters"), "adapters": ("gateway", "sandbox")}[package]
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path} imports {name}"
