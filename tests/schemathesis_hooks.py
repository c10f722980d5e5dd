"""Schemathesis hooks for the CampusPay API: device requests signed as a terminal signs them,
admin requests with the platform token or the school's admin key, real ids in paths and bodies.

Loaded by ``st --config-file tests/schemathesis.toml`` (``hooks =`` there), against a running
gateway whose school is described by a demo.json (``CAMPUSPAY_DEMO``, default
.campuspay/demo.json, as ``campuspay serve --demo`` writes it). The CI test
(tests/contract/test_schemathesis.py) writes such a file for the harness's school; the long run
uses the demo's (docs/reliability.md, "Schemathesis"). Other settings, all optional:
``CAMPUSPAY_SCHEMATHESIS_URL`` (where to connect, when not the demo's base URL),
``CAMPUSPAY_PUBLIC_BASE_URL`` (what signatures name, likewise), ``CAMPUSPAY_METRICS_TOKEN``,
``CAMPUSPAY_SCHEMATHESIS_SEED`` (the choices below), ``CAMPUSPAY_SCHEMATHESIS_STATS`` (a file
for the answers by operation, status and code, also printed at exit).

- **Device operations** (security ``deviceSignature``): the auth below puts a placeholder in
  ``Signature``; ``Credentials``, a ``requests`` auth, replaces it as the request is prepared,
  over the exact bytes and request target that go on the wire, with
  ``gateway.client.sign_request`` (the POS client's signer): a fresh ``created`` and nonce on
  every request, an Ed25519 and an HMAC device in turn. Schemathesis' probes (a request without
  credentials, or with an invalid ``Signature``) carry no placeholder and go out unsigned.
- **Admin operations**: the school's admin key, or the platform token where only it may call.
- **Idempotency-Key**: a valid generated key becomes a fresh UUID, except one time in eight,
  when the operation's previous key is sent again (replays, ``idempotency_key_reused``).
- **Real ids**: four times in five a path parameter, or an id a valid body names (``store_id``,
  ``student_id``, ``card_no``, ...), becomes one of the seeded school's (its id, payments,
  refunds, consents, enrolments, funding sources, spare devices and their keys), so the deep
  paths run, not only their 404s. The devices that sign are never offered to the revoke and key
  operations, nor the e-card settings to PUT.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import re
import sys
import threading
import uuid
from collections import Counter
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import requests
import schemathesis
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.meta import TestPhase

from gateway.client import DeviceCredentials, generate_ed25519_keypair, sign_request

__all__ = ["PLACEHOLDER", "Credentials", "Target", "report", "seed", "target"]

PLACEHOLDER = "campuspay-sign-me"
_KEY = re.compile(r"^[!-~]{1,255}$")  # the Idempotency-Key format (gateway.idempotency.service)
_SCHOOL_PATH = re.compile(r"^/v1/schools/([^/?]+)")
# Admin operations only the platform token may call; every other one takes the school's key.
PLATFORM_OPERATIONS = {("POST", "/v1/schools"), ("PUT", "/v1/schools/{school_id}/network-allowlist")}
# Path parameters whose real values are kept away from these operations, so the run does not
# saw off the branch it sits on: the e-card configuration the seeded payments use stays as seeded.
# Body fields naming an object -> the kind of id (as ``Target.ids`` names them).
BODY_IDS = {
    "store_id": "store_id",
    "student_id": "student_id",
    "card_no": "card_no",
    "old_card_no": "card_no",
    "new_card_no": "card_no",
    "consent_id": "consent_id",
    "guardian_id": "guardian_id",
    "funding_source_id": "source_id",
}
# Ids in what the API creates, by prefix (gateway.store.models.new_id), kept for later cases:
# devices the run registers outlive the spare ones it revokes; payments it makes get refunded.
ID_PREFIXES = {
    "pay": "payment_id",
    "re": "refund_id",
    "dev": "device_id",
    "key": "key_id",
    "cns": "consent_id",
    "enr": "enrollment_id",
    "fs": "source_id",
    "grd": "guardian_id",
    "stu": "student_id",
    "sto": "store_id",
    "whe": "endpoint_id",
}
HARVESTED = 50  # per kind: the pools stay small over a long run
# Path parameters of these operations take their ids from a pool of their own.
ID_KINDS = {("POST", "/v1/payments/{payment_id}/refunds"): {"payment_id": "refundable_payment_id"}}
KEEP_GENERATED = {("PUT", "/v1/schools/{school_id}/providers/{adapter}"): {"adapter": {"ecard"}}}


@dataclass
class Target:
    """The gateway under test and what was seeded in it."""

    public_base_url: str  # what signatures name (the gateway's CAMPUSPAY_PUBLIC_BASE_URL)
    platform_token: str
    school_id: str
    school_api_key: str
    devices: list[DeviceCredentials]  # the signing devices
    stores: list[str]
    cards: list[str]  # card numbers bound in the school, with money on them
    metrics_token: str | None = None
    # path parameter name -> real values; filled by ``seed``
    ids: dict[str, list[str]] = field(default_factory=dict)
    seed: int = 0
    connect_url: str = ""  # where requests go, when not the public base URL
    # (operation, status) -> answers: which paths ran deep and which only met 404s
    stats: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    # school id -> its admin key: the seeded school's, and those the run creates (whose own
    # paths the stateful phase then follows, with their own key)
    school_keys: dict[str, str] = field(default_factory=dict, repr=False)
    # the choices of ids and keys below, from ``seed``: the same seed, the same choices
    rng: random.Random = field(init=False, repr=False)
    last_keys: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.school_keys[self.school_id] = self.school_api_key

    def add(self, name: str, value: str | None, *, keep: int | None = None) -> None:
        """One more real id of this kind; with ``keep``, the oldest go past that many."""
        values = self.ids.setdefault(name, [])
        if value and value not in values:
            values.append(value)
            if keep is not None and len(values) > keep:
                del values[: len(values) - keep]


_target: Target | None = None
_lock = threading.RLock()


def report(t: Target) -> str:
    """Answers by operation and status: the figures docs/reliability.md quotes."""
    by_operation: dict[str, dict[str, int]] = {}
    for (label, status, code), count in sorted(t.stats.items()):
        by_operation.setdefault(label, {})[f"{status}{':' + code if code else ''}"] = count
    total = sum(t.stats.values())
    deep = sum(n for (_, status, _), n in t.stats.items() if 200 <= status < 300)
    lines = [f"schemathesis: {total} answers over {len(by_operation)} operations, {deep} of them 2xx"]
    for label, statuses in by_operation.items():
        lines.append(f"  {label}: " + " ".join(f"{s} x{n}" for s, n in statuses.items()))
    return "\n".join(lines)


def target() -> Target:
    """The configured target; on first use from the command line, demo.json's school, seeded."""
    global _target
    with _lock:
        if _target is None:
            _target = _from_demo()
        return _target


