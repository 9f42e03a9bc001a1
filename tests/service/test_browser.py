"""The service as a person uses it, in a real browser (Debian's Chromium driven by Playwright)
against ``python -m service`` on loopback with the embedded worker: sign up, ask for covers,
watch 4 arrive without reloading, find the download locked, review, download, and find the cover
on my page and in the gallery. Screenshots of every page are taken on the way; with
SLEEVE_SCREENSHOTS_DIR=docs/screenshots they refresh the README's pictures."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

REPO = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("SLEEVE_SCREENSHOTS_DIR") or Path(os.environ["SLEEVE_HOME"]) / "screenshots")
if not SHOTS.is_absolute():
    SHOTS = REPO / SHOTS
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]
COVERS_WITHIN_S = 15  # the target once the service is warm (the first start imports torch)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


def _wait_images(page, timeout_s: float = 20) -> None:
    """Every cover image is loaded (the page's CSP forbids eval, so no wait_for_function)."""
    deadline = time.monotonic() + timeout_s
    script = "Array.from(document.querySelectorAll('#covers img')).every(i => i.complete && i.naturalWidth > 0)"
    while not page.evaluate(script):
        assert time.monotonic() < deadline, "cover images did not load"
        time.sleep(0.1)


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def _warm(live_service) -> None:
    """Wait until the worker's child has imported torch (a cold start is not what a user sees)."""
    import requests

    deadline = time.monotonic() + 180
    while not requests.get(live_service["url"] + "/healthz", timeout=5).json()["generation_ready"]:
        assert time.monotonic() < deadline, "the worker did not warm up"
        time.sleep(0.5)


def test_a_user_signs_up_makes_covers_reviews_downloads_and_finds_them(browser, live_service, tmp_path):
    url = live_service["url"]
    _warm(live_service)
    context = browser.new_context(viewport={"width": 1100, "height": 760}, accept_downloads=True)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(url + "/")
    _shot(page, "gallery-empty")
    page.click("text=Sign up")
    page.fill("input[name=email]", "browser.user@example.com")
    page.fill("input[name=password]", "a long enough password")
    _shot(page, "signup")
    page.click("#signup-form button[type=submit]")
    page.wait_for_url(url + "/create")
    assert "b***@e***.com" in page.inner_text("nav")  # masked, never the address itself

    page.fill("input[name=title]", 'Moonlight <script>alert("x")</script>')
    page.fill("input[name=artist]", "The Testers")
    page.fill("input[name=genre]", "ballad")
    page.fill("input[name=keywords]", "moon, lighthouse, sea")
    page.fill("input[name=style]", "watercolor painting")
    page.fill("input[name=colors]", "deep blue, gold")
    _shot(page, "create")
    started = time.monotonic()
    page.click("#create-form button[type=submit]")
    page.wait_for_url(f"{url}/requests/*")
    # The covers arrive while the page stays open: no reload (the page object is the same document).
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("#covers .cover")).to_have_count(4, timeout=120_000)
    arrived_s = time.monotonic() - started
    assert page.evaluate("window.__sameDocument") is True
    expect(page.locator("#status")).to_have_text("done")
    _wait_images(page)
    assert page.title().startswith('Moonlight <script>')  # shown as text, not run
    assert not errors
    _shot(page, "request")
    print(f"4 covers shown {arrived_s:.1f} s after submitting")
    assert arrived_s < COVERS_WITHIN_S, f"4 covers took {arrived_s:.1f} s"

    first = page.locator("#covers .cover").first
    locked = first.locator("button.download")
    assert locked.is_disabled() and "review first" in locked.inner_text()
    image_id = first.get_attribute("data-image")
    assert page.request.get(f"{url}/api/images/{image_id}/download").status == 403

    first.locator("input[name=rating][value='5']").check()
    first.locator("input[name=comment]").fill("Love the <b>colours</b>")
    first.locator("form.review button[type=submit]").click()
    page.wait_for_load_state()
    first = page.locator(f"#image-{image_id}")
    with page.expect_download() as download:
        first.locator("a.download").click()
    saved = tmp_path / "cover.png"
    download.value.save_as(saved)
    assert saved.read_bytes().startswith(b"\x89PNG")
    _shot(page, "request-reviewed")

    page.click("nav >> text=My page")
    page.wait_for_selector(f"#my-covers a[href*='{image_id}']")
    assert "Love the <b>colours</b>" in page.inner_text("#my-covers")
    _shot(page, "my-page")
    page.click(f"#my-covers a[href*='{image_id}']")  # the cover opens the inputs it was made from
    page.click("text=Made from")
    assert "watercolor painting" in page.inner_text(".inputs")

    page.click("nav >> text=Gallery")
    page.wait_for_selector("#gallery img")
    assert image_id in page.inner_html("#gallery")
    _shot(page, "gallery")

    page.click("nav >> text=With my face")
    _shot(page, "personal")
    page.click("nav >> text=Sign out")
    page.wait_for_url(url + "/")
    page.goto(url + "/me")
    assert page.url.startswith(url + "/login")
    _shot(page, "login")
    context.close()


def test_screenshots_are_small(browser):
    """They are committed: each stays small."""
    shots = sorted(SHOTS.glob("*.png"))
    assert len(shots) >= 8 and all(p.stat().st_size < 200_000 for p in shots)
