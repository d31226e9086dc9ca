"""The HTTP guards in the service's own order, on a bare Starlette app: no model, no BentoML start."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serving.guards import guards
from tests.helpers import photo

KEY = "s3cret"


@pytest.fixture
def client(settings):
    settings.api_key = SecretStr(KEY)
    settings.serving = settings.serving.model_copy(update={"max_body_bytes": 100_000, "max_header_bytes": 4096})

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"bytes": len(await request.body())})

    app = Starlette(routes=[Route(p, echo, methods=["GET", "POST"]) for p in ("/predict", "/compare", "/reload")],
                    middleware=[Middleware(guard, **options) for guard, options in guards(settings)])
    with TestClient(app) as test_client:
        yield test_client


def test_the_api_key_is_checked_before_anything_of_the_body(client):
    huge = {"image": ("a.jpg", b"\xff\xd8\xff" + b"\0" * 200_000)}
    assert client.post("/predict", files=huge).status_code == 401  # not 413: an anonymous body is never read
    assert client.post("/predict", json={"image": "http://x"}).status_code == 401
    assert client.post("/predict", files=huge, headers={"X-API-Key": KEY}).status_code == 413


@pytest.mark.parametrize("path", ["/predict", "/compare"])
def test_image_routes_take_only_multipart(client, path):
    auth = {"X-API-Key": KEY}
    for kwargs in ({"json": {"image": "http://169.254.169.254/"}}, {"data": {"image": "x"}},
                   {"content": b"\xff\xd8\xff", "headers": {"Content-Type": "image/jpeg"}}, {"content": b""}):
        headers = {**auth, **kwargs.pop("headers", {})}
        r = client.post(path, **kwargs, headers=headers)
        assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type", r.text
    ok = client.post(path, files={"image": ("a.jpg", photo(0))}, headers=auth)
    assert ok.status_code == 200 and ok.json()["bytes"] > 0
    assert client.post("/reload", json={}, headers=auth).status_code == 200  # other routes keep their types


def test_oversized_headers_get_431(client):
    r = client.post("/reload", headers={"X-API-Key": KEY, "X-Padding": "x" * 5000})
    assert r.status_code == 431 and r.json()["error"] == "headers_too_large"
    assert client.post("/reload", headers={"X-API-Key": KEY, "X-Padding": "x" * 1000}).status_code == 200
