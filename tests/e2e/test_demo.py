"""`campuspay demo` as a real process against `campuspay serve --demo` on a real socket."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.procs import CAMPUSPAY, ROOT, free_port, running

pytestmark = pytest.mark.e2e


def _demo(args: list[str], cwd: Path, *, columns: int = 120) -> subprocess.CompletedProcess[str]:
    # The terminal the tests run in is not inherited: its width is the test's own choice.
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update(PYTHONPATH=str(ROOT), COLUMNS=str(columns))
    command = [*CAMPUSPAY, "demo", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=120, check=False)


def test_a_lunch_rush_reports_what_the_providers_recorded(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    serve = ["serve", "--demo", "--port", str(port), "--data-dir", str(data)]
    with running(serve, health=f"http://127.0.0.1:{port}/healthz", log=tmp_path / "serve.log"):
        out = tmp_path / "rush.json"
        args = ["--demo-file", str(data / "demo.json"), "--payments", "40", "--concurrency", "4"]
        done = _demo([*args, "--seed", "3", "--json", str(out)], tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "40 payments, 4 at a time" in done.stdout and "payments/s" in done.stdout
        figures = json.loads(out.read_text())
        control = f"http://127.0.0.1:{port}/sandbox/_control/events"
        ecard, alipay = (
            Counter(e["kind"] for e in httpx.get(control, params={"provider": name}).json()["events"])
            for name in ("ecard", "alipay")
        )
    outcomes = {(o["method"], o["outcome"]): o["count"] for o in figures["outcomes"]}
    assert sum(outcomes.values()) == 40 and figures["errors"] == 0
    card_paid = outcomes.get(("card", "succeeded"), 0) + outcomes.get(("card", "succeeded after PIN"), 0)
    face_paid = outcomes.get(("face", "succeeded"), 0)
    assert card_paid > 0 and face_paid > 0  # seed 3 has both, and declines too
    assert any(outcome.startswith("failed") for _, outcome in outcomes)
    # the summary is what the providers saw: one debit per card success, one trade per face one
    assert ecard["ecard.debit"] == card_paid
    assert alipay["alipay.pay"] == face_paid
    assert set(figures["latency_ms"]) == {"all", "card", "face"}


def test_without_a_gateway_it_says_what_to_do(tmp_path: Path) -> None:
    """Each message is one whole line even in a 40-column terminal: a command to type and a path
    to look at are never split (they were wrapped at the terminal's width)."""
    nope = tmp_path / "nope.json"
    missing = _demo(["--demo-file", str(nope)], tmp_path, columns=40)
    assert missing.returncode == 2 and "campuspay serve --demo" in missing.stdout
    assert str(nope) in missing.stdout and missing.stdout.count("\n") == 1, missing.stdout
    demo = tmp_path / "demo.json"
    demo.write_text(
        json.dumps({"base_url": f"http://127.0.0.1:{free_port()}", "devices": [], "stores": [], "cards": []})
    )
    down = _demo(["--demo-file", str(demo)], tmp_path, columns=40)
    assert down.returncode == 2 and "does not answer" in down.stdout and "is it running?" in down.stdout
    assert down.stdout.count("\n") == 1, down.stdout
