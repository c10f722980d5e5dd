"""The production guard on calls out (issue 7 A4, docs/decisions/0014-outbound-guard.md).

Every spelling of loopback, unspecified, link-local and metadata addresses is refused in
production at PUT, at start-up for settings stored before, and at call time for a name that
starts resolving there; private addresses only through the platform admin's per-school
allow-list; credentials the repository publishes are refused; connections go to the checked
address (real sockets), with Host and TLS SNI kept, and redirects are not followed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import re
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.app import StartupRefused, create_app
from gateway.outbound import Guard, IPNetwork, NetworkConnector, Outbound, SystemResolver
from gateway.outbound.addresses import parse_allowlist
from gateway.settings import Environment
from gateway.store.models import DeviceKey, ProviderSetting
from sandbox.alipay.keys import ALIPAY_PUBLIC_KEY_PEM
from sandbox.testvalues import ECARD_DEFAULT_SECRET
from tests.harness import Harness, start_harness
from tests.outbound_helpers import PUBLIC_IP, StaticResolver
from tests.signing_helpers import assert_problem

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
CAMPUS = "http://ecard.campus.example"  # resolves to PUBLIC_IP unless a test changes it
NAMES = {
    "ecard.campus.example": [PUBLIC_IP],
    "hosts-entry.campus.example": ["127.0.0.1"],  # as an /etc/hosts line or a DNS answer would
    "v6-loopback.example": ["::1"],
    "metadata.campus.example": ["169.254.169.254"],
    "mixed.example": [PUBLIC_IP, "127.0.0.1"],
    "lan-only.example": ["10.20.0.5"],
}
# Each of these must be refused in production, whoever stores it and whenever.
REFUSED = [
    "http://127.0.0.1/ecard",
    "http://127.1/ecard",
    "http://2130706433/ecard",
    "http://0x7f000001/ecard",
    "http://0177.0.0.1/ecard",
    "http://0.0.0.0/ecard",
    "http://0/ecard",
    "http://[::ffff:127.0.0.1]/ecard",
    "http://[::1]/ecard",
    "http://[::]/ecard",
    "http://localhost/ecard",
    "http://localhost./ecard",
    "http://sandbox.test/ecard",
    "http://hosts-entry.campus.example/ecard",
    "http://v6-loopback.example/ecard",
    "http://mixed.example/ecard",
    "http://169.254.169.254/latest/meta-data/",
    "http://0xa9fea9fe/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/",
    "http://metadata.campus.example/",
    "http://[fe80::1]/ecard",
    "http://100.100.100.200/latest/meta-data/",
    "http://[64:ff9b::7f00:1]/ecard",
    "http://[2002:7f00:1::]/ecard",
    "http://10.20.0.5/ecard",  # private, and no allow-list
    "http://lan-only.example/ecard",
]


@asynccontextmanager
async def production(tmp_path: Path, database_url: str | None = None, **kw: Any) -> AsyncIterator[Harness]:
    resolver = kw.pop("resolver", None) or StaticResolver(NAMES)
    url = database_url or f"sqlite+aiosqlite:///{tmp_path / 'prod.db'}"
    async with start_harness(
        database_url=url, data_dir=tmp_path, env="production", resolver=resolver, provider_base=CAMPUS, **kw
    ) as h:
        yield h


def _ecard(h: Harness, endpoint: str) -> dict[str, Any]:
    return {"endpoint": endpoint, "credentials": {"merchant_id": h.merchant_id, "secret": h.merchant_secret}}


async def test_production_refuses_every_spelling_at_put(tmp_path: Path) -> None:
    async with production(tmp_path, run_workers=False) as h:
        path = f"/v1/schools/{h.school_id}/providers/ecard"
        for endpoint in REFUSED:
            body = assert_problem(
                await h.admin("PUT", path, _ecard(h, endpoint)), 422, "endpoint_not_allowed"
            )
            assert "production does not call" in body["detail"] or "sandbox host" in body["detail"], body
        assert (await h.admin("GET", path)).json()["endpoint"] == f"{CAMPUS}/ecard"  # nothing written
        unresolvable = _ecard(h, "https://nowhere.campus.example/ecard")
        body = assert_problem(await h.admin("PUT", path, unresolvable), 422, "endpoint_not_allowed")
        assert "does not resolve" in body["detail"]


def _loopback_names() -> set[str]:
    """``localhost.`` and every name /etc/hosts gives a loopback address."""
    names = {"localhost."}
    for line in Path("/etc/hosts").read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and ipaddress.ip_address(fields[0]).is_loopback:
            names.update(fields[1:])
    return names


async def test_the_system_resolver_s_loopback_names_are_refused() -> None:
    """Names the machine itself resolves to loopback: refused (by name, or by the address the
    operating system's resolver gives them)."""
    names = _loopback_names()

    async def no_allowlist(school_id: str) -> Sequence[IPNetwork]:
        return []

    guard = Guard(Environment.PRODUCTION, SystemResolver(), no_allowlist)
    for name in sorted(names):
        with pytest.raises(Exception, match=r"loopback|sandbox host name") as refused:
            await guard.check_url(f"http://{name}/ecard", "sch_x")
        assert type(refused.value).__name__ == "EndpointRefused", (name, refused.value)


async def test_production_refuses_to_start_on_settings_stored_before(tmp_path: Path) -> None:
    async with production(tmp_path, run_workers=False) as h:
        keyring, settings = h.services.keyring, h.settings
        async with h.services.db.transaction() as session:
            for i, endpoint in enumerate([*REFUSED, "https://nowhere.campus.example/"]):
                adapter = f"ecard.s{i}"
                creds = keyring.encrypt(
                    json.dumps({"merchant_id": "m", "secret": "s"}),
                    aad=f"provider_settings/{h.school_id}/{adapter}",
                )
                session.add(
                    ProviderSetting(
                        school_id=h.school_id, adapter=adapter, endpoint=endpoint, credentials_enc=creds
                    )
                )
            published = keyring.encrypt(
                json.dumps({"merchant_id": "m_test", "secret": ECARD_DEFAULT_SECRET}),
                aad=f"provider_settings/{h.school_id}/ecard.published",
            )
            session.add(
                ProviderSetting(
                    school_id=h.school_id,
                    adapter="ecard.published",
                    endpoint=f"{CAMPUS}/e",
                    credentials_enc=published,
                )
            )
            assert h.device is not None
            session.add(
                DeviceKey(
                    key_id="key_published",
                    device_id=h.device.device_id,
                    school_id=h.school_id,
                    alg="ed25519",
                    public_key_pem=_signing_vector_key(),
                )
            )
    app = create_app(settings, resolver=StaticResolver(NAMES), run_workers=False)
    with pytest.raises(StartupRefused) as refused:
        async with app.router.lifespan_context(app):
            pass
    message = str(refused.value)
    for i, endpoint in enumerate(REFUSED):
        assert f"adapter ecard.s{i} -> {endpoint}" in message, endpoint
    assert "nowhere.campus.example" not in message  # unresolvable now: logged, judged at each call
    assert "adapter ecard.published: credentials.secret is the sandbox e-card secret" in message
    assert "key key_published: device.public_key is the signing vector key" in message


def _signing_vector_key() -> str:
    vectors = json.loads((ROOT / "tests/contract/vectors/signing.json").read_text())
    key: str = vectors["keys"]["ed25519"]["public_key_pem"]
    return key


@dataclass
class Wire:
    """The network between gateway and providers: what reached it."""

    inner: httpx.AsyncBaseTransport
    requests: list[str] = field(default_factory=list)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url}")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_name_that_starts_resolving_to_loopback_is_refused_at_call_time(tmp_path: Path) -> None:
    resolver = StaticResolver(NAMES)
    wires: list[Wire] = []

    def wrap(inner: httpx.AsyncBaseTransport) -> Any:
        wires.append(Wire(inner))
        return wires[0]

    async with production(tmp_path, resolver=resolver, wrap_transport=wrap) as h, h.client() as client:
        paid = await client.create_payment(**h.payment())
        assert paid.body["status"] == "succeeded", paid.body
        assert len(await h.debits()) == 1
        reached = len(wires[0].requests)

        resolver.answers["ecard.campus.example"] = ["127.0.0.1"]  # a local sandbox now answers the name
        refused = await client.create_payment(**h.payment())
        assert (refused.body["status"], refused.body["failure_code"]) == ("failed", "provider_unavailable")
        check = f"/v1/schools/{h.school_id}/providers/ecard/check"
        assert (
            "loopback" in assert_problem(await h.admin("POST", check), 422, "endpoint_not_allowed")["detail"]
        )

        resolver.answers["ecard.campus.example"] = ["169.254.169.254"]
        assert (
            "metadata" in assert_problem(await h.admin("POST", check), 422, "endpoint_not_allowed")["detail"]
        )
        assert len(await h.debits()) == 1
        assert len(wires[0].requests) == reached  # not one byte went out for either


