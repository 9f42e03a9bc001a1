"""The shared HTTP layer every crawler uses.

One ``requests.Session``; a per-host rate limit (MusicBrainz asks for at most 1 request/s);
retries with exponential backoff on 429/5xx and connection errors, honouring ``Retry-After``;
timeouts; conditional requests (ETag / Last-Modified) against an optional on-disk cache; and
bounded concurrency across hosts (``map``), where each host still gets its own rate limit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from sleeve.http import retry_after_seconds

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class FetchError(RuntimeError):
    """A request failed for good (after retries, or a status that retrying cannot fix)."""

    def __init__(self, url: str, reason: str, status: int | None = None):
        super().__init__(f"{url}: {reason}")
        self.url, self.reason, self.status = url, reason, status


class TooLarge(FetchError):
    """The body is bigger than the client accepts; it was not downloaded."""


@dataclass(frozen=True)
class Response:
    url: str
    status: int
    content: bytes
    headers: dict
    from_cache: bool = False

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self):
        return json.loads(self.content)


def host_of(url: str) -> str:
    """The rate-limit key: scheme-less host:port, as a server sees it."""
    parts = urlsplit(url)
    return parts.netloc.lower()


class RateLimiter:
    """At most ``rate`` request starts per second per host: each host hands out start slots at
    least ``1/rate`` apart (no bursts). ``margin`` spaces slots a little wider so that scheduling
    jitter cannot make a server see more than ``rate`` requests in any one-second window."""

    def __init__(self, rate: float, overrides: dict[str, float] | None = None, margin: float = 0.05):
        if rate <= 0:
            raise ValueError("rate must be positive (requests per second per host)")
        self.rate, self.overrides, self.margin = rate, dict(overrides or {}), margin
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def rate_for(self, host: str) -> float:
        return self.overrides.get(host, self.rate)

    def wait(self, host: str) -> float:
        """Block until this host may get the next request; returns seconds waited."""
        interval = (1.0 + self.margin) / self.rate_for(host)
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(host, 0.0))
            self._next[host] = slot + interval
        delay = slot - now
        if delay > 0:
            time.sleep(delay)
        return max(delay, 0.0)

    def defer(self, host: str, seconds: float) -> None:
        """A server said 'slow down' (Retry-After): push this host's next slot out."""
        with self._lock:
            self._next[host] = max(self._next.get(host, 0.0), time.monotonic() + seconds)


