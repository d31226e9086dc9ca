"""The image downloader: many URLs fetched concurrently, politely and safely, each success cached.

Bounded connections and a per-host rate limit keep us polite (seed 003 had to throttle its workers);
retries with exponential backoff and jitter absorb timeouts, 429 and 5xx, honouring ``Retry-After``
(an attempt that passes its whole deadline is not retried: a trickling server would only do it again);
a size cap counted as the body streams to disk (never held in memory), the magic bytes (never the Content-Type alone), http(s) only and a refusal of
private, loopback and link-local addresses (checked at every redirect) keep a hostile list harmless.
A host is resolved once and connected to at the address that was checked, so a DNS answer that changes
between the check and the connection (DNS rebinding) cannot reach a refused address.
Every success is stored in a content-addressed cache, so an interrupted collection resumes where it
stopped. A failure is a :class:`Failure` with a short reason, never an exception for the whole batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import ipaddress
import os
import random
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tqdm.auto import tqdm

from pipelines.data.images import sniff_format
from pipelines.data.sources import Item, Reject
from pipelines.settings import DownloadSettings, Settings


class DownloadError(Exception):
    """One attempt's failure; ``transient`` ones are retried, after ``retry_after`` seconds if the server said so."""

    def __init__(self, reason: str, message: str, transient: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.reason, self.transient, self.retry_after = reason, transient, retry_after


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str


def transient(reason: str) -> bool:
    """Whether a failure with this reason may pass on a later attempt."""
    return reason in ("timeout", "connection_failed", "dns_failed", "http_429") or reason.startswith("http_5")


def cache_dir(settings: Settings) -> Path:
    return settings.root / "cache" / "downloads"


class DownloadCache:
    """``blobs/ab/<sha256 of bytes>`` plus ``urls/ab/<sha256 of url>`` naming the blob. A body is streamed
    to a file in ``incoming/`` as it arrives and renamed into ``blobs/`` when whole, so downloads never
    sit in memory and a killed run leaves no half blob."""

    def __init__(self, root: Path):
        self.root = root

    def _url_file(self, url: str) -> Path:
        key = hashlib.sha256(url.encode()).hexdigest()
        return self.root / "urls" / key[:2] / key

    def _blob(self, digest: str) -> Path:
        return self.root / "blobs" / digest[:2] / digest

    def get(self, url: str) -> Path | None:
        """The blob holding ``url``'s body, if one is cached and still has the bytes it was named for."""
        try:
            digest = self._url_file(url).read_text().strip()
            with self._blob(digest).open("rb") as blob:
                intact = hashlib.file_digest(blob, "sha256").hexdigest() == digest
        except OSError:
            return None
        return self._blob(digest) if intact else None

    def forget(self, url: str) -> None:
        """Drop ``url``'s entry (its blob stays for other URLs with the same bytes, until it is stale):
        a body that arrived whole by HTTP's count but does not decode, e.g. one cut short at a
        Content-Length that lied, is fetched again next time rather than served from the cache for good."""
        self._url_file(url).unlink(missing_ok=True)

    @contextmanager
    def incoming(self) -> Iterator[Incoming]:
        """A file to stream one body into; removed unless :meth:`put` took it."""
        body = Incoming(self.root / "incoming")
        try:
            yield body
        finally:
            body.file.close()
            body.path.unlink(missing_ok=True)

    def put(self, url: str, body: Incoming) -> Path:
        """Files a whole body as ``url``'s blob and returns the blob's path."""
        body.file.close()
        blob = self._blob(body.hash.hexdigest())
        blob.parent.mkdir(parents=True, exist_ok=True)
        os.replace(body.path, blob)
        _atomic_write(self._url_file(url), body.hash.hexdigest().encode())
        return blob

    def remove_stale(self, older_than_s: float) -> None:
        """Removes bodies left in ``incoming/`` by a killed run: no live download is older than this."""
        cutoff = time.time() - older_than_s
        for leftover in (self.root / "incoming").glob(".tmp-*"):
            with suppress(OSError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()


class Incoming:
    """A body on its way to disk: written to a temporary file and hashed as it arrives."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        self.path, self.file, self.hash = Path(name), os.fdopen(fd, "wb"), hashlib.sha256()
        self.size, self.head = 0, b""

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.hash.update(chunk)
        self.size += len(chunk)
        if len(self.head) < 16:
            self.head = (self.head + chunk)[:16]


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# Prefixes that carry an IPv4 address inside IPv6 (NAT64, 6to4) reach whatever that address is, and
# 192.0.0.0/24 is IETF protocol space: none of them is a public image host, whatever ``is_global`` says.
NEVER_PUBLIC = [ipaddress.ip_network(n) for n in ("64:ff9b::/96", "2002::/16", "192.0.0.0/24")]


def _embedded_ipv4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address that a NAT64 or 6to4 address reaches."""
    if ip.version == 4:
        return None
    if ip in NEVER_PUBLIC[0]:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def _blocked(address: str, allow_private: bool = False) -> bool:
    """Whether an address is refused; link-local (cloud metadata at 169.254.169.254) even with ``allow_private``."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    inner = _embedded_ipv4(ip)
    if any(a.is_link_local or a.is_multicast for a in (ip, inner) if a is not None):
        return True
    if allow_private:
        return False
    return not ip.is_global or any(ip in net for net in NEVER_PUBLIC)


async def _resolve(host: str, port: int) -> list[str]:
    """The addresses of ``host`` in the resolver's order of preference."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the addresses the downloader checked for a host, never to a fresh DNS answer."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend, addresses: dict[tuple[str, int], list[str]]):
        self.backend, self.addresses = backend, addresses

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options=None) -> httpcore.AsyncNetworkStream:
        addresses = self.addresses.get((host, port))
        if not addresses:
            raise httpcore.ConnectError(f"{host}:{port} was not resolved and checked before connecting")
        for address in addresses[:-1]:
            try:
                return await self.backend.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                continue
        return await self.backend.connect_tcp(addresses[-1], port, timeout, local_address, socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options=None):
        raise httpcore.ConnectError("the downloader connects over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self.backend.sleep(seconds)


def _pinned_transport(addresses: dict[tuple[str, int], list[str]], limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """A transport whose connections go to checked addresses; TLS still sends and verifies the URL's host
    name, since only the TCP connect is pinned. httpx takes no network backend, so its pool's is wrapped."""
    transport = httpx.AsyncHTTPTransport(limits=limits)
    transport._pool._network_backend = PinnedBackend(transport._pool._network_backend, addresses)
    return transport


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, given as seconds or as an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


class HostLimiter:
    """At most ``per_second`` request starts per host, spread evenly rather than in bursts."""

    def __init__(self, per_second: float):
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self.next_slot: dict[str, float] = {}
        self.lock = asyncio.Lock()

    async def wait(self, host: str) -> None:
        loop = asyncio.get_running_loop()
        async with self.lock:
            now = loop.time()
            slot = max(now, self.next_slot.get(host, now))
            self.next_slot[host] = slot + self.interval
        await asyncio.sleep(slot - now)


class Downloader:
    def __init__(self, settings: DownloadSettings, cache: DownloadCache, progress: bool = True):
        self.settings, self.cache, self.progress = settings, cache, progress
        self._resolved: dict[tuple[str, int], list[str]] = {}

    def fetch_all(self, urls: list[str]) -> dict[str, Path | Failure]:
        """Each distinct URL's cached body (a file) or its :class:`Failure`; safe to call from inside an event loop."""
        urls = list(dict.fromkeys(urls))
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._fetch_all(urls))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a notebook's loop is already running
            return pool.submit(asyncio.run, self._fetch_all(urls)).result()

    async def _fetch_all(self, urls: list[str]) -> dict[str, Path | Failure]:
        s = self.settings
        self.cache.remove_stale(2 * s.deadline_s)
        results: dict[str, Path | Failure] = {}
        todo = []
        for url in urls:
            cached = self.cache.get(url)
            if cached is None:
                todo.append(url)
            else:
                results[url] = cached
        self.slots = asyncio.Semaphore(s.concurrency)
        self.limiter = HostLimiter(s.per_host_per_second)
        limits = httpx.Limits(max_connections=s.concurrency, max_keepalive_connections=s.concurrency)
        transport = _pinned_transport(self._resolved, limits)
        with tqdm(total=len(urls), initial=len(results), desc="download", unit="img", leave=False,
                  disable=not self.progress) as bar:
            # No proxy from the environment: it would resolve the host itself, past every address check.
            async with httpx.AsyncClient(timeout=httpx.Timeout(s.timeout_s), transport=transport, trust_env=False,
                                         follow_redirects=False, headers={"User-Agent": s.user_agent}) as client:

                async def one(url: str) -> None:
                    try:
                        results[url] = await self._with_retries(client, url)
                    except DownloadError as exc:
                        results[url] = Failure(exc.reason, str(exc))
                    bar.update(1)

                await asyncio.gather(*(one(url) for url in todo))
        return {url: results[url] for url in urls}

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, DownloadError) and exc.retry_after is not None:
            return exc.retry_after
        base = min(self.settings.max_backoff_s, self.settings.backoff_s * 2 ** (state.attempt_number - 1))
        return base / 2 + random.uniform(0, base / 2)

    async def _with_retries(self, client: httpx.AsyncClient, url: str) -> Path:
        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda e: isinstance(e, DownloadError) and e.transient),
            stop=stop_after_attempt(self.settings.retries + 1), wait=self._wait, reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._attempt(client, url)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _check(self, url: str) -> str:
        """The host of ``url`` after refusing anything but http(s) to a public address; the addresses
        checked are the ones connected to."""
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            host = httpx.URL(url).raw_host.decode("ascii")  # the IDNA form that the connection pool uses
        except (ValueError, httpx.InvalidURL) as exc:
            raise DownloadError("bad_url", f"{url!r} is not a valid URL: {exc}") from exc
        if parts.scheme not in ("http", "https"):
            raise DownloadError("bad_scheme", f"only http and https URLs are fetched, not {parts.scheme or 'none'!r}")
        if not parts.hostname:
            raise DownloadError("bad_url", f"{url!r} names no host")
        key = (host, port)
        if key not in self._resolved:
            try:
                self._resolved[key] = await _resolve(host, port)
            except socket.gaierror as exc:
                raise DownloadError("dns_failed", f"{host} does not resolve: {exc}", transient=True) from exc
        blocked = [a for a in self._resolved[key] if _blocked(a, self.settings.allow_private)]
        if blocked:
            hint = ("link-local and multicast addresses are never fetched" if _blocked(blocked[0], True)
                    else "pass --allow-private to fetch from it")
            raise DownloadError("private_address", f"{parts.hostname} resolves to the non-public address "
                                f"{blocked[0]}; {hint}")
        return parts.hostname

    async def _attempt(self, client: httpx.AsyncClient, url: str) -> Path:
        s = self.settings
        for _ in range(s.max_redirects + 1):
            host = await self._check(url)
            await self.limiter.wait(host)
            async with self.slots:
                try:
                    async with asyncio.timeout(s.deadline_s):
                        location = await self._request(client, url)
                except TimeoutError as exc:  # a server this slow is as slow next time: not retried
                    raise DownloadError("deadline", f"no complete answer within {s.deadline_s:g} s") from exc
                except httpx.TimeoutException as exc:
                    raise DownloadError("timeout", f"timed out after {s.timeout_s:g} s ({type(exc).__name__})",
                                        transient=True) from exc
                except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
                    raise DownloadError("bad_url", str(exc)) from exc
                except httpx.TransportError as exc:
                    raise DownloadError("connection_failed", f"{type(exc).__name__}: {exc}", transient=True) from exc
            if isinstance(location, Path):
                return location
            url = location
        raise DownloadError("too_many_redirects", f"more than {s.max_redirects} redirects")

    async def _request(self, client: httpx.AsyncClient, url: str) -> Path | str:
        """The cached body of a 200 answer, or the next URL of a redirect."""
        cap = self.settings.max_bytes
        async with client.stream("GET", url) as response:
            if response.is_redirect and "location" in response.headers:
                return urljoin(url, response.headers["location"])
            status = response.status_code
            if status == 429 or status >= 500:
                wait = _retry_after(response.headers.get("retry-after"))
                if wait is not None and wait > self.settings.max_retry_after_s:
                    raise DownloadError("rate_limited", f"HTTP {status} asking to wait {wait:.0f} s, above the "
                                        f"limit of {self.settings.max_retry_after_s:g} s")
                raise DownloadError(f"http_{status}", f"HTTP {status} {response.reason_phrase}", transient=True,
                                    retry_after=wait)
            if status != 200:
                raise DownloadError(f"http_{status}", f"HTTP {status} {response.reason_phrase}")
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > cap:
                raise DownloadError("too_large", f"Content-Length {length} is above the cap of {cap} bytes")
            with self.cache.incoming() as body:
                async for chunk in response.aiter_bytes():
                    body.write(chunk)
                    if body.size > cap:
                        raise DownloadError("too_large", f"the body passed the cap of {cap} bytes")
                if sniff_format(body.head) is None:
                    kind = response.headers.get("content-type", "no Content-Type")
                    raise DownloadError("not_an_image",
                                        f"served as {kind} but the bytes are not a JPEG, PNG, WebP or GIF")
                return self.cache.put(url, body)


def download_items(items: list[Item | Reject], settings: Settings, progress: bool = True) -> list[Item | Reject]:
    """``items`` with each URL item's body (a cached file) filled in, or replaced by a reject saying why it failed."""
    urls = [item.url for item in items if isinstance(item, Item) and item.data is None and item.path is None and item.url]
    if not urls:
        return list(items)
    fetched = Downloader(settings.download, DownloadCache(cache_dir(settings)), progress).fetch_all(urls)
    out: list[Item | Reject] = []
    for item in items:
        if isinstance(item, Item) and item.data is None and item.path is None and item.url:
            got = fetched[item.url]
            out.append(replace(item, path=got) if isinstance(got, Path) else Reject(item.ref, got.reason, got.message))
        else:
            out.append(item)
    return out
