"""The downloader survives a misbehaving server: each URL ends as bytes or as a reason, never a crash."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from pipelines.data.download import (
    DownloadCache,
    Downloader,
    Failure,
    _blocked,
    _retry_after,
    cache_dir,
    download_items,
)
from pipelines.data.sources import Item, Reject
from tests.helpers import photo


def _downloader(settings, **update) -> Downloader:
    return Downloader(settings.download.model_copy(update=update), DownloadCache(cache_dir(settings)), progress=False)


def test_every_kind_of_answer_ends_as_bytes_or_a_reason(http_server, fast_settings):
    paths = ["/img/1.jpg", "/missing", "/flaky/2", "/busy/3", "/slow", "/huge", "/huge-declared", "/text",
             "/redirect/4", "/loop"]
    started = time.monotonic()
    got = _downloader(fast_settings, max_bytes=200_000).fetch_all([http_server.url(p) for p in paths])
    result = {p: got[http_server.url(p)] for p in paths}

    assert result["/img/1.jpg"].read_bytes() == photo(1)
    assert result["/missing"] == Failure("http_404", "HTTP 404 Not Found")
    assert result["/flaky/2"].read_bytes() == photo(2) and http_server.hits["/flaky/2"] == 2
    assert result["/busy/3"].read_bytes() == photo(3) and http_server.hits["/busy/3"] == 2
    assert time.monotonic() - started >= 1.0, "the 429's Retry-After: 1 was not honoured"
    assert result["/slow"].reason == "timeout"
    # 1 try + 2 retries; on a loaded machine the server's thread may count the last one after the client gave up
    deadline = time.monotonic() + 10
    while http_server.hits["/slow"] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert http_server.hits["/slow"] == 3
    assert result["/huge"].reason == "too_large"
    assert result["/huge-declared"].reason == "too_large" and "Content-Length" in result["/huge-declared"].message
    assert result["/text"].reason == "not_an_image" and "image/jpeg" in result["/text"].message
    assert http_server.hits["/text"] == 1 and http_server.hits["/missing"] == 1, "a permanent failure was retried"
    assert result["/redirect/4"].read_bytes() == photo(4)
    assert result["/loop"].reason == "too_many_redirects"


def test_a_server_error_that_persists_gives_up_with_its_status(http_server, fast_settings):
    got = _downloader(fast_settings, retries=0).fetch_all([http_server.url("/flaky/9")])
    assert got[http_server.url("/flaky/9")].reason == "http_500"


def test_a_retry_after_beyond_the_limit_gives_up_instead_of_stalling(http_server, fast_settings):
    got = _downloader(fast_settings, max_retry_after_s=0.5).fetch_all([http_server.url("/busy/1")])
    assert got[http_server.url("/busy/1")].reason == "rate_limited"
    assert http_server.hits["/busy/1"] == 1


@pytest.mark.parametrize("url, reason", [
    ("ftp://example.org/a.jpg", "bad_scheme"),
    ("file:///etc/passwd", "bad_scheme"),
    ("http:///nohost.jpg", "bad_url"),
    ("http://127.0.0.1:9/a.jpg", "private_address"),
    ("http://[::1]:9/a.jpg", "private_address"),
    ("http://169.254.169.254/latest/meta-data", "private_address"),
    ("http://10.1.2.3/a.jpg", "private_address"),
    ("http://localhost:9/a.jpg", "private_address"),
])
def test_unsafe_urls_are_refused_without_a_request(settings, url, reason):
    got = _downloader(settings, retries=0).fetch_all([url])
    assert got[url].reason == reason


def test_loopback_needs_allow_private(http_server, settings):
    url = http_server.url("/img/1.jpg")
    assert _downloader(settings).fetch_all([url])[url].reason == "private_address"
    assert http_server.hits["/img/1.jpg"] == 0
    assert _downloader(settings, allow_private=True).fetch_all([url])[url].read_bytes() == photo(1)


@pytest.mark.parametrize("address, blocked", [
    ("8.8.8.8", False), ("2606:4700::1111", False), ("192.168.0.1", True), ("172.16.5.4", True), ("0.0.0.0", True),
    ("::ffff:127.0.0.1", True), ("fe80::1", True), ("fc00::1", True), ("224.0.0.1", True),
    ("64:ff9b::7f00:1", True), ("64:ff9b::808:808", True), ("2002:7f00:1::1", True), ("2002:808:808::1", True),
    ("192.0.0.8", True), ("192.0.0.170", True),
])
def test_non_public_addresses_are_recognised(address, blocked):
    assert _blocked(address) is blocked


@pytest.mark.parametrize("address, blocked", [
    ("127.0.0.1", False), ("10.1.2.3", False), ("::1", False), ("169.254.169.254", True), ("fe80::1", True),
    ("::ffff:169.254.169.254", True), ("64:ff9b::a9fe:a9fe", True), ("2002:a9fe:a9fe::1", True),
])
def test_link_local_stays_blocked_with_allow_private(address, blocked):
    assert _blocked(address, allow_private=True) is blocked


def test_cloud_metadata_is_refused_even_with_allow_private(settings):
    url = "http://169.254.169.254/latest/meta-data"
    got = _downloader(settings, retries=0, allow_private=True).fetch_all([url])[url]
    assert got.reason == "private_address" and "never fetched" in got.message


def test_a_host_is_connected_to_at_the_address_that_was_checked(http_server, settings, monkeypatch):
    """DNS rebinding: the check's answer is public, a second lookup would say loopback; no request may reach it."""
    real = socket.getaddrinfo
    answers = iter(["93.184.216.34"] + ["127.0.0.1"] * 10)
    lookups = []

    def rebinding(host, port, *args, **kwargs):
        host = host.decode() if isinstance(host, bytes) else host  # anyio asks in IDNA bytes
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        return real(next(answers), port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    url = http_server.url("/img/1.jpg").replace("127.0.0.1", "rebind.test")
    assert "rebind.test" in url
    got = _downloader(settings, retries=0, timeout_s=0.5, deadline_s=2.0).fetch_all([url])[url]
    assert isinstance(got, Failure) and got.reason in ("connection_failed", "timeout")
    assert http_server.hits["/img/1.jpg"] == 0 and lookups == ["rebind.test"]


def test_the_checked_address_is_the_one_used_with_allow_private(http_server, settings, monkeypatch):
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, *a, **k: real(
        "127.0.0.1" if host in ("images.test", b"images.test") else host, port, *a, **k))
    url = http_server.url("/img/2.jpg").replace("127.0.0.1", "images.test")
    assert _downloader(settings, allow_private=True).fetch_all([url])[url].read_bytes() == photo(2)


