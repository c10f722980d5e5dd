"""The committed OpenAPI document is generated from the app (``campuspay openapi``)."""

from __future__ import annotations

import json

from gateway.app import create_app
from gateway.settings import Environment, Settings

__all__ = ["render"]


def render() -> str:
    # production: the sandbox mount is not part of the public API. Built from the defaults alone
    # (model_construct reads no CAMPUSPAY_* variables): the committed document must not depend
    # on who generated it.
    settings = Settings.model_construct(env=Environment.PRODUCTION, master_key="A" * 43 + "=")
    app = create_app(settings, run_workers=False)
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"
