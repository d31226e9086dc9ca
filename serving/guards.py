"""ASGI guards at the HTTP boundary: security headers, the optional API key, a header cap, each route's
one media type, a rate limit per client on ``/feedback``, the request body cap and deadline, admission
by requests and images, and cancelling the work of a client that went away.

They run before BentoML parses a body, so an oversized, trickled or unauthorised upload costs neither
disk nor decoding, and the answer is a 4xx with a JSON message rather than a parser error.
:func:`guards` gives them in their order, the API key outermost: nothing of an anonymous request is read.
The body is read in full, within ``serving.body_deadline_s``, *before* the request is admitted: a client
trickling its body holds no admission slot (BentoML's own limit, outside these guards, is not used).
"""

from __future__ import annotations

import hmac
import json
import os
import tempfile

import anyio
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipelines.settings import Settings

OPEN_PATHS = ("/livez", "/readyz", "/healthz", "/metrics")
IMAGE_ROUTES = ("/predict", "/predict_batch", "/compare")
JSON_ROUTES = ("/feedback",)
FILE_FIELDS = ("image", "images")
IMAGES = "popularity.images"  # the request's uploaded images, in its ASGI scope's state (BodyCap → Admission)
# NAME_MAX is 255 bytes, and BentoML keeps an upload's name as the suffix of a temporary file named
# ``tmp`` + 8 random characters + the name (tempfile.NamedTemporaryFile).
MAX_FILENAME_BYTES = 255 - len("tmp") - 8


def guards(settings: Settings, fields: dict[str, tuple[str, ...]] | None = None) -> list[tuple[type, dict]]:
    """The middlewares and their options, outermost first (BentoML and Starlette wrap in that order).
    ``fields`` names the form fields each route takes (by path); a part under any other name is a 400."""
    key = settings.api_key.get_secret_value() if settings.api_key else None
    serving = settings.serving
    types = {**dict.fromkeys(IMAGE_ROUTES, b"multipart/form-data"), **dict.fromkeys(JSON_ROUTES, b"application/json")}
    return [
        (SecurityHeaders, {}),
        (ApiKey, {"key": key}),
        (HeaderCap, {"max_bytes": serving.max_header_bytes}),
        (MediaTypeOnly, {"types": types}),
        (RateLimit, {"paths": JSON_ROUTES, "per_minute": serving.feedback_per_minute}),  # before the body is read
        (BodyCap, {"max_bytes": serving.max_body_bytes, "file_fields": FILE_FIELDS,
                   "fields": fields or {}, "deadline_s": serving.body_deadline_s}),
        (Admission, {"max_concurrency": serving.max_concurrency, "max_images": serving.max_images_in_flight}),
        (CancelOnDisconnect, {}),
    ]


