"""Helpers for the tests: real photographs varied into many, and a misbehaving HTTP server.

The photographs are scikit-image's and scikit-learn's, cropped, recoloured and re-contrasted so that
every fixture image is distinct; the server runs on 127.0.0.1 only and counts every request.
"""

from __future__ import annotations

import csv
import io
import threading
import time
from collections import Counter
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

API_KEY = "test-key-123"  # the shared test service's key


def _originals() -> list[np.ndarray]:
    from skimage import data
    from sklearn.datasets import load_sample_images

    return [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), *load_sample_images().images]


@lru_cache(maxsize=1)
def _all_originals() -> tuple[np.ndarray, ...]:
    return tuple(_originals())


@lru_cache(maxsize=256)
def photo(k: int, side: int = 96, fmt: str = "JPEG") -> bytes:
    """The k-th distinct variant: a crop of one real photograph with its own colour and contrast."""
    originals = _all_originals()
    base = originals[k % len(originals)]
    rng = np.random.default_rng(k)
    h, w = base.shape[:2]
    size = int(min(h, w) * rng.uniform(0.5, 0.9))
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    img = Image.fromarray(base[y:y + size, x:x + size]).resize((side, side))
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.3, 1.7))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.6, 1.4))
    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=90)
    return buf.getvalue()


class Handler(BaseHTTPRequestHandler):
    """Routes: /img/K.jpg, /missing (404), /flaky/K (500 then 200), /busy/K (429 + Retry-After then 200),
    /slow (answers after 2 s), /huge and /huge-declared (over the cap), /text (text as image/jpeg),
    /slowish/K (0.2 s, counts requests in flight), /redirect/K (→ /img/K.jpg), /loop (→ itself),
    /trickle (a byte every 0.1 s), /short/K (a Content-Length that lies: half the photo's bytes)."""

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", content_type: str = "image/jpeg", headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        server = self.server
        path = self.path
        with server.lock:
            server.hits[path] += 1
            server.started.append((path, time.monotonic()))
            first = server.hits[path] == 1
        kind, _, arg = path.strip("/").partition("/")
        number = int(arg.split(".")[0]) if arg.split(".")[0].isdigit() else 0
        if kind == "img":
            self._send(200, photo(number))
        elif kind == "flaky":
            self._send(500, b"oops", "text/plain") if first else self._send(200, photo(number))
        elif kind == "busy":
            if first:
                self._send(429, b"slow down", "text/plain", {"Retry-After": "1"})
            else:
                self._send(200, photo(number))
        elif kind == "slow":
            time.sleep(2.0)
            self._send(200, photo(0))
        elif kind == "huge-declared":
            self._send(200, photo(0) + b"\0" * 300_000)
        elif kind == "huge":  # no Content-Length: only the streamed count can stop it
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            try:
                self.wfile.write(photo(0))
                for _ in range(40):
                    self.wfile.write(b"\0" * 16_384)
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True
        elif kind == "trickle":  # a byte every 0.1 s: never a read timeout, always past a short deadline
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(photo(0))))
            self.end_headers()
            try:
                for byte in photo(0)[:50]:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True
        elif kind == "short":  # the body is whole, the Content-Length says half: a client reads half
            body = photo(number)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body) // 2))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True
        elif kind == "text":
            self._send(200, b"<html>not an image at all</html>" * 10, "image/jpeg")
        elif kind == "slowish":
            with server.lock:
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            time.sleep(0.2)
            with server.lock:
                server.in_flight -= 1
            self._send(200, photo(number))
        elif kind == "redirect":
            self._send(302, headers={"Location": f"/img/{number}.jpg"})
        elif kind == "loop":
            self._send(302, headers={"Location": "/loop"})
        else:
            self._send(404, b"not found", "text/plain")


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        self.started: list[tuple[str, float]] = []
        self.in_flight = self.max_in_flight = 0

    def handle_error(self, request, client_address) -> None:
        pass  # a client that hangs up (timeout, size cap) is part of the tests

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


def posts_manifest(root: Path, n: int, bad: int = 0) -> Path:
    """Seed 002's layout as users have it: text tags and a title, user columns with gaps, and ``bad`` rows
    whose user_contacts is not a number."""
    days = [f"views_d{d}" for d in range(1, 31)]
    with (root / "posts.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["post_id", "user_id", "image_path", "posted_at", "user_contacts", "user_groups",
                         "user_mean_views", "photo_count", "tags", "title", *days])
        for k in range(n):
            (root / f"{k}.jpg").write_bytes(photo(k))
            contacts = "many" if k < bad else str(10 * k + 1)
            mean_views = "" if k % 3 == 0 else str(50.5 + k)  # a third of the users' mean views unknown
            writer.writerow([f"p{k}", f"u{k % 5}", f"{k}.jpg", f"2024-03-{k % 28 + 1:02d}T10:00:00Z", contacts,
                             str(k), mean_views, str(100 + k), ["sunset|food", "me|city|art", "", "cat dog"][k % 4],
                             f"Day {k}, out", *[str((k + 1) * d) for d in range(1, 31)]])
    return root / "posts.csv"

