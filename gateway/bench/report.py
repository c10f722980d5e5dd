"""The bench's figures as tables (the JSON report is the dict itself)."""

from __future__ import annotations

from typing import Any

from rich.box import SIMPLE
from rich.console import Console
from rich.table import Table

__all__ = ["print_report"]

LEGEND = (
    "paths: bare = the adapters called directly against the sandbox; gateway = signed requests "
    "through the gateway; sdk = the face share paid with the official Alipay SDK, no gateway. "
    "Ratio columns are ms of CPU per payment; +p50/+p99: latency the gateway adds over bare."
)


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:g}"


def print_report(report: dict[str, Any], console: Console) -> None:
    options = report["options"]
    mix = ", ".join(f"{m}: {v['payments']} by {v['payer']}" for m, v in report["mix"].items())
    console.print(
        f"{options['payments']} payments, {options['concurrency']} in flight, "
        f"{options['processes']} gateway process(es) on {options['database']}; mix: {mix}"
    )
    speed = Table(title="throughput and latency (ms)", box=SIMPLE)
    cost = Table(title="CPU ms per payment, by process; SQL per payment", box=SIMPLE)
    for column in ("path", "method", "payments", "pay/s", "p50", "p95", "p99", "errors"):
        speed.add_column(column, justify="left" if column in ("path", "method") else "right")
    for column in ("path", "method", "gateway", "sandbox", "database", "caller", "SQL", "txns"):
        cost.add_column(column, justify="left" if column in ("path", "method") else "right")
    for path, methods in report["paths"].items():
        if "skipped" in methods:
            speed.add_row(path, "face", f"skipped: {methods['skipped']}")
            continue
        for method, figures in methods.items():
            latency = figures.get("latency_ms") or {}
            cpu = figures["cpu_ms_per_payment"]
            sql = figures.get("sql_per_payment") or {}
            speed.add_row(
                path,
                method,
                str(figures["payments"]),
                _ms(figures.get("payments_per_second")),
                *(_ms(latency.get(q)) for q in ("p50", "p95", "p99")),
                str(figures["errors"]),
            )
            cost.add_row(
                path,
                method,
                *(_ms(cpu.get(k)) for k in ("gateway", "sandbox", "database", "caller")),
                _ms(sql.get("statements")),
                _ms(sql.get("transactions")),
            )
    console.print(speed)
    console.print(cost)
    ratios = Table(title="gateway CPU per payment against what it wraps (target: <= 2.5x bare)", box=SIMPLE)
    for column in ("method", "gateway", "bare", "x bare", "crypto", "x crypto", "+p50", "+p99"):
        ratios.add_column(column, justify="left" if column == "method" else "right")
    for method, r in report["ratios"].items():
        added = r.get("latency_added_ms") or {}
        ratios.add_row(
            method,
            _ms(r["gateway_cpu_ms"]),
            _ms(r["bare_cpu_ms"]),
            _ms(r["gateway_over_bare"]),
            _ms(r["unavoidable_crypto_ms"]),
            _ms(r["gateway_over_crypto"]),
            _ms(added.get("p50")),
            _ms(added.get("p99")),
        )
    console.print(ratios)
    crypto = ", ".join(f"{op} {ms:g} ms" for op, ms in report["crypto_ms"].items())
    console.print(f"cryptography on this machine, this run: {crypto}")
    console.print(LEGEND)
