"""Helpers for the real-SDK tests: skipping rules, a notify endpoint on a real socket, test data."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NoReturn
from urllib.parse import parse_qsl

import httpx
import pytest

IN_CI = os.environ.get("CI") == "true"


def unavailable(message: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{message}; under CI=true this must run", pytrace=False)
    pytest.skip(message)


class NotifyReceiver:
    """A merchant's notify_url on a real socket: records form posts, answers ``success``."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length).decode("utf-8")
                with receiver._changed:
                    receiver.received.append(dict(parse_qsl(body, keep_blank_values=True)))
                    receiver._changed.notify_all()
                answer = b"success"
                self.send_response(200)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alipay/notify"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(self, predicate: Callable[[dict[str, str]], bool], timeout: float = 15.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for notification in self.received:
                    if predicate(notification):
                        return notification
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching notification; received {self.received}")
                self._changed.wait(left)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def mint_face_token(base: str, student: str = "stu_alice", school: str = "school-demo") -> str:
    """A face token from the sandbox's face cloud (what a terminal's face SDK would produce)."""
    response = httpx.post(f"{base}/face/test-tokens", json={"school": school, "student": student}, timeout=10)
    assert response.status_code == 200, response.text
    token: str = response.json()["face_token"]
    return token


def sandbox_values(base: str) -> dict[str, Any]:
    values: dict[str, Any] = httpx.get(f"{base}/_control/test-values", timeout=10).json()
    return values