async def test_only_the_platform_admin_opens_a_private_network_and_only_for_that_school(
    tmp_path: Path, empty_database_url: str
) -> None:
    # Its own database: a production harness refuses to start on a shared one holding other
    # tests' sandbox providers.
    lan = "http://10.20.0.5/ecard"
    async with production(tmp_path, empty_database_url) as h, h.client() as client:
        providers = f"/v1/schools/{h.school_id}/providers/ecard"
        allowlist = f"/v1/schools/{h.school_id}/network-allowlist"
        assert_problem(await h.admin("PUT", providers, _ecard(h, lan)), 422, "endpoint_not_allowed")
        # the school's own admin may read it, not set it
        assert (await h.admin("GET", allowlist)).json() == {
            "school_id": h.school_id,
            "cidrs": [],
            "updated_at": None,
        }
        assert_problem(await h.admin("PUT", allowlist, {"cidrs": ["10.20.0.0/16"]}), 403, "forbidden")
        for bad in (["127.0.0.0/8"], ["169.254.0.0/16"], ["0.0.0.0/0"], ["10.20.0.1/16"], ["8.8.8.0/24"]):
            r = await h.admin("PUT", allowlist, {"cidrs": bad}, token=h.platform_token)
            assert_problem(r, 422, "validation_error")

        r = await h.admin(
            "PUT", allowlist, {"cidrs": ["10.20.0.0/16", "fd00:1::/32"]}, token=h.platform_token
        )
        assert r.status_code == 200, r.text
        assert r.json()["cidrs"] == ["10.20.0.0/16", "fd00:1::/32"]
        assert (await h.admin("PUT", providers, _ecard(h, lan))).status_code == 200
        paid = await client.create_payment(**h.payment())
        assert paid.body["status"] == "succeeded", paid.body
        # the allow-list opens private addresses, never loopback or metadata ones
        for endpoint in ("http://127.0.0.1/ecard", "http://169.254.169.254/"):
            assert_problem(await h.admin("PUT", providers, _ecard(h, endpoint)), 422, "endpoint_not_allowed")

        other = await h.admin("POST", "/v1/schools", {"name": "Other"}, token=h.platform_token)
        other_id, other_key = other.json()["id"], other.json()["api_key"]
        r = await h.admin("PUT", f"/v1/schools/{other_id}/providers/ecard", _ecard(h, lan), token=other_key)
        assert_problem(r, 422, "endpoint_not_allowed")
        assert_problem(await h.admin("GET", allowlist, token=other_key), 404, "not_found")

        # narrowing takes effect at the next call
        r = await h.admin("PUT", allowlist, {"cidrs": []}, token=h.platform_token)
        assert r.status_code == 200 and r.json()["cidrs"] == []
        refused = await client.create_payment(**h.payment())
        assert (refused.body["status"], refused.body["failure_code"]) == (
            "failed",
            "provider_unavailable",
        )
        assert len(await h.debits()) == 1
        audit = (await h.admin("GET", f"/v1/schools/{h.school_id}/audit")).json()["data"]
        assert [e["action"] for e in audit].count("network_allowlist.updated") == 2


