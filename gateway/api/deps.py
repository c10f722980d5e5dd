"""Dependencies shared by the routers: the services, and who is calling."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer

from gateway.auth.guardians import ON_BEHALF_OF, GuardianCaller
from gateway.auth.headers import RequestHeaders
from gateway.auth.tokens import AdminPrincipal
from gateway.idempotency.service import validate_key
from gateway.payments.service import Caller
from gateway.protection.biometrics import reject_biometric_payload
from gateway.services import Services

__all__ = ["AdminDep", "DeviceDep", "GuardianDep", "ServicesDep", "device_headers", "path_and_query"]


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def path_and_query(request: Request) -> str:
    """The request target exactly as sent (raw, still percent-encoded), for ``@target-uri``."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if raw else request.url.path
    if "?" not in path and request.scope.get("query_string"):
        path += "?" + request.scope["query_string"].decode("latin-1")
    return path


# Declared as security schemes so that the OpenAPI document says how each operation is
# authenticated. auto_error=False: the checks themselves, and their problem codes, are ours.
_SIGNATURE = APIKeyHeader(
    name="Signature",
    scheme_name="deviceSignature",
    description=(
        "RFC 9421 HTTP Message Signature by a registered device key (Ed25519 or HMAC-SHA256), with "
        "`Signature-Input` (covering @method, @target-uri, content-digest when there is a body, "
        "idempotency-key when sent; `created`, `nonce`, `keyid`, `alg`) and RFC 9530 "
        "`Content-Digest`. See docs/signing.md for the rules and test vectors."
    ),
    auto_error=False,
)
_BEARER = HTTPBearer(
    scheme_name="bearer",
    description="A platform token or a school-admin API key (`Authorization: Bearer …`).",
    auto_error=False,
)


def device_headers(request: Request) -> RequestHeaders:
    """The one reading of a device request's headers: the signature check and the
    Idempotency-Key handling both use it, so both see the same single value of each."""
    headers: RequestHeaders | None = getattr(request.state, "device_headers", None)
    if headers is None:
        headers = RequestHeaders(request.scope["headers"])
        request.state.device_headers = headers
    return headers


def _parsed(body: bytes) -> Any:
    """The body as JSON, or None when it is empty or not JSON (the router then refuses it)."""
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


async def authenticate_device(
    request: Request, services: ServicesDep, _signature: Annotated[str | None, Security(_SIGNATURE)]
) -> Caller:
    body = await request.body()
    headers = device_headers(request)
    if "idempotency-key" in headers:
        # A malformed key cannot even be signed over: say what is wrong with it, not "bad
        # signature". A repeated one is refused first: which copy would be "the" key?
        headers.require_single(["idempotency-key"])
        validate_key(headers["idempotency-key"])
    identity = await services.devices.authenticate(
        method=request.method,
        path_and_query=path_and_query(request),
        headers=headers,
        body=body,
        now=services.clock(),
    )
    await services.rate_limiter.check(identity.device_id)  # before idempotency: a 429 stores nothing
    # COMPLIANCE rule 11, for every device request's whole body, before any router validates,
    # logs, stores or forwards it: an image or template goes nowhere (gateway.protection.biometrics).
    reject_biometric_payload(_parsed(body))
    return Caller(device_id=identity.device_id, school_id=identity.school_id)


async def authenticate_admin(
    request: Request, services: ServicesDep, _bearer: Annotated[object, Security(_BEARER)]
) -> AdminPrincipal:
    return await services.tokens.authenticate(request.headers.get("authorization"))


async def authenticate_guardian(
    school_id: str,
    student_id: str,
    services: ServicesDep,
    admin: Annotated[AdminPrincipal, Depends(authenticate_admin)],
    on_behalf_of: Annotated[
        str | None,
        Header(
            alias=ON_BEHALF_OF,
            max_length=40,
            description="The guardian the call acts for (`grd_…`), or the student's own id for a "
            "student of 14-17 acting for themself",
        ),
    ] = None,
) -> GuardianCaller:
    """A guardian path (``/v1/schools/{school_id}/students/{student_id}/…``): the key, and the
    guardian of this student it acts for."""
    return await services.guardians.authorize(admin, school_id, student_id, on_behalf_of)


DeviceDep = Annotated[Caller, Depends(authenticate_device)]
AdminDep = Annotated[AdminPrincipal, Depends(authenticate_admin)]
GuardianDep = Annotated[GuardianCaller, Depends(authenticate_guardian)]
