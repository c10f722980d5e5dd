"""The ``campuspay`` command: serve, sandbox, demo, openapi, keys."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import httpx
import typer

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["app"]

app = typer.Typer(
    help="CampusPay: a payment gateway for schools.", no_args_is_help=True, add_completion=False
)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _say(console: Console, message: str, *, style: str | None = None) -> None:
    """One line for people and scripts alike: never wrapped at the terminal's width (a path or a
    command to type must stay whole whatever COLUMNS is), and never read as rich markup (a path
    may hold brackets)."""
    console.print(message, style=style, markup=False, highlight=False, soft_wrap=True)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8080,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (default ./.campuspay)")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML configuration file")] = None,
    demo: Annotated[bool, typer.Option(help="Seed a demo school and write demo.json")] = False,
) -> None:
    """Run the gateway (embedded defaults: SQLite in the data directory, sandbox providers)."""
    from gateway.app import create_app
    from gateway.server import run
    from gateway.settings import Settings

    overrides: dict[str, object] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    settings = Settings.load(config, **overrides)
    if "public_base_url" not in settings.model_fields_set:
        # Not configured anywhere: terminals reach this process where it listens.
        settings = settings.model_copy(update={"public_base_url": f"http://{_display_host(host)}:{port}"})
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    application = create_app(settings)
    if demo:
        _seed_on_startup(application, settings.data_dir)
    run(application, host=host, port=port, settings=settings)


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _seed_on_startup(application: object, data_dir: Path) -> None:
    from fastapi import FastAPI

    from gateway.demo import seed_demo

    assert isinstance(application, FastAPI)
    original = application.router.lifespan_context

    from contextlib import asynccontextmanager
    from typing import Any

    @asynccontextmanager
    async def lifespan(app_: Any) -> Any:
        async with original(app_) as state:
            sandbox_app = getattr(app_.state, "sandbox_app", None)
            transport = httpx.ASGITransport(app=sandbox_app) if sandbox_app is not None else None
            async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.local") as sandbox:
                path = await seed_demo(app_.state.services, data_dir, sandbox if transport else None)
            typer.echo(f"campuspay: demo data written to {path.resolve()}", err=True)
            yield state

    application.router.lifespan_context = lifespan


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Port (use 80 for SDKs that cannot take a port; needs root)")
    ] = 8090,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="Keep the providers' books here across restarts (default: in memory only)"),
    ] = None,
) -> None:
    """Run the sandbox providers alone."""
    from sandbox import create_sandbox_app
    from sandbox.persist import StateDirError
    from sandbox.server import sandbox_server

    try:
        application = create_sandbox_app(state_dir)
    except StateDirError as exc:
        typer.echo(f"campuspay sandbox: {exc}", err=True)
        raise typer.Exit(2) from exc
    if state_dir is not None:
        restored = application.state.restored
        kept = f"restored {', '.join(restored)}" if restored else "nothing to restore yet"
        typer.echo(f"campuspay sandbox: state in {state_dir.resolve()} ({kept})", err=True)
    sandbox_server(application, host=host, port=port).run()


@app.command()
def demo(
    demo_file: Annotated[Path, typer.Option(help="demo.json written by `campuspay serve --demo`")] = Path(
        ".campuspay/demo.json"
    ),
    payments: Annotated[int, typer.Option(min=1, max=100_000, help="How many payments")] = 200,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Payments in flight at once")] = 8,
    face_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of the queue paying by face")
    ] = 0.3,
    seed: Annotated[int | None, typer.Option(help="Seed for the queue, to repeat a run")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures as JSON")] = None,
) -> None:
    """A simulated lunch rush against a running gateway: face and card payments from the demo's
    tills, with a progress bar and a summary table."""
    import asyncio

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from gateway.rush import RushSummary, load_demo, run_rush

    console = Console()
    try:
        base_url = load_demo(demo_file)["base_url"]
        httpx.get(f"{base_url}/healthz", timeout=5).raise_for_status()
    except ValueError as exc:
        _say(console, str(exc), style="red")
        raise typer.Exit(2) from exc
    except httpx.HTTPError as exc:
        why = type(exc).__name__
        _say(console, f"the gateway at {base_url} does not answer ({why}): is it running?", style="red")
        raise typer.Exit(2) from exc

    with Progress(
        TextColumn("lunch rush"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[failed]} declined, {task.fields[errors]} errors"),
        console=console,
    ) as progress:
        task = progress.add_task("rush", total=payments, failed=0, errors=0)
        counts = {"failed": 0, "errors": 0}

        def done(method: str, outcome: str) -> None:
            if outcome.startswith("failed"):
                counts["failed"] += 1
            elif outcome.startswith("error"):
                counts["errors"] += 1
            progress.update(task, advance=1, failed=counts["failed"], errors=counts["errors"])

        summary: RushSummary = asyncio.run(
            run_rush(
                demo_file,
                payments=payments,
                concurrency=concurrency,
                face_share=face_share,
                seed=seed,
                on_done=done,
            )
        )
    figures = summary.to_json()
    table = Table(title=f"{payments} payments, {concurrency} at a time, in {figures['elapsed_seconds']} s")
    for column in ("method", "outcome", "count"):
        table.add_column(column, justify="right" if column == "count" else "left")
    for row in figures["outcomes"]:
        table.add_row(row["method"], row["outcome"], str(row["count"]))
    console.print(table)
    latency = Table(title=f"{figures['payments_per_second']} payments/s; latency per payment (ms)")
    for column in ("method", "p50", "p95", "p99", "max"):
        latency.add_column(column, justify="left" if column == "method" else "right")
    for method, values in figures["latency_ms"].items():
        if values:
            latency.add_row(method, *(str(values[k]) for k in ("p50", "p95", "p99", "max")))
    console.print(latency)
    if json_out is not None:
        json_out.write_text(json.dumps(figures, indent=2) + "\n")
        _say(console, f"wrote {json_out}")
    if summary.errors:
        _say(console, f"{summary.errors} payments could not be completed", style="red")
        raise typer.Exit(1)


@app.command()
def bench(
    payments: Annotated[int, typer.Option(min=2, max=100_000, help="Payments per path")] = 400,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Payments in flight at once")] = 8,
    face_share: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share paid by face")] = 0.3,
    processes: Annotated[
        int, typer.Option(min=1, max=16, help="Gateway processes (more than one: PostgreSQL + Redis)")
    ] = 1,
    postgres: Annotated[bool, typer.Option(help="PostgreSQL + Redis even with one process")] = False,
    pg_admin_url: Annotated[
        str, typer.Option(help="PostgreSQL to create the bench's database in (dropped afterwards)")
    ] = "postgresql://postgres@127.0.0.1:5432/test",
    redis_url: Annotated[str, typer.Option(help="Redis (keys under a prefix of the run's own)")] = (
        "redis://127.0.0.1:6379/0"
    ),
    sdk: Annotated[bool, typer.Option(help="The official-SDK path (needs port 80)")] = True,
    warmup: Annotated[int, typer.Option(min=0, help="Unmeasured payments per method first")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the queue")] = 1,
    keep: Annotated[bool, typer.Option(help="Keep the work directory (logs, database)")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write every figure as JSON")] = None,
) -> None:
    """The side-by-side benchmark: bare adapter calls, the gateway, and the official Alipay SDK
    (docs/performance.md)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from gateway.bench import BenchOptions, run_bench
    from gateway.bench.report import print_report

    options = BenchOptions(
        payments=payments,
        concurrency=concurrency,
        face_share=face_share,
        processes=processes,
        postgres=postgres,
        pg_admin_url=pg_admin_url,
        redis_url=redis_url,
        sdk=sdk,
        warmup=warmup,
        seed=seed,
        keep=keep,
    )
    console = Console()
    with Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        tasks: dict[str, object] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)  # type: ignore[arg-type]

        # a stopped bench (kill, CI timeout) still stops the sandbox and gateways it started:
        # SIGTERM becomes SystemExit, so run_bench's clean-up runs
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            report = run_bench(options, progress)
        except (RuntimeError, OSError) as exc:
            _say(console, f"bench: {exc}", style="red")
            raise typer.Exit(2) from exc
        finally:
            signal.signal(signal.SIGTERM, previous)
    print_report(report, console)
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2) + "\n")
        _say(console, f"wrote {json_out}")
    errors = sum(
        figures.get("errors", 0)
        for methods in report["paths"].values()
        for figures in methods.values()
        if isinstance(figures, dict)
    )
    if errors:
        _say(console, f"{errors} payments ended in errors", style="red")
        raise typer.Exit(1)


@app.command()
def openapi(
    output: Annotated[Path, typer.Option(help="Where to write the document")] = Path("openapi/gateway.json"),
) -> None:
    """Write the gateway's OpenAPI document."""
    from gateway.openapi import render

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render())
    typer.echo(f"wrote {output}")


@app.command()
def keys(
    out: Annotated[
        Path | None, typer.Option(help="Write <out>.pem (private) and <out>.pub.pem (public)")
    ] = None,
) -> None:
    """Generate an Ed25519 device key pair (register the public key with the school's admin API)."""
    from gateway.client import generate_ed25519_keypair

    private_pem, public_pem = generate_ed25519_keypair()
    if out is None:
        typer.echo(json.dumps({"private_key_pem": private_pem, "public_key_pem": public_pem}, indent=2))
        return
    private_path, public_path = out.with_suffix(".pem"), out.with_suffix(".pub.pem")
    private_path.touch(mode=0o600, exist_ok=False)
    private_path.write_text(private_pem)
    public_path.write_text(public_pem)
    typer.echo(f"wrote {private_path} (keep secret) and {public_path} (register this one)")


if __name__ == "__main__":  # `python -m gateway.cli`, used by the process tests
    app()