def _from_demo() -> Target:
    path = Path(os.environ.get("CAMPUSPAY_DEMO", ".campuspay/demo.json"))
    demo = json.loads(path.read_text())
    devices = [
        DeviceCredentials(
            key_id=d["key_id"],
            alg=d["alg"],
            private_key_pem=d.get("private_key_pem"),
            secret=d.get("secret"),
            device_id=d["device_id"],
        )
        for d in demo["devices"]
    ]
    value = Target(
        public_base_url=os.environ.get("CAMPUSPAY_PUBLIC_BASE_URL", demo["base_url"]),
        platform_token=demo["platform_token"],
        school_id=demo["school_id"],
        school_api_key=demo["school_api_key"],
        devices=devices,
        stores=[s["store_id"] for s in demo["stores"]],
        cards=[c["card_no"] for c in sorted(demo["cards"], key=lambda c: -int(c.get("balance") or 0))][:1],
        metrics_token=os.environ.get("CAMPUSPAY_METRICS_TOKEN"),
        seed=int(os.environ.get("CAMPUSPAY_SCHEMATHESIS_SEED", "0")),
    )
    for card in demo["cards"]:
        value.add("card_no", card["card_no"])
        value.add("student_id", card["student"])
    value.connect_url = os.environ.get("CAMPUSPAY_SCHEMATHESIS_URL", demo["base_url"])
    seed(value.connect_url, value)
    atexit.register(_write_stats, value)
    return value


def _write_stats(t: Target) -> None:
    print(report(t), file=sys.stderr)
    path = os.environ.get("CAMPUSPAY_SCHEMATHESIS_STATS")
    if path:
        rows = [{"operation": o, "status": s, "code": c, "count": n} for (o, s, c), n in t.stats.items()]
        Path(path).write_text(json.dumps(rows, indent=1))


# --- seeding: real objects for the path parameters, made through the API itself -----------------


