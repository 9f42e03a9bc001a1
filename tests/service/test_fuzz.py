"""Schemathesis fuzzes the API from its own OpenAPI document (/openapi.json), signed in and with
real covers present: whatever it sends, the answer is never a 5xx, and every error is a 4xx
carrying a message."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.service.conftest import add_images, create, sign_up

# Signing out and deleting the account would end the session the other operations run in;
# tests/service/test_api.py covers both.
EXCLUDED = ("/api/logout", "/api/me/delete")
EXAMPLES = 40


def _fuzz(operation, cookies: dict, problems: list) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        response = case.call(cookies=cookies)
        where = f"{case.method} {case.formatted_path} -> {response.status_code}"
        if response.status_code >= 500:
            problems.append(f"{where}: {response.text[:200]}")
        elif response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = None
            if not (isinstance(detail, str) and detail.strip()):
                problems.append(f"{where} without a message: {response.text[:200]}")

    run()


def test_no_input_makes_the_api_fail_or_answer_without_a_message(client):
    # (schemathesis' own pytest plugin does not run under pytest 9: its cases are driven here)
    sign_up(client, "fuzz@example.com")
    add_images(client.app_state, create(client), n=2)
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    cookies = dict(client.cookies.items())
    problems, fuzzed = [], []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in EXCLUDED:
            continue
        fuzzed.append(f"{operation.method.upper()} {operation.path}")
        _fuzz(operation, cookies, problems)
    assert len(fuzzed) == 11, fuzzed  # every operation but the two excluded
    assert not problems, "\n".join(sorted(set(problems))[:20])


def test_the_openapi_document_lists_the_api(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/signup", "/api/login", "/api/logout", "/api/covers", "/api/requests/{request_id}",
            "/api/images/{image_id}/review", "/api/images/{image_id}/download", "/api/gallery", "/api/me/images",
            "/healthz"} <= set(paths)
    assert not [p for p in paths if not (p.startswith("/api/") or p == "/healthz")]  # pages stay out of it