async def _reply(send: Send, status: int, error: str, message: str, headers: list | None = None) -> None:
    body = json.dumps({"error": error, "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


# Scripts and styles from this origin only (the page and /docs; Swagger UI sets inline styles), no framing,
# no sniffing: the page keeps the API key in its form, so nothing from elsewhere may run beside it.
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                 b"img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
                                 b"form-action 'self'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every answer, the guards' refusals included."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, sending)


class ApiKey:
    """Requires ``Authorization: Bearer <key>`` or ``X-API-Key`` on everything but health, metrics
    and the static page (which holds no data and asks the user for the key)."""

    def __init__(self, app: ASGIApp, key: str | None):
        self.app, self.key = app, key.encode() if key else None

    def _open(self, path: str) -> bool:
        return (path in OPEN_PATHS or path in ("/", "/docs", "/docs.json")
                or path.startswith(("/static/", "/swagger-ui/")))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is None or scope["type"] != "http" or self._open(scope["path"]):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        given = headers.get(b"x-api-key", b"")
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            given = auth[7:].strip()
        if not hmac.compare_digest(given, self.key):
            return await _reply(send, 401, "unauthorized", "a valid API key is required (X-API-Key or Bearer)",
                                [(b"www-authenticate", b"Bearer")])
        await self.app(scope, receive, send)


class HeaderCap:
    """Refuses requests whose headers total above ``max_bytes`` with 431: every header is kept in memory
    and copied into each worker's request, so a client may not make that cost arbitrary."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and sum(len(k) + len(v) for k, v in scope["headers"]) > self.max_bytes:
            return await _reply(send, 431, "headers_too_large",
                                f"the request headers are above the cap of {self.max_bytes} bytes")
        await self.app(scope, receive, send)


class MediaTypeOnly:
    """Each route in ``types`` takes its one media type, others answered 415 before any body is read.
    Image routes take multipart/form-data only: BentoML would also parse JSON or a form, and fetch an
    image field given as text as a URL. ``/feedback`` takes application/json only: BentoML reads any
    other type (``text/plain``, which a browser sends cross-site without asking) as JSON too."""

    def __init__(self, app: ASGIApp, types: dict[str, bytes]):
        self.app, self.types = app, types

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and (wanted := self.types.get(scope["path"])):
            kind = dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip().lower()
            if kind != wanted:
                given = kind.decode(errors="replace") or "no Content-Type"
                return await _reply(send, 415, "unsupported_media_type",
                                    f"{scope['path']} takes {wanted.decode()}, not {given}")
        await self.app(scope, receive, send)


class BodyCap:
    """Refuses bodies above ``max_bytes`` with 413 (by Content-Length, and by counting for chunked
    uploads), bodies not in within ``deadline_s`` of the first read with 408, and with 400 malformed
    multipart bodies, text in a file field, a part under a name the route does not take, a file name
    too long for a file system, and a field BentoML cannot read as JSON or text (a number of more than
    4,300 digits, nesting deeper than Python's recursion limit, bytes that are not UTF-8): BentoML would
    answer most of them with a 500, and fetch text in a file field as a URL (a server-side request we
    never want)."""

    def __init__(self, app: ASGIApp, max_bytes: int, file_fields: tuple[str, ...],
                 fields: dict[str, tuple[str, ...]], deadline_s: float = 30.0):
        self.app, self.max_bytes, self.file_fields, self.fields = app, max_bytes, file_fields, fields
        self.deadline_s = deadline_s

    def _refuse(self, send: Send, size: str):
        return _reply(send, 413, "too_large", f"the request body is {size} bytes, above the cap of {self.max_bytes}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._refuse(send, length.decode(errors="replace"))
        # The body goes to a spool: in memory up to SPOOL_IN_MEMORY bytes, in a temporary file beyond, so
        # 32 admitted 20 MB uploads hold no 640 MB of bodies (nor copies of them) while they wait their turn.
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
            size, more = 0, True
            with anyio.move_on_after(self.deadline_s) as deadline:
                while more:
                    message = await receive()
                    if message["type"] != "http.request":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        return await self._refuse(send, f"more than {self.max_bytes}")
                    spool.write(chunk)
                    more = message.get("more_body", False)
                    message = chunk = None  # the spool holds the body, nothing else
            if deadline.cancelled_caught:
                return await _reply(send, 408, "request_timeout",
                                    f"the request body did not arrive within {self.deadline_s:g} s ({size} bytes "
                                    "came)", [(b"connection", b"close")])
            if headers.get(b"content-type", b"").startswith(b"multipart/"):
                problem, images = await _multipart_problem(scope, _replay(spool, size), self.file_fields,
                                                           self.fields.get(scope["path"]))
                if problem:
                    return await _reply(send, 400, "bad_request", problem)
                scope.setdefault("state", {})[IMAGES] = images  # what Admission counts
            await self.app(scope, _replay(spool, size, receive), send)


SPOOL_IN_MEMORY = 1024 * 1024  # a request body up to this stays in memory; a longer one goes to a temporary file
CHUNK = 64 * 1024  # the body is handed on in pieces of this size


def _replay(spool, size: int, then: Receive | None = None) -> Receive:
    """An ASGI ``receive`` that gives the ``size`` bytes of ``spool`` from its start in CHUNK pieces, then
    what ``then`` receives (a disconnect), or a disconnect when there is no ``then``."""
    spool.seek(0)
    sent, started = 0, False

    async def receive() -> Message:
        nonlocal sent, started
        if not started or sent < size:
            started = True
            chunk = spool.read(CHUNK)
            sent += len(chunk)
            return {"type": "http.request", "body": chunk, "more_body": sent < size}
        return await then() if then is not None else {"type": "http.disconnect"}

    return receive


class RateLimit:
    """At most ``per_minute`` requests to ``paths`` per client address (a token bucket that refills
    evenly, bursts up to ``per_minute``), more answered 429 with ``Retry-After``: one client may not
    flood ``/feedback`` with outcomes. 0 turns it off; the newest 10,000 clients are remembered."""

    CLIENTS = 10_000

    def __init__(self, app: ASGIApp, paths: tuple[str, ...], per_minute: float):
        self.app, self.paths, self.rate = app, paths, per_minute / 60.0
        self.capacity = float(per_minute)
        self.buckets: dict[str, tuple[float, float]] = {}  # client → (tokens, when)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.rate or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        client = (scope.get("client") or ("unknown", 0))[0]
        now = anyio.current_time()
        tokens, when = self.buckets.pop(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - when) * self.rate)
        self.buckets[client] = (tokens - 1 if tokens >= 1 else tokens, now)  # newest last
        if len(self.buckets) > self.CLIENTS:
            del self.buckets[next(iter(self.buckets))]
        if tokens < 1:
            wait = max(1, round((1 - tokens) / self.rate))
            return await _reply(send, 429, "rate_limited",
                                f"at most {self.capacity:g} requests a minute to {scope['path']} per client; "
                                f"retry in {wait} s", [(b"retry-after", str(wait).encode())])
        await self.app(scope, receive, send)


class Admission:
    """At most ``max_concurrency`` requests and ``max_images`` uploaded images in handling at once (a
    request counts its images, as :class:`BodyCap` found them), more answered 429 with ``Retry-After``:
    twelve batches of 64 are not all let in to miss the scorer's latency bound together. It stands after
    :class:`BodyCap`: a request is admitted once its body is in, so slow clients cannot hold the slots
    that scoring needs. Health and metrics are never refused."""

    def __init__(self, app: ASGIApp, max_concurrency: int, max_images: int | None = None):
        self.app, self.max_concurrency, self.max_images = app, max_concurrency, max_images
        self.in_flight = self.images = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        images = scope.get("state", {}).get(IMAGES, 0)
        if self.in_flight >= self.max_concurrency:
            return await _reply(send, 429, "too_many_requests",
                                f"{self.max_concurrency} requests are in handling; retry shortly",
                                [(b"retry-after", b"1")])
        if self.max_images and self.images and self.images + images > self.max_images:
            return await _reply(send, 429, "too_many_images",
                                f"{self.images} images are being scored (at most {self.max_images} at once); "
                                "retry shortly", [(b"retry-after", b"1")])
        self.in_flight, self.images = self.in_flight + 1, self.images + images
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight, self.images = self.in_flight - 1, self.images - images


class CancelOnDisconnect:
    """Cancels a request's handler when its client disconnects before the answer: the remaining
    decodes and the model step are skipped, so a client that gave up leaves no work behind. The app reads
    the body first, as it goes (from BodyCap's spool); from then on only a disconnect can arrive."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        body_read, gone, answered = anyio.Event(), anyio.Event(), False

        async def replayed() -> Message:
            if not body_read.is_set():  # the body, from BodyCap's spool: it never waits on the client
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    body_read.set()
                return message
            await gone.wait()
            return {"type": "http.disconnect"}

        async def sending(message: Message) -> None:
            nonlocal answered
            await send(message)
            answered = answered or (message["type"] == "http.response.body" and not message.get("more_body"))

        async with anyio.create_task_group() as group:
            async def watch() -> None:
                await body_read.wait()  # from then on only a disconnect can arrive
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone.set()
                if not answered:
                    group.cancel_scope.cancel()

            group.start_soon(watch)
            await self.app(scope, replayed, sending)
            group.cancel_scope.cancel()


async def _multipart_problem(scope: Scope, body: Receive, file_fields: tuple[str, ...],
                             accepted: tuple[str, ...] | None) -> tuple[str | None, int]:
    """What is wrong with a multipart body (or None), and how many images it uploads; ``body`` gives it."""
    try:
        form = await Request(scope, body).form()
    except Exception:  # MultiPartException, HTTPException, ValueError: all mean a malformed body
        return "the multipart/form-data body is malformed", 0
    images = sum(len(form.getlist(field)) for field in file_fields)
    try:
        if accepted is not None and (unknown := sorted(set(form.keys()) - set(accepted))):
            return f"unknown fields {unknown}; {scope['path']} takes {list(accepted)}", images
        for field in file_fields:
            if any(isinstance(v, str) for v in form.getlist(field)):
                return f"the field {field!r} must be a file upload (URLs are not fetched)", images
        for name, value in form.multi_items():
            if isinstance(value, UploadFile) and (problem := _filename_problem(value.filename or "")):
                return problem, images
            if name not in file_fields and (problem := await _value_problem(name, value)):
                return problem, images
        return None, images
    finally:
        await form.close()


def _filename_problem(filename: str) -> str | None:
    name = os.fsencode(os.path.basename(filename))
    if len(name) > MAX_FILENAME_BYTES:
        return f"a file name is longer than {MAX_FILENAME_BYTES} bytes"
    if b"\0" in name:
        return "a file name holds a NUL byte"
    return None


async def _value_problem(name: str, value: str | UploadFile) -> str | None:
    """Why BentoML could not read a form field as it does (JSON when it parses, else text), or None."""
    data = await value.read() if isinstance(value, UploadFile) else value  # a file part: BentoML reads its bytes
    try:
        json.loads(data)
    except json.JSONDecodeError:
        return None  # text, read as such
    except UnicodeDecodeError:
        return f"the field {name!r} is not text"
    except RecursionError:
        return f"the field {name!r} is nested too deeply"
    except ValueError as exc:  # a number of more than 4,300 digits
        return f"the field {name!r} cannot be read: {str(exc).split(';')[0]}"
    return None
