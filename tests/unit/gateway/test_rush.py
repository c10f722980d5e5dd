"""The lunch rush's arithmetic and queue (gateway/rush.py); the run itself is in tests/e2e."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.rush import RushSummary, load_demo, payer_mix, percentile

pytestmark = pytest.mark.unit

DEMO = {
    "base_url": "http://127.0.0.1:8080",
    "devices": [],
    "stores": [],
    "cards": [
        {"card_no": "31000001", "status": "ACTIVE", "balance": 100_000, "pin": None},
        {"card_no": "31000002", "status": "ACTIVE", "balance": 500, "pin": None},
        {"card_no": "31000003", "status": "LOST", "balance": 20_000, "pin": None},
        {"card_no": "31000005", "status": "FROZEN", "balance": 20_000, "pin": None},
    ],
    "face": {
        "users": [
            {"student": "stu_alice", "enrolled_at_provider": True, "consent": True},
            {"student": "stu_bob", "enrolled_at_provider": True, "consent": False},
            {"student": "stu_carol", "enrolled_at_provider": False, "consent": False},
        ]
    },
}


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, q) for q in (1, 50, 95, 99, 100)] == [1.0, 50.0, 95.0, 99.0, 100.0]
    assert percentile([3.0], 99) == 3.0
    assert percentile([5.0, 1.0], 50) == 1.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_the_queue_has_the_asked_face_share_and_no_unusable_payers() -> None:
    mix = payer_mix(DEMO, face_share=0.3)
    assert {p.card_no for p in mix if p.method == "card"} == {"31000001", "31000002", "31000003"}
    assert {p.face_student for p in mix if p.method == "face"} == {"stu_alice", "stu_bob"}
    face = sum(p.weight for p in mix if p.method == "face") / sum(p.weight for p in mix)
    assert face == pytest.approx(0.3)
    consented = next(p for p in mix if p.face_student == "stu_alice")
    refused = next(p for p in mix if p.face_student == "stu_bob")
    assert consented.weight > refused.weight
    assert {p.method for p in payer_mix(DEMO, face_share=0)} == {"card"}
    assert {p.method for p in payer_mix(DEMO, face_share=1)} == {"face"}


def test_demo_json_problems_say_how_to_fix_them(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="campuspay serve --demo"):
        load_demo(tmp_path / "missing.json")
    broken = tmp_path / "demo.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="not JSON"):
        load_demo(broken)
    broken.write_text(json.dumps({"base_url": "x"}))
    with pytest.raises(ValueError, match="devices"):
        load_demo(broken)


def test_the_summary_counts_errors_and_reports_figures() -> None:
    summary = RushSummary(payments=4, concurrency=2, elapsed=2.0)
    summary.outcomes.update(
        {("card", "succeeded"): 2, ("face", "failed: consent_required"): 1, ("card", "error: ReadTimeout"): 1}
    )
    summary.latencies = {"card": [0.1, 0.2, 0.3], "face": [0.05]}
    figures = summary.to_json()
    assert summary.errors == 1 and figures["errors"] == 1
    assert figures["payments_per_second"] == 2.0
    assert figures["latency_ms"]["card"] == {"p50": 200.0, "p95": 300.0, "p99": 300.0, "max": 300.0}
    assert figures["latency_ms"]["all"]["max"] == 300.0
