"""Webhook metrics in /metrics (issue 9 item 6): backlog by stage, oldest undelivered age,
attempts by result, endpoints disabled by reason; every label from a closed set."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import WEBHOOK_DELIVERY_RESULTS
from gateway.webhooks.outbox import emit
from tests.harness import Harness, start_harness
from tests.webhook_receiver import forget_webhooks, receiver

pytestmark = pytest.mark.integration


async def _scrape(h: Harness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = await h.gateway.get("/metrics")
    assert r.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        if family.name.startswith("campuspay_webhook")
        for s in family.samples
        if not s.name.endswith("_created")
    }


def _closed_port_url() -> str:
    with socket.socket() as s:  # bound and closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/hooks"


async def _endpoint(h: Harness, url: str) -> tuple[str, str]:
    r = await h.admin("POST", f"/v1/schools/{h.school_id}/webhook-endpoints", {"url": url})
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["secret"]


async def test_backlog_age_results_and_disabled_endpoints(database_url: str, tmp_path: Path) -> None:
    async with start_harness(
        database_url=database_url, data_dir=tmp_path, run_workers=False, webhook_retry_schedule="5"
    ) as h:
        h.clock.freeze()
        await forget_webhooks(h)  # the gauges count every school: compare with what was before
        before = await _scrape(h)
        assert set(before) >= {
            *(("campuspay_webhook_deliveries_total", (("result", r),)) for r in WEBHOOK_DELIVERY_RESULTS),
            ("campuspay_webhook_backlog", (("stage", "relay"),)),
            ("campuspay_webhook_backlog", (("stage", "delivery"),)),
            ("campuspay_webhook_oldest_undelivered_seconds", ()),
            ("campuspay_webhook_endpoints_disabled", (("reason", "failing"),)),
            ("campuspay_webhook_endpoints_disabled", (("reason", "disabled_by_admin"),)),
        }
        with receiver() as ok, receiver() as bad:
            bad.answer = 500
            _, ok.secret = await _endpoint(h, ok.url)
            _, bad.secret = await _endpoint(h, bad.url)
            await _endpoint(h, _closed_port_url())
            off, _ = await _endpoint(h, ok.url + "/off")
            r = await h.admin(
                "PATCH", f"/v1/schools/{h.school_id}/webhook-endpoints/{off}", {"status": "disabled"}
            )
            assert r.status_code == 200
            async with h.services.db.transaction() as session:
                for i in range(2):
                    data: dict[str, Any] = {"payment_id": f"pay_m{i}", "status": "succeeded", "amount": i}
                    emit(session, school_id=h.school_id, event_type="payment.succeeded", data=data)
            h.clock.advance(seconds=100)
            waiting = await _scrape(h)
            relay, delivery = (("stage", "relay"),), (("stage", "delivery"),)
            admin = (("reason", "disabled_by_admin"),)

            def grew(now: dict[Any, float], name: str, labels: tuple[tuple[str, str], ...]) -> float:
                return now[(name, labels)] - before[(name, labels)]

            assert grew(waiting, "campuspay_webhook_backlog", relay) == 2
            assert waiting[("campuspay_webhook_oldest_undelivered_seconds", ())] > 50  # 100 s on the clock
            assert grew(waiting, "campuspay_webhook_endpoints_disabled", admin) == 1
            await h.services.webhooks.relay()
            relayed = await _scrape(h)
            assert grew(relayed, "campuspay_webhook_backlog", relay) == 0
            assert grew(relayed, "campuspay_webhook_backlog", delivery) == 6  # 3 enabled endpoints x 2
            assert await h.services.webhooks.run_once() == 6
            after = await _scrape(h)
        assert grew(after, "campuspay_webhook_backlog", delivery) == 4  # the failed ones' retries
        results = [
            grew(after, "campuspay_webhook_deliveries_total", (("result", r),))
            for r in WEBHOOK_DELIVERY_RESULTS
        ]
        assert results == [2, 2, 0, 2, 0]  # succeeded, rejected, timeout, connection_error, not_allowed
        assert len(ok.events) == 2 and ok.unverified == []
        await forget_webhooks(h)
