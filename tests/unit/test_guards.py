"""The HTTP guards in the service's own order, on a bare Starlette app: no model, no BentoML start."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serving.guards import CancelOnDisconnect, guards
from tests.helpers import photo

KEY = "s3cret"
FIELDS = {"/predict": ("image", "followers"), "/compare": ("images",), "/reload": ()}


@pytest.fixture
def client(settings):
    settings.api_key = SecretStr(KEY)
    settings.serving = settings.serving.model_copy(update={"max_body_bytes": 100_000, "max_header_bytes": 4096})

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"bytes": len(await request.body())})

    app = Starlette(routes=[Route(p, echo, methods=["GET", "POST"]) for p in ("/predict", "/compare", "/reload")],
                    middleware=[Middleware(guard, **options) for guard, options in guards(settings, FIELDS)])
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
    ok = client.post(path, files={"image" if path == "/predict" else "images": ("a.jpg", photo(0))}, headers=auth)
    assert ok.status_code == 200 and ok.json()["bytes"] > 0
    assert client.post("/reload", json={}, headers=auth).status_code == 200  # other routes keep their types


def test_a_part_the_route_does_not_take_or_a_file_name_too_long_is_a_400(client):
    auth = {"X-API-Key": KEY}
    image = {"image": ("a.jpg", photo(0))}
    assert client.post("/predict", files=image, data={"followers": "3"}, headers=auth).status_code == 200
    for files, data in (({"other": ("a.jpg", photo(0))}, {}), (image, {"likes": "3"}),
                        ({"image": ("a" * 256 + ".jpg", photo(0))}, {})):
        r = client.post("/predict", files=files, data=data, headers=auth)
        assert r.status_code == 400 and r.json()["error"] == "bad_request", r.text
    assert "unknown fields ['other']" in client.post("/predict", files={"other": ("a.jpg", photo(0))},
                                                     headers=auth).json()["message"]


def test_oversized_headers_get_431(client):
    r = client.post("/reload", headers={"X-API-Key": KEY, "X-Padding": "x" * 5000})
    assert r.status_code == 431 and r.json()["error"] == "headers_too_large"
    assert client.post("/reload", headers={"X-API-Key": KEY, "X-Padding": "x" * 1000}).status_code == 200


@pytest.mark.parametrize("client_leaves", [True, False])
def test_a_handler_is_cancelled_when_its_client_leaves_before_the_answer(client_leaves):
    """The handler stands in for decoding then scoring; a client that leaves mid-way stops the rest."""
    steps: list[str] = []

    async def handler(scope, receive, send):
        assert (await receive())["body"] == b"photo"
        for step in ("decode", "score"):
            await asyncio.sleep(0.2)
            steps.append(step)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def run() -> list[dict]:
        inbox = [{"type": "http.request", "body": b"photo", "more_body": False}]
        sent: list[dict] = []

        async def receive():
            if inbox:
                return inbox.pop(0)
            await asyncio.sleep(0.3 if client_leaves else 10)  # leaves after the decode, before the score
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        await CancelOnDisconnect(handler)({"type": "http", "method": "POST", "path": "/predict"}, receive, send)
        return sent

    sent = asyncio.run(run())
    if client_leaves:
        assert steps == ["decode"] and sent == []
    else:
        assert steps == ["decode", "score"] and sent[0]["status"] == 200