class DiskCache:
    """Validators + body per URL, for conditional requests across runs. Atomic writes."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, url: str) -> Path:
        return self.dir / hashlib.sha256(url.encode("utf-8")).hexdigest()

    def get(self, url: str) -> tuple[dict, bytes] | None:
        path = self._path(url)
        try:
            meta = json.loads(path.with_suffix(".json").read_text("utf-8"))
            return meta, path.with_suffix(".body").read_bytes()
        except (FileNotFoundError, ValueError):
            return None

    def put(self, url: str, meta: dict, body: bytes) -> None:
        path = self._path(url)
        for suffix, data in ((".body", body), (".json", json.dumps(meta).encode("utf-8"))):
            fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path.with_suffix(suffix))


@dataclass
class HttpClient:
    """``get`` one URL politely; ``map`` a function over items with bounded concurrency."""

    user_agent: str
    rate_per_host: float = 1.0
    rate_overrides: dict[str, float] = field(default_factory=dict)
    timeout: tuple[float, float] = (5.0, 30.0)  # connect, read
    max_retries: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 60.0
    max_workers: int = 4
    max_bytes: int = 20 * 1024 * 1024
    cache_dir: str | Path | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=16, pool_maxsize=max(4, self.max_workers * 2))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"User-Agent": self.user_agent, **self.headers})
        self.limiter = RateLimiter(self.rate_per_host, self.rate_overrides)
        self.cache = DiskCache(self.cache_dir) if self.cache_dir else None
        self.stats: Counter = Counter()
        self._stats_lock = threading.Lock()

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    def get(self, url: str, *, headers: dict | None = None, accept: tuple[int, ...] = (200,)) -> Response:
        """GET with rate limit, retries and conditional revalidation. Statuses outside ``accept``
        (after retries) raise :class:`FetchError`."""
        host = host_of(url)
        cached = self.cache.get(url) if self.cache else None
        request_headers = dict(headers or {})
        if cached:
            meta = cached[0]
            if meta.get("etag"):
                request_headers["If-None-Match"] = meta["etag"]
            if meta.get("last_modified"):
                request_headers["If-Modified-Since"] = meta["last_modified"]
        attempt = 0
        while True:
            self.limiter.wait(host)
            self._count("requests")
            try:
                resp = self.session.get(url, headers=request_headers, timeout=self.timeout, stream=True)
                body = self._read_capped(resp, url)
            except (requests.ConnectionError, requests.Timeout) as exc:
                status, body, resp, why = None, b"", None, type(exc).__name__
            else:
                status, why = resp.status_code, f"HTTP {resp.status_code}"
            if status is not None and status not in RETRY_STATUSES:
                break
            attempt += 1
            if attempt > self.max_retries:
                self._count("failed")
                raise FetchError(url, f"{why} after {self.max_retries} retries", status)
            delay = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
            server_delay = retry_after_seconds(resp.headers.get("Retry-After")) if resp is not None else None
            if server_delay is not None:
                delay = min(self.backoff_max, max(delay, server_delay))
                self.limiter.defer(host, delay)
            self._count("retries")
            log.warning("GET %s: %s, retry %d/%d in %.2fs", url, why, attempt, self.max_retries, delay)
            time.sleep(delay)

        if status == 304 and cached:
            self._count("not_modified")
            meta, body = cached
            return Response(url, 200, body, meta.get("headers", {}), from_cache=True)
        if status not in accept:
            raise FetchError(url, f"HTTP {status}", status)
        self._count("fetched")
        out_headers = {k.lower(): v for k, v in resp.headers.items()}
        if self.cache and status == 200 and ("etag" in out_headers or "last-modified" in out_headers):
            keep = {k: out_headers[k] for k in ("content-type",) if k in out_headers}
            self.cache.put(url, {"etag": out_headers.get("etag"), "last_modified": out_headers.get("last-modified"),
                                 "headers": keep}, body)
        return Response(resp.url, status, body, out_headers)

    def _read_capped(self, resp: requests.Response, url: str) -> bytes:
        """Read the body, refusing more than ``max_bytes`` (a huge 'image' never fills memory)."""
        chunks, total = [], 0
        for chunk in resp.iter_content(64 * 1024):
            total += len(chunk)
            if total > self.max_bytes:
                resp.close()
                raise TooLarge(url, f"body larger than {self.max_bytes} bytes", resp.status_code)
            chunks.append(chunk)
        return b"".join(chunks)

    def map(self, fn, items):
        """Yield ``(item, result, error)`` as each ``fn(item)`` finishes, at most ``max_workers`` in
        flight. Per-host rate limits still hold: concurrency overlaps requests to different hosts
        and time spent waiting on the network, never the per-host spacing."""
        items = list(items)
        with ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="crawl") as pool:
            futures = {pool.submit(fn, item): item for item in items}
            try:
                for future in as_completed(futures):
                    exc = future.exception()
                    yield futures[future], (None if exc else future.result()), exc
            finally:
                for future in futures:
                    future.cancel()

    def close(self) -> None:
        self.session.close()


def rewrite_url(url: str, rewrites: dict[str, str]) -> str:
    """The URL as recorded: a fetch base replaced by its public name. The loopback sample site
    changes port every run; recording ``sample://...`` keeps stored rows identical across runs."""
    for prefix, public in rewrites.items():
        if url.startswith(prefix):
            return public + url[len(prefix):]
    return url
