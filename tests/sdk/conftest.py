"""Real Alipay SDKs against a real sandbox process (uvicorn on ``sandbox.app:create_sandbox_app``,
so nothing from gateway/ is imported), with a real HTTP endpoint receiving the notifications.

Missing prerequisites (an SDK, node/npm, root for port 80) skip with a visible reason, except
under CI=true, where they fail: CI has all of them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.procs import wait_http
from tests.sdk.alipay_kit import free_port
from tests.sdk.support import NotifyReceiver, unavailable

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def sandbox_process(port: int, log: Path) -> Iterator[str]:
    """The standalone sandbox on 127.0.0.1:port; stopped (by its pid) on exit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "sandbox.app:create_sandbox_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    base = f"http://127.0.0.1:{port}" if port != 80 else "http://127.0.0.1"
    with log.open("ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        wait_http(f"{base}/_control/test-values", proc, log)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def sandbox_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with sandbox_process(free_port(), tmp_path_factory.mktemp("sandbox") / "sandbox.log") as base:
        yield base


@pytest.fixture(scope="session")
def sandbox_on_port_80(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The sandbox at a portless URL, for the official Python SDK (it cannot take a port)."""
    if os.geteuid() != 0:
        unavailable("the official Alipay Python SDK needs the sandbox on port 80, which needs root")
    # Port 80 is one per machine: another run of these tests (or a `campuspay bench` with its
    # SDK path) may hold it for a while, so wait for it rather than fail at once.
    deadline = time.monotonic() + 120
    while True:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", 80))
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    unavailable(f"port 80 is busy ({exc}); the official Alipay Python SDK needs the sandbox")
        time.sleep(1)
    with sandbox_process(80, tmp_path_factory.mktemp("sandbox80") / "sandbox.log") as base:
        yield base


@pytest.fixture
def notify_receiver() -> Iterator[NotifyReceiver]:
    receiver = NotifyReceiver()
    try:
        yield receiver
    finally:
        receiver.close()
