"""A Slack-Web-API-compatible server on 127.0.0.1 for tests with the real slack-sdk clients.

Implements what Sleeve calls: auth.test, chat.postMessage, chat.update, files.delete, the
three steps of ``files_upload_v2`` (files.getUploadURLExternal, the upload URL,
files.completeUploadExternal) and an Incoming Webhook endpoint. It checks the bot token,
Slack's message limits and image blocks (an uploaded file id or a public URL) like Slack does, records every request, and can be told to answer the
next calls of a method with 429 + Retry-After or a 5xx.
"""

from __future__ import annotations

import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlparse


class SlackServer:
    def __init__(self, token: str = "xoxb-test-token", webhook_path: str = "/services/T000/B000/secret"):
        self.token = token
        self.webhook_path = webhook_path
        self.requests: list[dict] = []  # {"method", "params"} in arrival order
        self.messages: dict[str, dict] = {}  # ts -> {"channel", "text", "blocks", "thread_ts", "edits"}
        self.files: dict[str, dict] = {}  # file id -> {"name", "data", "channel", "thread_ts", "shared"}
        self.webhook_posts: list[dict] = []
        self._faults: dict[str, list[tuple[int, dict]]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # -- test controls ---------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.webhook_path}"

    def fail_next(self, method: str, status: int, times: int = 1, retry_after: int | None = None) -> None:
        """Answer the next ``times`` calls of ``method`` (e.g. "chat.postMessage", "webhook")
        with ``status``; 429s carry a Retry-After header."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        self._faults.setdefault(method, []).extend([(status, headers)] * times)

    def calls(self, method: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- Slack behaviour -------------------------------------------------------------------
    def _api(self, method: str, params: dict, auth: str) -> dict:
        if auth != f"Bearer {self.token}":
            return {"ok": False, "error": "invalid_auth"}
        if method == "auth.test":
            return {"ok": True, "team": "Sleeve test", "user": "sleeve-bot", "user_id": "U0BOT"}
        if method in ("chat.postMessage", "chat.update"):
            return self._chat(method, params)
        if method == "files.getUploadURLExternal":
            if not params.get("filename") or not str(params.get("length", "")).isdigit():
                return {"ok": False, "error": "invalid_arguments"}
            file_id = f"F{next(self._ids):08d}"
            self.files[file_id] = {"name": params["filename"], "length": int(params["length"]), "data": None,
                                   "shared": False}
            return {"ok": True, "file_id": file_id, "upload_url": f"http://127.0.0.1:{self.port}/upload/{file_id}"}
        if method == "files.completeUploadExternal":
            done = []
            for item in json.loads(params.get("files", "[]")):
                stored = self.files.get(item["id"])
                if stored is None or stored["data"] is None:
                    return {"ok": False, "error": "file_not_found"}
                stored.update(title=item.get("title"), channel=params.get("channel_id"),
                              thread_ts=params.get("thread_ts"), shared=True)
                done.append({"id": item["id"], "name": stored["name"], "title": item.get("title")})
            return {"ok": True, "files": done}
        if method == "files.delete":
            if self.files.pop(params.get("file", ""), None) is None:
                return {"ok": False, "error": "file_not_found"}
            return {"ok": True}
        return {"ok": False, "error": "unknown_method"}

    def _chat(self, method: str, params: dict) -> dict:
        channel, text = params.get("channel"), params.get("text")
        blocks = params.get("blocks")
        blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not text and not blocks:
            return {"ok": False, "error": "no_text"}
        if blocks and (len(blocks) > 50 or any(len(b.get("text", {}).get("text", "")) > 3000
                                               for b in blocks if b.get("type") == "section")):
            return {"ok": False, "error": "invalid_blocks"}
        for image in [b for b in blocks or [] if b.get("type") == "image"]:
            # Slack takes an uploaded file by id (slack_file) or a public http(s) image_url, never both.
            file_id = image.get("slack_file", {}).get("id")
            url_ok = str(image.get("image_url", "")).startswith(("http://", "https://"))
            if (file_id is None) == (not url_ok) or (file_id and file_id not in self.files) or not image.get("alt_text"):
                return {"ok": False, "error": "invalid_blocks", "errors": [f"invalid image block {image}"]}
        if method == "chat.update":
            message = self.messages.get(params.get("ts", ""))
            if message is None or message["channel"] != channel:
                return {"ok": False, "error": "message_not_found"}
            message.update(text=text, blocks=blocks, edits=message["edits"] + 1)
            return {"ok": True, "channel": channel, "ts": params["ts"], "text": text}
        ts = f"1700000000.{next(self._ids):06d}"
        self.messages[ts] = {"channel": channel, "text": text, "blocks": blocks,
                             "thread_ts": params.get("thread_ts"), "edits": 0}
        return {"ok": True, "channel": channel, "ts": ts, "message": {"text": text}}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _reply(self, status: int, body: bytes, content_type: str, headers: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                url = urlparse(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if url.path.startswith("/api/"):
                    method = url.path.removeprefix("/api/")
                elif url.path.startswith("/upload/"):
                    method = "upload"
                elif url.path == server.webhook_path:
                    method = "webhook"
                else:
                    return self._reply(404, b"not found", "text/plain")
                params = dict(parse_qsl(url.query))
                ctype = self.headers.get("Content-Type", "")
                if method != "upload" and raw:
                    params.update(json.loads(raw) if "json" in ctype else dict(parse_qsl(raw.decode())))
                with server._lock:
                    server.requests.append({"method": method, "params": params if method != "upload" else {}})
                    faults = server._faults.get(method)
                    if faults:
                        status, headers = faults.pop(0)
                        body = b'{"ok": false, "error": "ratelimited"}' if status == 429 else b"server error"
                        return self._reply(status, body, "application/json", headers)
                    if method == "upload":
                        stored = server.files.get(url.path.removeprefix("/upload/"))
                        if stored is None:
                            return self._reply(404, b"unknown upload", "text/plain")
                        stored["data"] = raw
                        return self._reply(200, f"OK - {len(raw)}".encode(), "text/plain")
                    if method == "webhook":
                        if not params.get("text") and not params.get("blocks"):
                            return self._reply(400, b"no_text", "text/plain")
                        if any(b.get("type") == "image" and not str(b.get("image_url", "")).startswith("http")
                               for b in params.get("blocks") or []):
                            return self._reply(400, b"invalid_blocks", "text/plain")
                        server.webhook_posts.append(params)
                        return self._reply(200, b"ok", "text/plain")
                    answer = server._api(method, params, self.headers.get("Authorization", ""))
                return self._reply(200, json.dumps(answer).encode(), "application/json")

        return Handler
