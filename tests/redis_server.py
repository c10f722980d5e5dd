"""A Redis server of the test's own, to take down, restart, pause, flush or cut off.

The shared server on 127.0.0.1:6379 must never be stopped or flushed, so outage tests start a
private ``redis-server`` on a free port (no persistence: a restart forgets everything, as a
cache node without RDB/AOF does). ``Hop`` is a TCP relay in front of it for one gateway, so a
test can cut that gateway's link while the others keep theirs (one gateway's network blip).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

__all__ = ["Hop", "RedisServer", "free_port", "redis_server_binary"]

_BINARY = "/usr/bin/redis-server"


def redis_server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    return _BINARY if os.access(_BINARY, os.X_OK) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary, self.workdir = binary, workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def admin(self) -> redis.Redis:
        """A separate synchronous client (not the gateway's pool) for the test's own commands."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> None:
        assert self.process is None, "already running"
        log = (self.workdir / "redis.log").open("ab")
        # no persistence: a restart forgets everything
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [self.binary, *args, "--dir", str(self.workdir)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 20  # a bound on a busy machine, not a timing assertion
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.workdir / 'redis.log').read_text()[-2000:]}")
            try:
                with self.admin() as client:
                    client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _end(self, sig: signal.Signals) -> None:
        assert self.process is not None, "not running"
        if self.paused:
            self.resume()
        self.process.send_signal(sig)
        self.process.wait(timeout=20)
        self.process = None

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): clients see their connections closed."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """A crash (SIGKILL)."""
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        """Down and up again on the same port, with its memory gone."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """The server stops answering but keeps its connections and memory (a hung node or a
        network that drops packets): clients run into their timeouts."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def flushall(self) -> None:
        """Memory lost without a restart (a FLUSHALL, a failover to an empty replica)."""
        with self.admin() as client:
            client.flushall()

    def kill_clients(self) -> None:
        """The server closes every client connection and keeps its memory (an idle timeout, a
        proxy or load balancer in between dropping connections): the pooled ones are now dead."""
        with self.admin() as client:
            client.client_kill_filter(_type="normal", skipme=True)

    def keys(self, pattern: str) -> list[bytes]:
        with self.admin() as client:
            return list(client.scan_iter(match=pattern))

    def close(self) -> None:
        if self.process is not None:
            self.kill()


class Hop:
    """A TCP relay on its own port to a Redis server, for one gateway."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)

    async def cut(self) -> None:
        """Refuse new connections and drop the live ones."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        await self._server.wait_closed()
        self._server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))

    async def close(self) -> None:
        if self._server is not None:
            await self.cut()
