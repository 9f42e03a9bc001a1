"""An OpenAI-compatible chat-completions server on 127.0.0.1 for tests.

Answers ``POST /v1/chat/completions``. What it does for a request is scripted:
``server.script`` (a list, consumed first-in first-out) or, for requests whose user message
contains a marker, ``server.by_marker[marker]`` (also consumed); with nothing scripted it
answers ``ok``. Modes:

- ``ok``: a valid labels JSON (derived from the request, so answers differ per song)
- ``garbage``: a completion whose content is not JSON
- ``invalid``: JSON that breaks the labels schema (Korean words, a missing field)
- ``broken``: HTTP 200 with a body that is not a chat completion
- ``429``: Too Many Requests with ``Retry-After: <retry_after>``
- ``500``: an internal error
- ``401``: unauthorised (not retryable)
- ``policy``: (product backgrounds) a scene that breaks the content policy
- ``huge``: a 30 MB completion with its Content-Length; ``huge-unsized``: the same streamed with
  no length (the connection close ends it)
- ``content:<text>``: a completion whose content is ``<text>`` (e.g. labels an injected lyric asked for)

Requests for a ``product_background`` schema get a product background answer instead of labels.

Every request is recorded (headers, JSON body) and usage counts are returned with each answer.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeLLM:
    def __init__(self, delay_s: float = 0.0, retry_after: str = "1"):
        self.script: list[str] = []
        self.by_marker: dict[str, list[str]] = {}
        self.requests: list[dict] = []
        self.delay_s, self.retry_after = delay_s, retry_after
        self.in_flight = self.max_in_flight = 0
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self) -> FakeLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _mode(self, user_text: str) -> str:
        with self._lock:
            for marker, modes in self.by_marker.items():
                if marker in user_text and modes:
                    return modes.pop(0)
            return self.script.pop(0) if self.script else "ok"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server._lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay_s)
                    user = next((m["content"] for m in body.get("messages", []) if m.get("role") == "user"), "")
                    self._answer(server._mode(user), body, user)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _answer(self, mode, body, user):
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "not found"}})
                if mode == "429":
                    return self._send(429, {"error": {"message": "rate limited"}},
                                      {"Retry-After": server.retry_after})
                if mode in ("500", "401"):
                    return self._send(int(mode), {"error": {"message": f"status {mode}"}})
                if mode == "broken":
                    return self._send(200, {"unexpected": True})
                schema = body.get("response_format", {}).get("json_schema", {}).get("name")
                if mode.startswith("huge"):
                    return self._send_huge(30 * 1024 * 1024, sized=mode == "huge")
                if mode.startswith("content:"):
                    content = mode.removeprefix("content:")
                elif mode == "garbage":
                    content = "Sure! Here are some labels: moody, ocean"
                elif schema == "product_background":  # inference.product_prompts asks for a background
                    scene = {"invalid": "세련된 주방", "policy": "a portrait of a famous celebrity"}.get(
                        mode, "a sunlit marble kitchen counter")
                    content = json.dumps({"scene": scene, "lighting": "soft morning light", "surface": "white marble",
                                          "palette": ["cream", "sage green"], "negative_prompt": "clutter, text"})
                elif mode == "invalid":
                    content = json.dumps({"moods": ["슬픈"], "objects": [], "palette": ["blue"], "style": "x"})
                else:
                    title = json.loads(user).get("title", "") if user.startswith("{") else ""
                    content = json.dumps({"moods": ["dreamy", "wistful"],
                                          "objects": ["lighthouse", "ocean at night", f"scene {len(title)}"],
                                          "palette": ["deep blue", "silver"], "style": "oil painting",
                                          "genre": "ballad"})
                prompt_tokens = sum(len(m.get("content", "")) for m in body.get("messages", [])) // 4
                self._send(200, {
                    "id": "chatcmpl-test", "object": "chat.completion", "model": body.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(content) // 4,
                              "total_tokens": prompt_tokens + len(content) // 4},
                })

            def _send_huge(self, size, sized):
                head = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "'
                tail = b'"}}]}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if sized:
                    self.send_header("Content-Length", str(len(head) + size + len(tail)))
                self.end_headers()
                try:
                    self.wfile.write(head)
                    block = b"x" * 65536
                    for _ in range(size // len(block)):
                        self.wfile.write(block)
                        server.bytes_sent += len(block)
                    self.wfile.write(tail)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading: what a capped client does
                self.close_connection = True

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        return Handler