def seed(base_url: str, t: Target) -> None:
    """Make, through the public API at ``base_url``, the objects whose ids the run puts in paths:
    payments and a refund by the signing devices, a guardian's consent, an enrolment when the
    school has Alipay, and three spare devices with two keys each for the revoke and rotate
    operations."""
    with httpx.Client(base_url=base_url, timeout=30) as http:

        def admin(method: str, path: str, body: Any = None) -> httpx.Response:
            return http.request(
                method, path, json=body, headers={"Authorization": f"Bearer {t.school_api_key}"}
            )

        school = f"/v1/schools/{t.school_id}"
        t.add("school_id", t.school_id)
        for store in t.stores:
            t.add("store_id", store)
        for adapter in ("ecard", "alipay", "bank"):
            t.add("adapter", adapter)

        for creds in t.devices:
            payment = _signed(http, t, creds, "POST", "/v1/payments", _payment_body(t), idempotent=True)
            if payment.status_code in (200, 201, 202):
                t.add("payment_id", payment.json()["id"])
            paid = _signed(http, t, creds, "POST", "/v1/payments", _payment_body(t), idempotent=True)
            if paid.status_code == 201 and paid.json()["status"] == "succeeded":
                pid = paid.json()["id"]
                t.add("payment_id", pid)
                refund = _signed(
                    http, t, creds, "POST", f"/v1/payments/{pid}/refunds", {"amount": 100}, idempotent=True
                )
                if refund.status_code in (200, 201, 202):
                    t.add("refund_id", refund.json()["id"])
            for _ in range(3):  # kept for the refunds operation: cancels would leave nothing to refund
                paid = _signed(http, t, creds, "POST", "/v1/payments", _payment_body(t), idempotent=True)
                if paid.status_code == 201 and paid.json()["status"] == "succeeded":
                    t.add("refundable_payment_id", paid.json()["id"])

        for n in range(3):
            r = admin("POST", f"{school}/devices", {"name": f"spare {n}", "alg": "hmac-sha256"})
            assert r.status_code == 201, r.text
            device = r.json()["device_id"]
            t.add("device_id", device)
            t.add("key_id", r.json()["key_id"])
            _, public = generate_ed25519_keypair()
            r = admin("POST", f"{school}/devices/{device}/keys", {"alg": "ed25519", "public_key": public})
            assert r.status_code == 201, r.text
            t.add("key_id", r.json()["key_id"])

        _seed_consent(admin, school, t)
        # the discard port on this machine: a sandbox gateway takes it, and deliveries go nowhere
        endpoint = admin("POST", f"{school}/webhook-endpoints", {"url": "http://127.0.0.1:9/campuspay"})
        if endpoint.status_code == 201:
            t.add("endpoint_id", endpoint.json()["id"])
        sources = admin("GET", f"{school}/funding-sources")
        if sources.status_code == 200:
            for source in sources.json():
                t.add("source_id", source["id"])


def _seed_consent(admin: Any, school: str, t: Target) -> None:
    notice_fields = {
        "version": f"st-{uuid.uuid4().hex[:8]}",
        "content": "Stand-alone notice: face payment at this school (schemathesis run).",
        "standalone": True,
        "controller": "Test School",
        "contact": "privacy@school.test",
        "purpose": "Canteen payments by face",
        "method": "Provider-side matching; the school sees only a token",
        "retention": "Until withdrawal, end of consent, or leaving school",
        "rights": "See, copy, correct, delete; withdraw in one step",
        "necessity_impact": "Optional; cards always work",
    }
    notice = admin("POST", f"{school}/consent-notices", notice_fields)
    if notice.status_code != 201:
        return
    n = notice.json()
    r = admin(
        "POST",
        f"{school}/students",
        {"external_ref": f"st-{uuid.uuid4().hex[:10]}", "age_band": "under_14"},
    )
    assert r.status_code == 201, r.text
    student = r.json()["id"]
    t.add("student_id", student)
    guardian = admin(
        "POST", f"{school}/guardians", {"student_id": student, "external_ref": "st-g", "relation": "mother"}
    )
    assert guardian.status_code == 201, guardian.text
    t.add("guardian_id", guardian.json()["id"])
    consent = admin(
        "POST",
        f"{school}/consents",
        {
            "student_id": student,
            "signer": {"type": "guardian", "guardian_id": guardian.json()["id"]},
            "notice_id": n["id"],
            "notice_version": n["version"],
            "notice_hash": n["content_hash"],
            "scope": "face_payment",
            "ends_at": (datetime.now(UTC) + timedelta(days=200)).isoformat(),
        },
    )
    if consent.status_code == 201:
        t.add("consent_id", consent.json()["id"])
        enrollment = admin(
            "POST",
            f"{school}/enrollments",
            {
                "student_id": student,
                "provider": "alipay",
                "provider_user_id": "2088101000000009",
                "consent_id": consent.json()["id"],
            },
        )
        if enrollment.status_code == 201:
            t.add("enrollment_id", enrollment.json()["id"])


