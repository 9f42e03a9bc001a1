"""Bounded concurrency that keeps every host busy up to its rate limit.

A crawl is bound by politeness: each host takes at most ``rate`` requests/s, so the crawl is
fast when every host always has a request ready at its next slot. Tasks wait in per-host
queues (the host of the task's first request); a free worker takes the task whose host can
start a request soonest, and only when that start is near (``horizon_s``). So workers are not
parked on one busy host's limit while other hosts idle, and a long queue for one host never
delays another's. Results come back in completion order to one consumer thread (the crawler
records them while the workers go on fetching).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict, deque

from crawlers.http import RateLimiter


class HostScheduler:
    def __init__(self, limiter: RateLimiter, workers: int, horizon_s: float = 0.05):
        if workers < 1:
            raise ValueError(f"workers={workers} must be at least 1")
        self.limiter, self.horizon_s = limiter, horizon_s
        self._lanes: dict[str, deque] = defaultdict(deque)
        self._dispatched: dict[str, float] = {}  # host -> start slot given to the last task taken
        self._cond = threading.Condition()
        self._results: queue.Queue = queue.Queue()
        self._outstanding = 0  # submitted, not yet handed to the consumer
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"crawl-{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn, item, host: str) -> None:
        """Queue ``fn(item)``; ``host`` is where its first request goes."""
        with self._cond:
            self._lanes[host].append((fn, item))
            self._outstanding += 1
            self._cond.notify()

    @property
    def outstanding(self) -> int:
        return self._outstanding

    def get(self, timeout: float | None = None) -> tuple[object, object, BaseException | None]:
        """The next finished ``(item, result, error)``; ``queue.Empty`` after ``timeout``."""
        done = self._results.get(timeout=timeout)
        with self._cond:
            self._outstanding -= 1
        return done

    def pending_results(self) -> bool:
        return not self._results.empty()

    def close(self) -> None:
        """Drop queued tasks and wait for the running ones to end."""
        with self._cond:
            self._closed = True
            self._lanes.clear()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def _start_of(self, host: str, now: float) -> float:
        """When a task taken now for ``host`` could start its first request."""
        return max(now, self.limiter.next_slot(host), self._dispatched.get(host, 0.0))

    def _take(self):
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                ready = [host for host, lane in self._lanes.items() if lane]
                if not ready:
                    self._cond.wait()
                    continue
                host = min(ready, key=lambda h: self._start_of(h, now))
                start = self._start_of(host, now)
                if start - now > self.horizon_s:
                    self._cond.wait(start - now - self.horizon_s)
                    continue
                self._dispatched[host] = start + self.limiter.interval(host)
                return self._lanes[host].popleft()
            return None

    def _work(self) -> None:
        while (task := self._take()) is not None:
            fn, item = task
            try:
                result, error = fn(item), None
            except Exception as exc:  # a bug in one task: reported with its item, the rest go on
                result, error = None, exc
            self._results.put((item, result, error))
