"""The shared HTTP layer every crawler uses.

One urllib3 ``PoolManager`` (keep-alive pools per host; requests' Session costs ~0.6 ms more CPU
per request, which at the politeness ceiling of 16 hosts is a fifth of the budget); a per-host
rate limit (MusicBrainz asks for at most 1 request/s) that holds as the server counts, for
every request, retries and redirect hops included (redirects are followed here, one hop per
attempt); retries with exponential backoff on 429/5xx, connection errors and
bodies cut off mid-way, honouring ``Retry-After``; a per-request deadline (connect, headers and
body together: a server trickling bytes cannot hold a worker); a byte cap; and conditional
requests (ETag / Last-Modified) against an optional on-disk cache. Every failure is a
:class:`FetchError` with a ``kind`` and whether retrying later could help (``permanent``).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import logging
import os
import socket
import tempfile
import threading
import time
from collections import Counter, deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3
from requests.utils import get_environ_proxies
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import NewConnectionError, ProtocolError, ProxyError, SSLError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from sleeve.http import retry_after_seconds

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Sent with every request, as requests' Session does (and as a browser would).
DEFAULT_HEADERS = {"Accept-Encoding": "gzip, deflate", "Accept": "*/*", "Connection": "keep-alive"}


def transient_reason(exc: BaseException) -> str | None:
    """Why an attempt failed in a way another try may fix (the connection failed, timed out, or
    the body was cut off mid-way), named as requests names it; None for anything else."""
    if isinstance(exc, NewConnectionError | ProtocolError | ProxyError | SSLError | HTTPException | OSError):
        return f"ConnectionError ({type(exc).__name__})"  # refused, unresolvable, reset, cut off
    if isinstance(exc, Urllib3Timeout):  # connect or read
        return f"Timeout ({type(exc).__name__})"
    return None


class FetchError(RuntimeError):
    """A request failed for good. ``kind``: not_found | http | redirect | bad_url | too_large |
    deadline | network; ``permanent``: True when the same request will fail the same way again
    (quarantine it), False when a later attempt may succeed (an error, retried)."""

    def __init__(self, url: str, reason: str, status: int | None = None, *, kind: str = "http",
                 permanent: bool = False):
        super().__init__(f"{url}: {reason}")
        self.url, self.reason, self.status, self.kind, self.permanent = url, reason, status, kind, permanent


class TooLarge(FetchError):
    """The body is bigger than the client accepts; it was not downloaded."""

    def __init__(self, url: str, reason: str, status: int | None = None):
        super().__init__(url, reason, status, kind="too_large", permanent=True)


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


class _Host:
    def __init__(self, n: int):
        self.n, self.turn, self.cond = n, threading.Lock(), threading.Condition()
        self.recent: deque = deque()  # [start, done] of the last n requests, oldest first
        self.frontier = 0.0  # the latest completion among the requests before them
        self.deferred = 0.0


class RateLimiter:
    """At most ``rate`` requests per second per host, as the server counts them: never more than
    N = max(1, floor(rate)) arrivals in any window of N / rate seconds (1 s for rate >= 1).

    A request reaches the server before its response (or failure) comes back, so request ``m``
    starts only when every request up to ``m - N`` has completed and the window has passed
    since the latest of those completions: whatever the network or a busy machine delays, no
    window can hold N + 1 arrivals. Starts are also kept ``catch_up`` x 1/rate apart (no
    bursts). With rate <= 1 this is: the next request a full interval after the previous
    response. ``margin`` widens the window a little, for clock resolution."""

    def __init__(self, rate: float, overrides: dict[str, float] | None = None, margin: float = 0.005,
                 catch_up: float = 0.9):
        if rate <= 0:
            raise ValueError("rate must be positive (requests per second per host)")
        self.rate, self.overrides, self.margin, self.catch_up = rate, dict(overrides or {}), margin, catch_up
        self._hosts: dict[str, _Host] = {}
        self._lock = threading.Lock()

    def rate_for(self, host: str) -> float:
        return self.overrides.get(host, self.rate)

    def interval(self, host: str) -> float:
        """The mean spacing of starts at the limit."""
        return 1.0 / self.rate_for(host)

    def _host(self, host: str) -> _Host:
        with self._lock:
            if host not in self._hosts:
                self._hosts[host] = _Host(max(1, int(self.rate_for(host))))
            return self._hosts[host]

    def _slot(self, state: _Host, host: str) -> float:
        window = state.n * self.interval(host) * (1.0 + self.margin)
        slot = max(state.deferred, state.frontier + window)
        if state.recent:
            gap = self.interval(host) * (self.catch_up if state.n > 1 else 1.0)
            slot = max(slot, state.recent[-1][0] + gap)
        if len(state.recent) >= state.n:  # the oldest still counts: estimate it done by now
            slot = max(slot, (state.recent[0][1] or state.recent[0][0]) + window)
        return slot

    def next_slot(self, host: str) -> float:
        """When the host's next request may start, as far as known now (monotonic clock)."""
        state = self._host(host)
        with state.cond:
            return self._slot(state, host)

    def wait(self, host: str) -> list:
        """Block until this host may get the next request; returns its token for :meth:`done`.
        One thread at a time per host: the others queue behind it."""
        state = self._host(host)
        with state.turn, state.cond:
            while True:
                if len(state.recent) >= state.n:
                    if state.recent[0][1] is None:  # still in flight: its arrival time is unknown
                        state.cond.wait(1.0)
                        continue
                    state.frontier = max(state.frontier, state.recent.popleft()[1])
                    continue
                delay = self._slot(state, host) - time.monotonic()
                if delay <= 0:
                    break
                state.cond.wait(delay)
            token = [time.monotonic(), None, state]
            state.recent.append(token)
        return token

    def done(self, token: list) -> None:
        """The request of ``token`` has its response (or has failed): it has reached the server,
        if it ever will."""
        state = token[2]
        with state.cond:
            token[1] = time.monotonic()
            state.cond.notify_all()

    def defer(self, host: str, seconds: float) -> None:
        """A server said 'slow down' (Retry-After): no request to this host before then."""
        state = self._host(host)
        with state.cond:
            state.deferred = max(state.deferred, time.monotonic() + seconds)