def test_retry_after_reads_seconds_and_http_dates():
    assert _retry_after("3") == 3.0
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: retry now
    assert _retry_after("soon") is None and _retry_after(None) is None


def test_connections_are_bounded(http_server, fast_settings):
    urls = [http_server.url(f"/slowish/{k}") for k in range(8)]
    got = _downloader(fast_settings, concurrency=2).fetch_all(urls)
    assert all(isinstance(v, Path) for v in got.values())
    assert http_server.max_in_flight == 2


def test_requests_to_one_host_are_rate_limited(http_server, fast_settings):
    urls = [http_server.url(f"/img/{k}.jpg") for k in range(6)]
    _downloader(fast_settings, per_host_per_second=10.0).fetch_all(urls)
    starts = sorted(t for _, t in http_server.started)
    assert starts[-1] - starts[0] >= 0.45  # 6 starts at 10 per second span half a second


def test_the_cache_serves_a_second_run_without_the_network(http_server, fast_settings):
    urls = [http_server.url(f"/img/{k}.jpg") for k in range(4)]
    first = _downloader(fast_settings).fetch_all(urls)
    hits = sum(http_server.hits.values())
    second = _downloader(fast_settings).fetch_all(urls)
    assert first == second and sum(http_server.hits.values()) == hits == 4
    blobs = list((cache_dir(fast_settings) / "blobs").rglob("*"))
    assert sum(p.is_file() for p in blobs) == 4 and not any(p.name.startswith(".tmp-") for p in blobs)


def test_a_corrupted_cache_entry_is_fetched_again(http_server, fast_settings):
    url = http_server.url("/img/1.jpg")
    _downloader(fast_settings).fetch_all([url])
    for blob in (cache_dir(fast_settings) / "blobs").rglob("*"):
        if blob.is_file():
            blob.write_bytes(b"truncated")
    assert _downloader(fast_settings).fetch_all([url])[url].read_bytes() == photo(1)
    assert http_server.hits["/img/1.jpg"] == 2


def test_it_runs_inside_a_running_event_loop(http_server, fast_settings):
    """As in a notebook, where asyncio.run would refuse."""
    url = http_server.url("/img/2.jpg")

    async def inside():
        return _downloader(fast_settings).fetch_all([url])

    assert asyncio.run(inside())[url].read_bytes() == photo(2)


def test_download_items_turns_failures_into_rejects(http_server, fast_settings):
    items = [Item(ref="a", url=http_server.url("/img/1.jpg"), fields={"likes": 3}),
             Item(ref="b", url=http_server.url("/missing")), Item(ref="c", data=photo(5)), Reject("d", "x", "y")]
    out = download_items(items, fast_settings, progress=False)
    assert isinstance(out[0], Item) and out[0].fields == {"likes": 3}
    assert out[0].data is None and out[0].read() == photo(1)  # the body stays on disk until it is needed
    assert out[1] == Reject("b", "http_404", "HTTP 404 Not Found")
    assert out[2] is items[2] and out[3] is items[3]


def test_a_server_that_trickles_past_the_deadline_is_not_retried(http_server, fast_settings):
    url = http_server.url("/trickle")
    started = time.monotonic()
    got = _downloader(fast_settings, deadline_s=1.0).fetch_all([url])[url]
    assert got.reason == "deadline" and "1 s" in got.message
    assert http_server.hits["/trickle"] == 1 and time.monotonic() - started < 3


def test_bodies_stream_to_disk_and_a_killed_runs_leftovers_are_removed(http_server, fast_settings):
    incoming = cache_dir(fast_settings) / "incoming"
    incoming.mkdir(parents=True)
    stale, live = incoming / ".tmp-killed", incoming / ".tmp-live"
    stale.write_bytes(b"half a body")
    live.write_bytes(b"another run's download")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    url = http_server.url("/img/3.jpg")
    got = _downloader(fast_settings, deadline_s=60.0).fetch_all([url])[url]
    assert got.read_bytes() == photo(3) and got.parent.parent.name == "blobs"
    assert not stale.exists() and live.exists()
    assert {p.name for p in incoming.iterdir()} == {live.name}  # the body was renamed out, not copied
