"""A fresh sandbox per test, reached over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from sandbox import create_sandbox_app

from .ecard_client import Ecard


@pytest.fixture
def app() -> FastAPI:
    return create_sandbox_app()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox.test") as c:
        yield c


@pytest.fixture
def ecard(client: httpx.AsyncClient) -> Ecard:
    return Ecard(client)