def _payment_body(t: Target) -> dict[str, Any]:
    return {
        "merchant_order_id": f"st-seed-{uuid.uuid4().hex[:12]}",
        "amount": 1000,  # ends in 00: no magic amount (docs/test-values.md)
        "currency": "CNY",
        "method": "card",
        "credential": {"card_no": t.cards[0]},
        "store_id": t.stores[0],
    }


def _signed(
    http: httpx.Client,
    t: Target,
    creds: DeviceCredentials,
    method: str,
    path: str,
    body: Any,
    *,
    idempotent: bool,
) -> httpx.Response:
    content = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
    headers = {"Content-Type": "application/json"} if content else {}
    if idempotent:
        headers["Idempotency-Key"] = str(uuid.uuid4())
    request = http.build_request(method, path, content=content or None, headers=headers)
    sign_request(request, creds, public_base_url=t.public_base_url)
    return http.send(request)


# --- signing --------------------------------------------------------------------------------------


class Credentials(requests.auth.AuthBase):
    """Puts the real credentials in place of the placeholders as ``requests`` prepares a request:
    the admin tokens, and a device signature over the body bytes and the request target exactly
    as they will be sent, made as ``CampusPayClient`` makes it (``sign_request``)."""

    def __init__(self) -> None:
        self._turn = 0
        self._lock = threading.Lock()

    def _next_device(self, t: Target) -> DeviceCredentials:
        with self._lock:
            self._turn += 1
            return t.devices[self._turn % len(t.devices)]

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        t = target()
        authorization = r.headers.get("Authorization")
        if authorization == f"Bearer {PLATFORM}":
            r.headers["Authorization"] = f"Bearer {t.platform_token}"
        elif authorization == f"Bearer {SCHOOL}":
            school = _SCHOOL_PATH.match(r.path_url or "")
            key = t.school_keys.get(school.group(1), t.school_api_key) if school else t.school_api_key
            r.headers["Authorization"] = f"Bearer {key}"
        elif authorization == f"Bearer {METRICS}":
            if t.metrics_token:
                r.headers["Authorization"] = f"Bearer {t.metrics_token}"
            else:
                del r.headers["Authorization"]
        if r.headers.get("Signature") == PLACEHOLDER:
            del r.headers["Signature"]
            self._sign(r, t)
        return r

    def _sign(self, r: requests.PreparedRequest, t: Target) -> None:
        body = r.body
        if isinstance(body, str):  # http.client would send a str as Latin-1; sign and send bytes
            body = body.encode()
            r.body = body
            r.prepare_content_length(body)
        if body is not None and not isinstance(body, bytes):
            return  # a streamed body cannot be digested ahead: it goes unsigned and gets a 401
        headers = {}
        key = r.headers.get("Idempotency-Key")
        if key is not None:
            headers["Idempotency-Key"] = key
        target_path = r.path_url or "/"
        try:
            request = httpx.Request(
                r.method or "GET", t.public_base_url + target_path, headers=headers, content=body or b""
            )
        except (UnicodeError, httpx.InvalidURL):
            return  # what httpx cannot encode a terminal could not sign either: unsigned, a 401
        if request.url.raw_path != target_path.encode():
            raise AssertionError(f"httpx and requests disagree about the request target {target_path!r}")
        sign_request(request, self._next_device(t))
        for name in ("Content-Digest", "Signature-Input", "Signature"):
            if name in request.headers:
                r.headers[name] = request.headers[name]


CREDENTIALS = Credentials()
PLATFORM, SCHOOL, METRICS = "campuspay-platform-token", "campuspay-school-key", "campuspay-metrics-token"


def _schemes(case: Any) -> set[str]:
    operation = case.operation.schema.raw_schema["paths"][case.operation.path][case.operation.method.lower()]
    return {name for requirement in operation.get("security", []) for name in requirement}


