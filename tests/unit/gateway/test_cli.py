import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from typer.testing import CliRunner

from gateway.cli import app
from gateway.openapi import render

pytestmark = pytest.mark.unit
runner = CliRunner()


def test_keys_prints_a_matching_pair() -> None:
    result = runner.invoke(app, ["keys"])
    assert result.exit_code == 0
    pair = json.loads(result.stdout)
    private = load_pem_private_key(pair["private_key_pem"].encode(), None)
    assert (
        private.public_key().public_bytes_raw()
        == load_pem_public_key(  # type: ignore[union-attr]
            pair["public_key_pem"].encode()
        ).public_bytes_raw()
    )  # type: ignore[union-attr]


def test_keys_writes_files_and_keeps_the_private_one_private(tmp_path: Path) -> None:
    result = runner.invoke(app, ["keys", "--out", str(tmp_path / "till1")])
    assert result.exit_code == 0
    assert (tmp_path / "till1.pem").stat().st_mode & 0o077 == 0
    assert "PUBLIC KEY" in (tmp_path / "till1.pub.pem").read_text()
    again = runner.invoke(app, ["keys", "--out", str(tmp_path / "till1")])
    assert again.exit_code != 0  # never overwrites a private key


def test_openapi_command_writes_the_document(tmp_path: Path) -> None:
    out = tmp_path / "gateway.json"
    result = runner.invoke(app, ["openapi", "--output", str(out)])
    assert result.exit_code == 0
    assert out.read_text() == render()
