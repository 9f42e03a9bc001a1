"""MusicBrainz (/ws/2 JSON) + Cover Art Archive client.

Follows the MusicBrainz API policy: a meaningful User-Agent with contact details (set on the
shared HttpClient), at most 1 request/s per host (the client's rate limit; the Cover Art
Archive's redirects to archive.org are hops with their own host's limit), and backing off on
503 (the client's retry with Retry-After). The Cover Art Archive is only asked for releases that
do not say they have no front image. Its images are NOT CC0: each one is stored with its source
URL and an attribution to the release.
"""

from __future__ import annotations

from datetime import date
from urllib.parse import urlencode

from crawlers.http import FetchError, HttpClient, rewrite_url
from crawlers.parsers import MbRelease, ParseError, SongRecord, parse_mb_release, parse_mb_release_search

LICENCE = "copyright of the rights holders (Cover Art Archive images are not CC0)"
PAGE = 100  # the web service's maximum page size


def user_agent(contact: str, version: str = "0.1") -> str:
    """MusicBrainz asks for 'Application/version ( contact )'."""
    return f"Sleeve/{version} ( {contact} )"


class MusicBrainzClient:
    def __init__(self, http: HttpClient, base_url: str = "https://musicbrainz.org",
                 coverart_url: str = "https://coverartarchive.org", *, source: str = "musicbrainz",
                 rewrites: dict[str, str] | None = None, public_web: str = "https://musicbrainz.org"):
        self.http, self.base, self.caa = http, base_url.rstrip("/"), coverart_url.rstrip("/")
        self.source, self.rewrites, self.public_web = source, rewrites or {}, public_web.rstrip("/")

    def attribution(self, record: SongRecord) -> str:
        return (f"Cover art of release '{record.album}' by {record.artist} "
                f"({self.public_web}/release/{record.album_id}), Cover Art Archive")

    def licence(self, record: SongRecord) -> str:
        return LICENCE

    def search_url(self) -> str:
        return f"{self.base}/ws/2/release"

    def search_releases(self, query: str, *, limit: int | None = None,
                        since: date | None = None) -> tuple[list[dict], ParseError | FetchError | None]:
        """Releases matching a Lucene ``query``, newest first as the service orders them; paged
        until ``limit`` releases are found. ``since`` drops releases dated before it. A page that
        fails ends the search: (the releases found before it, its error); else (releases, None)."""
        found, offset = [], 0
        while True:
            params = urlencode({"query": query, "fmt": "json", "limit": PAGE, "offset": offset})
            try:
                releases, total = parse_mb_release_search(self.http.get(f"{self.search_url()}?{params}").content)
            except (ParseError, FetchError) as exc:
                if not found:
                    raise
                return found[:limit] if limit else found, exc
            found += [r for r in releases if not (since and r["date"] and r["date"] < since)]
            offset += len(releases)
            if not releases or offset >= total or (limit and len(found) >= limit):
                return (found[:limit] if limit else found), None

    def release_url(self, mbid: str) -> str:
        params = urlencode({"inc": "recordings artist-credits genres release-groups", "fmt": "json"})
        return f"{self.base}/ws/2/release/{mbid}?{params}"

    def release(self, mbid: str) -> MbRelease:
        resp = self.http.get(self.release_url(mbid))
        return parse_mb_release(resp.content, source_url_for=lambda rid: f"{self.public_web}/recording/{rid}",
                                source=self.source)

    def cover(self, record: SongRecord) -> tuple[bytes, str] | None:
        """The release's front cover (500 px), or None when the archive has none (404)."""
        url = f"{self.caa}/release/{record.album_id}/front-500"
        resp = self.http.get(url, accept=(200, 404))
        if resp.status == 404:
            return None
        return resp.content, rewrite_url(url, self.rewrites)
