"""robots.txt, obeyed by default. Ignoring it is an explicit operator decision, logged loudly."""

from __future__ import annotations

import logging
import threading
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

from crawlers.http import FetchError, HttpClient

log = logging.getLogger(__name__)


class RobotsPolicy:
    """Per-host robots.txt rules, fetched once through the shared client.

    404 means no rules (everything allowed); 401/403 or a server that keeps failing means
    everything is disallowed, as the robots.txt RFC 9309 asks for unreachable files."""

    def __init__(self, http: HttpClient, agent: str, *, obey: bool = True):
        self.http, self.agent, self.obey = http, agent, obey
        self._rules: dict[str, RobotFileParser] = {}
        self._fetching: dict[str, threading.Lock] = {}  # root -> held while its robots.txt is fetched
        self._lock = threading.Lock()
        if not obey:
            log.warning("robots.txt is IGNORED by explicit operator opt-out (obey_robots=False); "
                        "make sure you have the site's permission to crawl it")

    def _parser_for(self, url: str) -> RobotFileParser:
        parts = urlsplit(url)
        root = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            if root in self._rules:
                return self._rules[root]
            fetching = self._fetching.setdefault(root, threading.Lock())
        with fetching:  # threads asking at once wait for one fetch instead of each asking the host
            with self._lock:
                if root in self._rules:
                    return self._rules[root]
            parser = RobotFileParser()
            try:
                resp = self.http.get(f"{root}/robots.txt", accept=(200, 404, 410))
            except FetchError as exc:
                log.warning("robots.txt at %s unavailable (%s): treating the site as disallowed", root, exc.reason)
                parser.disallow_all = True
            else:
                if resp.status == 200:
                    parser.parse(resp.text.splitlines())
                else:
                    parser.allow_all = True
            with self._lock:
                self._rules[root] = parser
        return parser

    def allowed(self, url: str) -> bool:
        if not self.obey:
            return True
        return self._parser_for(url).can_fetch(self.agent, url)
