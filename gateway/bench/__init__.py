"""``campuspay bench``: what the gateway costs per payment, beside what it wraps (docs/performance.md).

One run starts a standalone sandbox and one or more gateway processes (SQLite, or PostgreSQL +
Redis for ``--processes N``), seeds them like ``campuspay serve --demo`` does, and then pays the
same lunch-rush queue three ways, each measured by the operating system's CPU accounting of the
processes that do the work (never the load generator's):

(a) ``bare``: the adapters called directly against the sandbox, in a process of their own;
(b) ``gateway``: signed requests from the demo's tills through the gateway processes;
(c) ``sdk``: the face share paid directly with the official Alipay Python SDK, as a POS vendor
    would without CampusPay (needs the sandbox on port 80; otherwise skipped, saying why).

Card and face payments run as separate phases, so each method gets its own CPU figure. The
cryptography that no implementation can avoid (RSA-2048 signatures, Ed25519 verification,
HMAC-SHA256) is timed in the same run, and the report sets the gateway's CPU beside it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway.bench.crypto import crypto_costs, unavoidable_ms
from gateway.bench.processes import (
    Started,
    cpu_seconds,
    db_counters,
    free_port,
    port_80_free,
    postgres_backends,
    start,
)
from gateway.rush import Payer, RushSummary, load_demo, percentile, run_rush, rush_queue

__all__ = ["BenchOptions", "run_bench"]

METHODS = ("card", "face")
# Who pays in the bench: the sandbox's load-test card (funded for millions of lunches, no PIN)
# and the demo's consented, enrolled face user (charged under her guardian's agreement). The
# demo's rush mixes in declines; a bench measures the path every payment takes.
BENCH_PAYERS = {
    "card": Payer("card 31000006 (load-test card)", "card", 1.0, card_no="31000006"),
    "face": Payer("face stu_alice (consented, enrolled)", "face", 1.0, face_student="stu_alice"),
}
Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True)
class BenchOptions:
    payments: int = 400
    concurrency: int = 8
    face_share: float = 0.3
    processes: int = 1
    postgres: bool = False  # implied by processes > 1
    pg_admin_url: str = "postgresql://postgres@127.0.0.1:5432/test"
    redis_url: str = "redis://127.0.0.1:6379/0"
    warmup: int = 20
    seed: int = 1
    sdk: bool = True
    keep: bool = False

    @property
    def uses_postgres(self) -> bool:
        return self.postgres or self.processes > 1

    def counts(self) -> dict[str, int]:
        face = round(self.payments * self.face_share)
        return {"card": self.payments - face, "face": face}


class _RoundRobin(httpx.AsyncBaseTransport):
    """Spreads requests for the first gateway's address over every gateway process, as a load
    balancer would. Signatures cover CAMPUSPAY_PUBLIC_BASE_URL, which all processes share."""

    def __init__(self, public: str, ports: list[int]) -> None:
        self._public = httpx.URL(public)
        self._ports = ports
        self._next = 0
        self._inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=200))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == self._public.host and request.url.port == self._public.port:
            self._next = (self._next + 1) % len(self._ports)
            request.url = request.url.copy_with(port=self._ports[self._next])
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _latency(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {q: round(percentile(values, float(q[1:])) * 1000, 2) for q in ("p50", "p95", "p99")} | {
        "max": round(max(values) * 1000, 2)
    }


def _path_figures(
    payments: int, elapsed: float, latencies: list[float], errors: int, cpu: dict[str, float]
) -> dict[str, Any]:
    return {
        "payments": payments,
        "payments_per_second": round(payments / elapsed, 1) if elapsed else None,
        "latency_ms": _latency(latencies),
        "cpu_ms_per_payment": {k: round(v * 1000 / payments, 3) for k, v in cpu.items()} if payments else {},
        "errors": errors,
    }


class _Run:
    def __init__(self, options: BenchOptions, progress: Progress) -> None:
        self.options = options
        self.progress = progress
        self.work = Path(tempfile.mkdtemp(prefix="campuspay-bench-"))
        self.data_dir = self.work / "data"
        self.tag = secrets.token_hex(4)
        self.database = f"campuspay_bench_{self.tag}"
        self.redis_prefix = f"campuspay-bench-{self.tag}:"
        self.started: list[Started] = []
        self.sandbox: Started | None = None
        self.gateways: list[Started] = []
        self.sdk_skip: str | None = None

    # --- set-up and tear-down ----------------------------------------------------------------

    @property
    def database_url(self) -> str:
        if not self.options.uses_postgres:
            return f"sqlite+aiosqlite:///{self.data_dir / 'campuspay.db'}"
        base = self.options.pg_admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        return f"{base}/{self.database}"

    async def _pg(self, sql: str) -> None:
        import asyncpg  # type: ignore[import-untyped]

        conn = await asyncpg.connect(self.options.pg_admin_url, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def set_up(self) -> None:
        if self.options.uses_postgres:
            asyncio.run(self._pg(f'CREATE DATABASE "{self.database}"'))
        sandbox_port = 8090
        if self.options.sdk:
            self.sdk_skip = port_80_free()
            sandbox_port = 80 if self.sdk_skip is None else free_port()
        else:
            self.sdk_skip = "not asked for (--no-sdk)"
            sandbox_port = free_port()
        try:
            import alipay.aop.api.DefaultAlipayClient  # noqa: F401
        except ImportError:
            self.sdk_skip = self.sdk_skip or "the official SDK (alipay-sdk-python) is not installed"
        host = "http://127.0.0.1" if sandbox_port == 80 else f"http://127.0.0.1:{sandbox_port}"
        self.sandbox = start(
            "sandbox",
            ["sandbox", "--port", str(sandbox_port)],
            host,
            self.work / "sandbox.log",
            {},
            "/_control/test-values",
        )
        self.started.append(self.sandbox)
        ports = [free_port() for _ in range(self.options.processes)]
        self.public = f"http://127.0.0.1:{ports[0]}"
        self.ports = ports
        env = {
            "CAMPUSPAY_ENV": "sandbox",
            "CAMPUSPAY_DATABASE_URL": self.database_url,
            "CAMPUSPAY_PUBLIC_BASE_URL": self.public,
            "CAMPUSPAY_DEVICE_RATE_LIMIT": "off",  # a bench is one till paying far faster than a queue
            "CAMPUSPAY_LOG_LEVEL": "WARNING",
            "CAMPUSPAY_REDIS_PREFIX": self.redis_prefix,
        }
        if self.options.uses_postgres:
            env["CAMPUSPAY_REDIS_URL"] = self.options.redis_url
        asyncio.run(self._seed(env))
        for n, port in enumerate(ports):
            gateway = start(
                f"gateway {n + 1}",
                ["serve", "--port", str(port), "--data-dir", str(self.data_dir)],
                f"http://127.0.0.1:{port}",
                self.work / f"gateway-{n + 1}.log",
                env,
                "/readyz",
            )
            self.started.append(gateway)
            self.gateways.append(gateway)

    async def _seed(self, env: dict[str, str]) -> None:
        from gateway.app import create_app
        from gateway.auth.tokens import new_token
        from gateway.demo import seed_demo
        from gateway.settings import Settings

        assert self.sandbox is not None
        settings = Settings(
            data_dir=self.data_dir,
            database_url=env["CAMPUSPAY_DATABASE_URL"],
            redis_url=env.get("CAMPUSPAY_REDIS_URL"),
            redis_prefix=self.redis_prefix,
            public_base_url=self.public,
            device_rate_limit=None,
            bootstrap_token=new_token("platform"),  # given, so none is generated and printed
        )
        app = create_app(settings, run_workers=False)
        async with app.router.lifespan_context(app), httpx.AsyncClient(base_url=self.sandbox.url) as sandbox:
            await seed_demo(app.state.services, self.data_dir, sandbox, sandbox_base_url=self.sandbox.url)

    def tear_down(self) -> None:
        for process in reversed(self.started):
            process.stop()
        if self.options.uses_postgres:
            asyncio.run(self._pg(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))
            asyncio.run(self._forget_redis_keys())
        if not self.options.keep:
            shutil.rmtree(self.work, ignore_errors=True)

    async def _forget_redis_keys(self) -> None:
        from redis.asyncio import Redis

        client = Redis.from_url(self.options.redis_url)
        try:
            async for key in client.scan_iter(match=f"{self.redis_prefix}*"):
                await client.delete(key)
        finally:
            await client.aclose()

    # --- measuring ----------------------------------------------------------------------------

    def fund_face_payer(self) -> None:
        """Give the face payer's Alipay balance enough for any run, before each face phase, so
        that every path pays and none is measured declining."""
        from sandbox.testvalues import FACE_USERS

        assert self.sandbox is not None
        user = next(u for u in FACE_USERS if u.student == BENCH_PAYERS["face"].face_student)
        r = httpx.put(
            f"{self.sandbox.url}/_control/alipay/buyers/{user.user_id}", json={"balance": 10**12}, timeout=10
        )
        r.raise_for_status()

    def _cpu(self) -> dict[str, float]:
        assert self.sandbox is not None
        figures = {
            "gateway": cpu_seconds(g.psutil for g in self.gateways),
            "sandbox": cpu_seconds([self.sandbox.psutil]),
        }
        if self.options.uses_postgres:
            figures["database"] = cpu_seconds(postgres_backends(self.database))
        return figures

    def gateway_phase(
        self, method: str, payments: int, seed: int, *, label: str = "gateway"
    ) -> dict[str, Any]:
        share = 1.0 if method == "face" else 0.0
        if method == "face":
            self.fund_face_payer()
        demo_path = self.data_dir / "demo.json"
        before_cpu, before_db = self._cpu(), db_counters(g.url for g in self.gateways)
        done = 0

        def tick(_method: str, _outcome: str) -> None:
            nonlocal done
            done += 1
            self.progress(f"{label} {method}", done, payments)

        async def rush() -> RushSummary:
            transport = _RoundRobin(self.public, self.ports)
            try:
                return await run_rush(
                    demo_path,
                    payments=payments,
                    concurrency=self.options.concurrency,
                    face_share=share,
                    seed=seed,
                    on_done=tick,
                    transport=transport,
                    mix=[BENCH_PAYERS[method]],
                )
            finally:
                await transport.aclose()

        summary = asyncio.run(rush())
        time.sleep(1.0)  # let the sandbox's notifications for the last payments arrive and be handled
        after_cpu, after_db = self._cpu(), db_counters(g.url for g in self.gateways)
        cpu = {k: after_cpu[k] - before_cpu[k] for k in after_cpu}
        figures = _path_figures(
            payments, summary.elapsed, summary.latencies.get(method, []), summary.errors, cpu
        )
        figures["sql_per_payment"] = {
            k: round((after_db[k] - before_db[k]) / payments, 1) for k in ("statements", "transactions")
        }
        figures["outcomes"] = {f"{m} {o}": n for (m, o), n in sorted(summary.outcomes.items())}
        return figures

    def _child(self, module: str, spec: dict[str, Any], label: str) -> dict[str, Any]:
        assert self.sandbox is not None
        spec_path, out_path = self.work / f"{label}.spec.json", self.work / f"{label}.out.json"
        spec_path.write_text(json.dumps(spec))
        before = cpu_seconds([self.sandbox.psutil])
        self.progress(label, 0, len(spec["queue"]))
        completed = subprocess.run(
            [sys.executable, "-m", module, str(spec_path), str(out_path)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"{module} failed ({completed.returncode}): {completed.stderr[-2000:]}")
        self.progress(label, len(spec["queue"]), len(spec["queue"]))
        sandbox_cpu = cpu_seconds([self.sandbox.psutil]) - before
        result: dict[str, Any] = json.loads(out_path.read_text())
        payments = int(result["payments"])
        method = "face" if all(item["method"] == "face" for item in spec["queue"]) else "card"
        figures = _path_figures(
            payments,
            float(result["elapsed_seconds"]),
            result["latencies"].get(method, []),
            int(result["errors"]),
            {"caller": float(result["cpu_seconds"]["caller"]), "sandbox": sandbox_cpu},
        )
        figures["outcomes"] = result["outcomes"]
        return figures

    def _queue(self, method: str, payments: int, seed: int) -> list[dict[str, Any]]:
        from sandbox.testvalues import FACE_USERS

        demo = load_demo(self.data_dir / "demo.json")
        agreements = {u.student: u.agreement_no for u in FACE_USERS}
        share = 1.0 if method == "face" else 0.0
        items = []
        payer: Payer
        queue = rush_queue(demo, payments=payments, face_share=share, seed=seed, mix=[BENCH_PAYERS[method]])
        for n, payer, amount in queue:
            items.append(
                {
                    "n": n,
                    "method": payer.method,
                    "amount": amount,
                    "card_no": payer.card_no,
                    "pin": payer.pin,
                    "face_student": payer.face_student,
                    "agreement_no": agreements.get(payer.face_student or ""),
                }
            )
        return items

    def bare_phase(self, method: str, payments: int, seed: int) -> dict[str, Any]:
        from gateway.demo import FACE_GROUP
        from sandbox.testvalues import ECARD_DEFAULT_MERCHANT_ID, ECARD_DEFAULT_SECRET

        assert self.sandbox is not None
        demo = load_demo(self.data_dir / "demo.json")
        app = self._test_app()
        spec = {
            "run_id": f"bare-{self.tag}-{method}-{seed}",
            "concurrency": self.options.concurrency,
            "store_ref": demo["stores"][0]["store_id"],
            "terminal_ref": demo["devices"][0]["device_id"],
            "mint": demo["face"]["mint_token"],
            "providers": {
                "ecard": {
                    "endpoint": f"{self.sandbox.url}/ecard",
                    "credentials": {"merchant_id": ECARD_DEFAULT_MERCHANT_ID, "secret": ECARD_DEFAULT_SECRET},
                    "options": {},
                },
                "alipay": {
                    "endpoint": f"{self.sandbox.url}/alipay/gateway.do",
                    "credentials": {
                        "app_id": app["app_id"],
                        "app_private_key": app["app_private_key"],
                        "alipay_public_key": app["alipay_public_key"],
                    },
                    "options": {"face_group": FACE_GROUP},
                },
            },
            "queue": self._queue(method, payments, seed),
        }
        if method == "face":
            self.fund_face_payer()
        return self._child("gateway.bench.bare", spec, f"bare {method}")

    def _test_app(self) -> dict[str, str]:
        assert self.sandbox is not None
        values = httpx.get(f"{self.sandbox.url}/_control/test-values", timeout=10).json()["alipay"]
        return {
            "app_id": values["default_app"]["app_id"],
            "app_private_key": values["default_app"]["app_private_key"],
            "alipay_public_key": values["alipay_public_key"],
        }

    def sdk_phase(self, payments: int, seed: int) -> dict[str, Any]:
        assert self.sandbox is not None
        demo = load_demo(self.data_dir / "demo.json")
        app = self._test_app()
        spec = {
            "run_id": f"sdk-{self.tag}-{seed}",
            "concurrency": self.options.concurrency,
            "server_url": f"{self.sandbox.url}/alipay/gateway.do",
            "mint": demo["face"]["mint_token"],
            "queue": self._queue("face", payments, seed),
            **app,
        }
        self.fund_face_payer()
        return self._child("gateway.bench.sdk", spec, "sdk face")


def run_bench(options: BenchOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Run every phase and return every figure (what ``--json`` writes)."""
    run = _Run(options, progress or (lambda _phase, _done, _total: None))
    counts = options.counts()
    report: dict[str, Any] = {
        "options": {
            "payments": options.payments,
            "concurrency": options.concurrency,
            "face_share": options.face_share,
            "processes": options.processes,
            "database": "postgresql+redis" if options.uses_postgres else "sqlite",
            "seed": options.seed,
        },
        "mix": {m: {"payments": n, "payer": BENCH_PAYERS[m].label} for m, n in counts.items()},
        "paths": {"bare": {}, "gateway": {}, "sdk": {}},
    }
    try:
        run.set_up()
        for method in METHODS:
            if counts[method] and options.warmup:
                run.gateway_phase(
                    method, min(options.warmup, counts[method]), seed=options.seed + 1000, label="warm-up"
                )
        for method in METHODS:
            if not counts[method]:
                continue
            report["paths"]["bare"][method] = run.bare_phase(method, counts[method], options.seed)
            report["paths"]["gateway"][method] = run.gateway_phase(method, counts[method], options.seed)
        if run.sdk_skip is None and counts["face"]:
            report["paths"]["sdk"]["face"] = run.sdk_phase(counts["face"], options.seed)
        else:
            report["paths"]["sdk"] = {"skipped": run.sdk_skip or "no face payments in the mix"}
    finally:
        run.tear_down()
    report["crypto_ms"] = crypto_costs()
    report["ratios"] = _ratios(report)
    return report


def _ratios(report: dict[str, Any]) -> dict[str, Any]:
    ratios: dict[str, Any] = {}
    for method in METHODS:
        gateway = report["paths"]["gateway"].get(method)
        bare = report["paths"]["bare"].get(method)
        if not gateway or not bare:
            continue
        gateway_cpu = gateway["cpu_ms_per_payment"]["gateway"]
        bare_cpu = bare["cpu_ms_per_payment"]["caller"]
        crypto = unavoidable_ms(method, report["crypto_ms"])
        added = None
        if gateway["latency_ms"] and bare["latency_ms"]:
            added = {
                q: round(gateway["latency_ms"][q] - bare["latency_ms"][q], 2) for q in ("p50", "p95", "p99")
            }
        ratios[method] = {
            "gateway_cpu_ms": gateway_cpu,
            "bare_cpu_ms": bare_cpu,
            "gateway_over_bare": round(gateway_cpu / bare_cpu, 2) if bare_cpu else None,
            "unavoidable_crypto_ms": round(crypto, 3),
            "gateway_over_crypto": round(gateway_cpu / crypto, 1) if crypto else None,
            "latency_added_ms": added,
            "target_gateway_over_bare": 2.5,
        }
    return ratios
