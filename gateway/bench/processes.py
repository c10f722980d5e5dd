"""The processes a bench run starts and measures: the sandbox, the gateways, the database.

CPU figures are the operating system's accounting of each measured process (user + system
seconds, through psutil), read before and after a phase, so the load generator's own CPU is
never counted. PostgreSQL's share is the backends serving the bench's own database (found by
its name on their command lines); with SQLite the database works inside the gateway process.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

__all__ = ["Started", "cpu_seconds", "db_counters", "free_port", "port_80_free", "postgres_backends", "start"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_80_free() -> str | None:
    """None when the sandbox can listen on 127.0.0.1:80, else why not."""
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 80))
    except OSError as exc:
        return f"port 80 is not available ({exc.strerror or exc})"
    return None


@dataclass
class Started:
    """A process the bench started, with where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    psutil: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.psutil = psutil.Process(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(name: str, args: list[str], url: str, log: Path, env: dict[str, str], ready: str) -> Started:
    """``python -m gateway.cli ARGS`` with ``env``, waiting until ``url + ready`` answers."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    started = Started(name, process, url, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}; its log: {log}")
        try:
            if httpx.get(url + ready, timeout=2).status_code == 200:
                return started
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    started.stop()
    raise RuntimeError(f"{name} did not become ready within 60 s; its log: {log}")


def cpu_seconds(processes: Iterable[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def postgres_backends(database: str) -> list[psutil.Process]:
    """The PostgreSQL backends connected to ``database`` (their title names it)."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(process.info.get("cmdline") or [])
        if process.info.get("name") in ("postgres", "postmaster") and f" {database} " in f"{cmdline} ":
            found.append(process)
    return found


_COUNTER = re.compile(r"^(campuspay_db_(?:statements|transactions)_total) ([0-9.e+]+)$", re.M)


def db_counters(urls: Iterable[str]) -> dict[str, float]:
    """SQL statements and transactions so far, summed over the gateways' ``/metrics``."""
    totals = {"statements": 0.0, "transactions": 0.0}
    for url in urls:
        text = httpx.get(f"{url}/metrics", timeout=10).text
        for name, value in _COUNTER.findall(text):
            totals["statements" if "statements" in name else "transactions"] += float(value)
    return totals
