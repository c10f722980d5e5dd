"""The sandbox app: every provider under /{name}, the shared control plane under /_control.

Standalone: `uvicorn --factory sandbox.app:create_sandbox_app`. Inside the gateway:
`app.mount("/sandbox", create_sandbox_app())`. Regenerate openapi/sandbox-ecard.json with
`.venv/bin/python -c "import sandbox.app as s; s.write_ecard_openapi()"`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from sandbox.alipay import AlipayProvider
from sandbox.alipay.targets import AbsoluteFormTarget
from sandbox.bank import BankProvider
from sandbox.control import ControlPlane, control_router
from sandbox.ecard import EcardProvider
from sandbox.face import FaceProvider
from sandbox.persist import Book, CommitMiddleware, InPlace, StateStore

ECARD_OPENAPI_PATH = Path(__file__).resolve().parent.parent / "openapi" / "sandbox-ecard.json"


def create_sandbox_app(state_dir: Path | None = None) -> FastAPI:
    """A fresh sandbox with its own state: fixed test data, no faults, clock offset 0.

    With `state_dir`, the providers' books are loaded from it when it holds any and kept in it
    after every request (sandbox/persist.py), so a restarted sandbox carries on where it stopped.
    """
    control = ControlPlane()
    ecard = EcardProvider(control)  # registers itself with the control plane
    face = FaceProvider(control)  # before any provider that takes face tokens: it is given face.cloud
    alipay = AlipayProvider(control, directory=face.cloud)
    bank = BankProvider(control)
    app = FastAPI(title="CampusPay sandbox", version="1")
    app.state.control = control  # for in-process tests that want the control plane directly
    app.state.face_cloud = face.cloud  # the FaceDirectory every face-paying provider resolves tokens with
    app.state.alipay = alipay  # e.g. app.state.alipay.notify_client = <client into a gateway>
    app.state.bank = bank  # e.g. app.state.bank.notify_client = <client into a gateway>
    app.add_middleware(AbsoluteFormTarget)  # the official Alipay SDK sends absolute-form targets
    app.include_router(control_router(control), prefix="/_control")
    for name, provider in control.providers.items():
        app.mount(f"/{name}", provider.app)
    if state_dir is not None:
        books: dict[str, Book] = {"control": control}
        books.update({p.name: InPlace(p.state) for p in (ecard, alipay, bank)})
        store = StateStore(state_dir, books)
        app.state.restored = store.load()  # names of the books found in state_dir
        control.on_commit = store.save
        app.add_middleware(CommitMiddleware, store=store)
    return app


def ecard_openapi() -> dict[str, Any]:
    """The machine-readable e-card provider API, as committed in openapi/sandbox-ecard.json."""
    spec = EcardProvider(ControlPlane()).fastapi_app.openapi()
    spec["servers"] = [
        {"url": "http://127.0.0.1:8090/ecard", "description": "standalone sandbox"},
        {"url": "http://127.0.0.1:8080/sandbox/ecard", "description": "inside campuspay serve (sandbox env)"},
    ]
    return spec


def render_ecard_openapi() -> str:
    return json.dumps(ecard_openapi(), indent=2, sort_keys=True) + "\n"


def write_ecard_openapi() -> None:
    ECARD_OPENAPI_PATH.write_text(render_ecard_openapi(), encoding="utf-8")