async def test_production_refuses_the_repository_s_published_credentials(tmp_path: Path) -> None:
    pki = ROOT / "sandbox/bank/pki"
    alipay_body = "".join(ALIPAY_PUBLIC_KEY_PEM.strip().splitlines()[1:-1])
    refused = {
        "ecard": ({"merchant_id": "m_test", "secret": ECARD_DEFAULT_SECRET}, "secret"),
        "bank": (
            {
                "mer_id": "777290058110011",
                "sign_method": "11",
                "tr_id": "6",
                "secure_key": "campuspay-bank-secure-key-11-0123456789abcdef",
            },
            "secure_key",
        ),
        "bank.cert": (
            {
                "mer_id": "777290058110001",
                "sign_method": "01",
                "tr_id": "62000000001",
                "merchant_private_key": "not the published key",
                "bank_root_ca": (pki / "root-ca.pem").read_text(),
            },
            "bank_root_ca",
        ),
        "alipay": (
            {"app_id": "2021000000000009", "app_private_key": "x", "alipay_public_key": alipay_body},
            "alipay_public_key",
        ),
    }
    async with production(tmp_path, run_workers=False) as h:
        for adapter, (credentials, field_name) in refused.items():
            body = {"endpoint": "https://provider.campus.example/", "credentials": credentials}
            r = await h.admin("PUT", f"/v1/schools/{h.school_id}/providers/{adapter}", body)
            problem = assert_problem(r, 422, "sandbox_credential_in_production")
            assert f"credentials.{field_name} is the" in problem["detail"], problem
            assert credentials[field_name].strip()[:30] not in problem["detail"]
        devices = f"/v1/schools/{h.school_id}/devices"
        key = _signing_vector_key()
        r = await h.admin("POST", devices, {"name": "till", "alg": "ed25519", "public_key": key})
        assert_problem(r, 422, "sandbox_credential_in_production")
        assert h.device is not None
        r = await h.admin(
            "POST", f"{devices}/{h.device.device_id}/keys", {"alg": "ed25519", "public_key": key}
        )
        assert_problem(r, 422, "sandbox_credential_in_production")