class _Deadline:
    def __init__(self, at: float):
        self.at, self.conn, self.finished, self.expired = at, None, False, False


class Deadlines:
    """Per-request deadlines. requests' timeouts bound each socket read, not the request, so a
    server sending a byte every few seconds could hold it forever. The request's connection
    attaches itself (in the requesting thread, see :class:`_AttachDeadline`); one watchdog
    thread shuts the socket down when the deadline passes, which ends any read in progress."""

    def __init__(self):
        self._local = threading.local()
        self._heap: list = []
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    @contextmanager
    def running(self, seconds: float):
        deadline = _Deadline(time.monotonic() + seconds)
        self._local.deadline = deadline
        try:
            yield deadline
        finally:
            self._local.deadline = None
            deadline.finished = True

    def attach(self, conn) -> None:
        deadline = getattr(self._local, "deadline", None)
        if deadline is None:
            return
        deadline.conn, conn.sleeve_deadline = conn, deadline
        self._push(deadline.at, deadline)

    def _push(self, at: float, deadline: _Deadline) -> None:
        with self._cond:
            heapq.heappush(self._heap, (at, next(self._ids), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="http-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _watch(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, deadline = heapq.heappop(self._heap)
            conn = deadline.conn
            # a connection back in the pool may already serve another request: leave that one alone
            if deadline.finished or getattr(conn, "sleeve_deadline", None) is not deadline:
                continue
            if conn.sock is None:  # still connecting (bounded by the connect timeout): look again soon
                self._push(time.monotonic() + 0.05, deadline)
                continue
            deadline.expired = True
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


DEADLINES = Deadlines()


class _AttachDeadline:
    def request(self, *args, **kwargs):
        DEADLINES.attach(self)
        return super().request(*args, **kwargs)


class _HTTPConnection(_AttachDeadline, HTTPConnection):
    pass


class _HTTPSConnection(_AttachDeadline, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


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
    """``get`` one URL politely. Concurrency across hosts is :mod:`crawlers.schedule`'s job."""

    user_agent: str
    rate_per_host: float = 1.0
    rate_overrides: dict[str, float] = field(default_factory=dict)
    timeout: tuple[float, float] = (5.0, 30.0)  # connect, each read
    deadline_s: float = 60.0  # the whole request: connect, headers and body
    max_retries: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 60.0
    max_redirects: int = 10
    max_workers: int = 4
    max_bytes: int = 20 * 1024 * 1024
    cache_dir: str | Path | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        # The environment (proxies, CA bundle) is read here once, proxies once per host, not on
        # every request; ~/.netrc credentials are never sent to a crawled host.
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
        self._pool_options = {"num_pools": 64, "maxsize": max(4, self.max_workers * 2), "cert_reqs": "CERT_REQUIRED",
                              "ca_cert_dir" if os.path.isdir(bundle) else "ca_certs": bundle}
        self.pools = self._manager(urllib3.PoolManager(**self._pool_options))
        self._base_headers = {"User-Agent": self.user_agent, **DEFAULT_HEADERS, **self.headers}
        self._timeout = urllib3.Timeout(connect=self.timeout[0], read=self.timeout[1])
        self._routes: dict[tuple[str, str], urllib3.PoolManager] = {}  # (scheme, host) -> direct or proxy
        self._proxy_managers: dict[str, urllib3.ProxyManager] = {}
        self._routes_lock = threading.Lock()
        self.limiter = RateLimiter(self.rate_per_host, self.rate_overrides)
        self.cache = DiskCache(self.cache_dir) if self.cache_dir else None
        self.stats: Counter = Counter()
        self._stats_lock = threading.Lock()

    @staticmethod
    def _manager(manager: urllib3.PoolManager) -> urllib3.PoolManager:
        """``manager`` with connections that obey :data:`DEADLINES` (proxied ones too)."""
        manager.pool_classes_by_scheme = POOLS
        return manager

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    def get(self, url: str, *, headers: dict | None = None, accept: tuple[int, ...] = (200,)) -> Response:
        """GET with rate limit, retries, redirects and conditional revalidation. Statuses outside
        ``accept`` (after retries and redirects) raise :class:`FetchError`."""
        cached = self.cache.get(url) if self.cache else None
        request_headers = dict(headers or {})
        if cached:
            meta = cached[0]
            if meta.get("etag"):
                request_headers["If-None-Match"] = meta["etag"]
            if meta.get("last_modified"):
                request_headers["If-Modified-Since"] = meta["last_modified"]
        hops = [url]
        while True:
            status, body, out_headers = self._attempts(hops[-1], request_headers)
            if status not in REDIRECT_STATUSES or status in accept:
                break
            location = out_headers.get("location")
            if not location:
                raise FetchError(url, f"HTTP {status} without a Location", status, kind="redirect", permanent=True)
            if len(hops) > self.max_redirects:
                raise FetchError(url, f"more than {self.max_redirects} redirects ({' -> '.join(hops[:4])} ...)",
                                 status, kind="redirect", permanent=True)
            hops.append(urljoin(hops[-1], location))
        if status == 304 and cached:
            self._count("not_modified")
            meta, body = cached
            return Response(hops[-1], 200, body, meta.get("headers", {}), from_cache=True)
        if status not in accept:
            not_found = status in (404, 410)
            raise FetchError(url, f"HTTP {status}", status, kind="not_found" if not_found else "http",
                             permanent=status < 500)
        self._count("fetched")
        if self.cache and status == 200 and ("etag" in out_headers or "last-modified" in out_headers):
            keep = {k: out_headers[k] for k in ("content-type",) if k in out_headers}
            self.cache.put(url, {"etag": out_headers.get("etag"), "last_modified": out_headers.get("last-modified"),
                                 "headers": keep}, body)
        return Response(hops[-1], status, body, out_headers)

    def _attempts(self, url: str, headers: dict) -> tuple[int, bytes, dict]:
        """(status, body, lower-cased headers) of one URL, retried on transient failures; each
        attempt waits for its host's slot."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(url, "not an http(s) URL with a host", kind="bad_url", permanent=True)
        host, attempt = host_of(url), 0
        while True:
            self._count("requests")
            resp, route, token = None, self._route(parts), self.limiter.wait(host)
            with DEADLINES.running(self.deadline_s) as deadline:
                try:
                    try:
                        resp = route.urlopen("GET", url, headers={**self._base_headers, **headers}, redirect=False,
                                             retries=False, preload_content=False, timeout=self._timeout)
                    finally:  # the response's headers are in (or it failed): the server has seen it
                        self.limiter.done(token)
                    body = self._read_capped(resp, url)
                    status, why = resp.status, f"HTTP {resp.status}"
                except (Urllib3Error, HTTPException, OSError, ValueError) as exc:
                    status, why = None, transient_reason(exc)
                    if why is None:  # a URL or header urllib3 cannot send: the URL, not the net
                        raise FetchError(url, f"{type(exc).__name__}: {exc}", kind="bad_url", permanent=True) from None
            if deadline.expired:  # whatever was read when the socket was shut is incomplete
                status, why = None, f"deadline of {self.deadline_s:g} s exceeded"
            if status is None and resp is not None:
                resp.close()
            if status is not None and status not in RETRY_STATUSES:
                return status, body, {k.lower(): resp.headers[k] for k in resp.headers}
            attempt += 1
            if attempt > self.max_retries:
                self._count("failed")
                kind = "deadline" if why.startswith("deadline") else "network" if status is None else "http"
                raise FetchError(url, f"{why} after {self.max_retries} retries", status, kind=kind)
            delay = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
            server_delay = retry_after_seconds(resp.headers.get("Retry-After")) if status is not None else None
            if server_delay is not None:
                delay = min(self.backoff_max, max(delay, server_delay))
                self.limiter.defer(host, delay)
            self._count("retries")
            log.warning("GET %s: %s, retry %d/%d in %.2fs", url, why, attempt, self.max_retries, delay)
            time.sleep(delay)

    def _route(self, parts) -> urllib3.PoolManager:
        """The pool manager for this scheme and host: a proxy's when the environment names one
        for it (and NO_PROXY does not exempt the host), else the direct one."""
        key = (parts.scheme, parts.netloc)
        route = self._routes.get(key)
        if route is None:
            proxies = get_environ_proxies(f"{parts.scheme}://{parts.netloc}/")
            proxy = proxies.get(parts.scheme) or proxies.get("all")
            with self._routes_lock:
                if proxy and proxy not in self._proxy_managers:
                    auth = urlsplit(proxy)
                    creds = f"{auth.username}:{auth.password or ''}" if auth.username else None
                    self._proxy_managers[proxy] = self._manager(urllib3.ProxyManager(
                        proxy, proxy_headers=urllib3.make_headers(proxy_basic_auth=creds) if creds else None,
                        **self._pool_options))
                route = self._routes[key] = self._proxy_managers[proxy] if proxy else self.pools
        return route

    def _read_capped(self, resp: urllib3.BaseHTTPResponse, url: str) -> bytes:
        """Read the body, refusing more than ``max_bytes`` (a huge 'image' never fills memory);
        the connection goes back to its pool once the body is read, and is closed otherwise."""
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            resp.close()
            raise TooLarge(url, f"body of {declared} bytes is larger than {self.max_bytes}", resp.status)
        chunks, total = [], 0
        try:
            for chunk in resp.stream(64 * 1024, decode_content=True):
                total += len(chunk)
                if total > self.max_bytes:
                    raise TooLarge(url, f"body larger than {self.max_bytes} bytes", resp.status)
                chunks.append(chunk)
        except BaseException:
            resp.close()
            raise
        resp.release_conn()
        return b"".join(chunks)

    def close(self) -> None:
        self.pools.clear()
        for manager in self._proxy_managers.values():
            manager.clear()


def rewrite_url(url: str, rewrites: dict[str, str]) -> str:
    """The URL as recorded: a fetch base replaced by its public name. The loopback sample site
    changes port every run; recording ``sample://...`` keeps stored rows identical across runs."""
    for prefix, public in rewrites.items():
        if url.startswith(prefix):
            return public + url[len(prefix):]
    return url