@schemathesis.auth(refresh_interval=None, retry_on=[])
class CampusPayAuth:
    """The credentials each operation's security scheme asks for, as placeholders: cases are
    made before the gateway is (schemathesis' coverage phase runs at collection), so the real
    values are put in when a request is sent (``Credentials``)."""

    def get(self, case: Any, context: Any) -> str:
        return "campuspay"

    def set(self, case: Any, data: str, context: Any) -> None:
        schemes = _schemes(case)
        if not isinstance(case.headers, MutableMapping):
            case.headers = {}
        if "deviceSignature" in schemes:
            case.headers["Signature"] = PLACEHOLDER
        elif "metricsToken" in schemes:
            case.headers["Authorization"] = f"Bearer {METRICS}"
        elif "bearer" in schemes:
            platform = (case.operation.method.upper(), case.operation.path) in PLATFORM_OPERATIONS
            case.headers["Authorization"] = f"Bearer {PLATFORM if platform else SCHOOL}"


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    """Counts the answer, and keeps the ids of what it created for later paths and bodies."""
    t = target()
    status = response.status_code
    code, body = "", None
    try:
        body = json.loads(response.content) if response.content else None
    except ValueError:
        code = "?" if status >= 400 else ""
    if status >= 400 and isinstance(body, dict):
        code = str(body.get("code", ""))
    operation = f"{case.operation.method.upper()} {case.operation.path}"
    with _lock:
        t.stats[(operation, status, code)] += 1
        if operation == "POST /v1/schools" and status == 201 and isinstance(body, dict):
            t.school_keys[str(body.get("id"))] = str(body.get("api_key"))
            while len(t.school_keys) > HARVESTED:  # the newest schools and, always, the seeded one
                oldest = next(k for k in t.school_keys if k != t.school_id)
                del t.school_keys[oldest]
        if 200 <= status < 300 and isinstance(body, dict):
            for key in ("id", "device_id", "key_id"):
                value = body.get(key)
                kind = ID_PREFIXES.get(value.partition("_")[0]) if isinstance(value, str) else None
                if kind is not None:
                    t.add(kind, value, keep=HARVESTED)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Just before sending: the credentials, a fresh Idempotency-Key, real ids in the path."""
    kwargs.setdefault("auth", CREDENTIALS)
    t = target()
    meta = case.meta
    operation = (case.operation.method.upper(), case.operation.path)
    # The stateful phase fills parameters from the responses its links follow: leave them be.
    stateful = meta is not None and meta.phase.name == TestPhase.STATEFUL
    with _lock:
        if isinstance(case.headers, MutableMapping) and isinstance(case.headers.get("Idempotency-Key"), str):
            negative = meta is not None and meta.is_negative_at(ParameterLocation.HEADER)
            if not negative and _KEY.match(case.headers["Idempotency-Key"]):
                previous = t.last_keys.get(operation)
                if previous is not None and t.rng.random() < 1 / 8:
                    case.headers["Idempotency-Key"] = previous
                else:
                    case.headers["Idempotency-Key"] = str(uuid.uuid4())
                t.last_keys[operation] = case.headers["Idempotency-Key"]
        if stateful:
            return
        if isinstance(case.path_parameters, MutableMapping) and not (
            meta is not None and meta.is_negative_at(ParameterLocation.PATH)
        ):
            kept = KEEP_GENERATED.get(operation, {})
            kinds = ID_KINDS.get(operation, {})
            for name in list(case.path_parameters):
                choices = [v for v in t.ids.get(kinds.get(name, name), []) if v not in kept.get(name, set())]
                if choices and t.rng.random() < 0.8:
                    case.path_parameters[name] = t.rng.choice(choices)
        # Only into a valid body: a real id in an invalid one could make it valid, and then its
        # acceptance would read as a failure to reject it.
        if isinstance(case.body, dict) and not (
            meta is not None and meta.is_negative_at(ParameterLocation.BODY)
        ):
            _real_ids_in(case.body, t)


def _real_ids_in(value: Any, t: Target) -> None:
    """Most string ids the body names (at any depth) become ids of the seeded school's objects."""
    if isinstance(value, list):
        for item in value:
            _real_ids_in(item, t)
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        choices = t.ids.get(BODY_IDS.get(key, ""), [])
        if isinstance(item, str) and choices and t.rng.random() < 0.8:
            value[key] = t.rng.choice(choices)
        else:
            _real_ids_in(item, t)