# --- real sockets -------------------------------------------------------------------------------


@dataclass
class Server:
    """A tiny HTTP/1.1 server on 127.0.0.1: records each connection's TLS SNI and each request's Host."""

    port: int = 0
    connections: int = 0
    seen: list[tuple[str | None, str]] = field(default_factory=list)  # (SNI, Host)


def _host_header(head: bytes) -> str:
    match = re.search(rb"^host:\s*(\S+)\s*$", head, re.IGNORECASE | re.MULTILINE)
    return match.group(1).decode() if match else ""


@asynccontextmanager
async def http_server(tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server()
    names: dict[int, str | None] = {}
    if tls is not None:
        tls.sni_callback = lambda obj, name, _ctx: names.__setitem__(id(obj), name)  # type: ignore[assignment]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        sni = names.get(id(writer.get_extra_info("ssl_object")))
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                server.seen.append((sni, _host_header(head)))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        await listener.wait_closed()


def _certificate(tmp_path: Path, names: list[str]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for ``names``: (server context, client context trusting it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client


def _outbound(
    env: Environment, resolver: StaticResolver, allowlist: list[str], verify: ssl.SSLContext | None = None
) -> Outbound:
    networks = parse_allowlist(allowlist)

    async def allowlists(school_id: str) -> Sequence[IPNetwork]:
        return networks

    connector = NetworkConnector(resolver, limits=httpx.Limits(max_connections=4), verify=verify)
    return Outbound(Guard(env, resolver, allowlists), connector, timeout=2.0)


async def test_tls_goes_to_the_resolved_address_with_the_name_in_sni_and_host(tmp_path: Path) -> None:
    server_tls, client_tls = _certificate(tmp_path, ["provider.test", "other.test"])
    # the second answer for provider.test would reach nothing: a second lookup would fail the call
    resolver = StaticResolver({"provider.test": [["127.0.0.1"], ["127.0.0.2"]], "other.test": ["127.0.0.1"]})
    outbound = _outbound(Environment.SANDBOX, resolver, [], verify=client_tls)
    try:
        async with http_server(server_tls) as server:
            client = outbound.client("sch_1")
            for name in ("provider.test", "other.test"):
                response = await client.get(f"https://{name}:{server.port}/v1/ping")
                assert (response.status_code, response.text) == (200, "ok")
            # one lookup per request; each name on its own connection, verified for that name
            assert resolver.calls == ["provider.test", "other.test"]
            assert server.seen == [
                ("provider.test", f"provider.test:{server.port}"),
                ("other.test", f"other.test:{server.port}"),
            ]
    finally:
        await outbound.aclose()


async def test_production_connects_to_the_checked_address_not_to_a_second_answer(tmp_path: Path) -> None:
    """DNS rebinding: the name passes the check with an allow-listed LAN address, then would
    answer loopback (where a server listens). The connection must go to the checked address."""
    resolver = StaticResolver({"ecard.campus.example": [["10.20.0.5"], ["127.0.0.1"]]})
    outbound = _outbound(Environment.PRODUCTION, resolver, ["10.20.0.0/16"])
    try:
        async with http_server() as server:
            client = outbound.client("sch_1")
            with pytest.raises(httpx.TransportError):  # nothing listens at 10.20.0.5 here
                await client.get(f"http://ecard.campus.example:{server.port}/", timeout=httpx.Timeout(1.0))
            assert server.connections == 0
            assert resolver.calls == ["ecard.campus.example"]
            resolver.answers["ecard.campus.example"] = ["127.0.0.1"]
            with pytest.raises(httpx.ConnectError, match="loopback"):
                await client.get(f"http://ecard.campus.example:{server.port}/")
            assert server.connections == 0
    finally:
        await outbound.aclose()


async def test_a_redirect_from_a_provider_is_its_answer(tmp_path: Path) -> None:
    resolver = StaticResolver({"provider.test": ["127.0.0.1"]})
    outbound = _outbound(Environment.SANDBOX, resolver, [])

    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:1/x\r\nContent-Length: 0\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(redirect, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        response = await outbound.client(None).get(f"http://provider.test:{port}/", follow_redirects=True)
        assert response.status_code == 307 and response.headers["location"] == "http://127.0.0.1:1/x"
    finally:
        listener.close()
        await listener.wait_closed()
        await outbound.aclose()
