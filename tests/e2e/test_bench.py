"""``campuspay bench`` as a user runs it: real processes (sandbox, gateways, the bare-adapter and
SDK children), a handful of payments, every figure in the JSON report. Only that it runs and
reports is tested here; its figures are read in docs/performance.md, never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e


def bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "bench",
            "--payments",
            "6",
            "--warmup",
            "1",
            "--no-sdk",
            "--json",
            str(out),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    report: dict[str, Any] = json.loads(out.read_text())
    assert "throughput and latency" in completed.stdout
    return report


def check_paths(report: dict[str, Any]) -> None:
    assert report["mix"]["card"]["payments"] + report["mix"]["face"]["payments"] == 6
    for method in ("card", "face"):
        gateway, bare = report["paths"]["gateway"][method], report["paths"]["bare"][method]
        assert gateway["errors"] == bare["errors"] == 0
        paid = {f"{method} succeeded": report["mix"][method]["payments"]}
        assert gateway["outcomes"] == bare["outcomes"] == paid
        assert gateway["sql_per_payment"]["statements"] > 0
        assert gateway["sql_per_payment"]["transactions"] > 0
        assert gateway["cpu_ms_per_payment"]["gateway"] > 0
        assert set(report["ratios"][method]) >= {
            "gateway_over_bare",
            "gateway_over_crypto",
            "latency_added_ms",
        }
    assert report["paths"]["sdk"] == {"skipped": "not asked for (--no-sdk)"}
    assert set(report["crypto_ms"]) == {"rsa2048_sign", "rsa2048_verify", "ed25519_verify", "hmac_sha256"}


def test_bench_on_sqlite_reports_every_path(tmp_path: Path) -> None:
    report = bench(tmp_path)
    assert report["options"]["database"] == "sqlite"
    check_paths(report)


@pytest.mark.postgres
@pytest.mark.redis
def test_bench_with_two_gateway_processes_on_postgres_and_redis(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    admin = postgres_url.replace("postgresql+asyncpg://", "postgresql://").rsplit("/", 1)[0] + "/test"
    report = bench(tmp_path, "--processes", "2", "--pg-admin-url", admin, "--redis-url", redis_url)
    assert report["options"]["database"] == "postgresql+redis"
    check_paths(report)
    assert report["paths"]["gateway"]["card"]["cpu_ms_per_payment"]["database"] >= 0
