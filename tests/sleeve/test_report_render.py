"""Rendering: chart and grid PNGs, Markdown, and Block Kit within Slack's limits."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from sleeve.report import build_report
from sleeve.report_render import (
    MAX_BLOCKS,
    MAX_SECTION_CHARS,
    covers_grid_png,
    fit_blocks,
    rating_chart_png,
    render,
)
from sleeve.store import open_uri
from tests.report_support import WEEK, WEEK_END, make_report_env, seed_week


@pytest.fixture
def report_env(tmp_path, monkeypatch):
    return make_report_env(tmp_path, monkeypatch)



def load(uri: str) -> bytes:
    store, key = open_uri(uri)
    return store.get_bytes(key)


def test_week_with_data_renders_everything(report_env):
    warehouse = report_env.warehouse
    seed_week(warehouse, report_env.store)
    report = json.loads(json.dumps(build_report(warehouse, WEEK, WEEK_END)))  # as it comes out of XCom
    out = render(report, load)

    chart = Image.open(io.BytesIO(out["images"]["ratings.png"]))
    assert chart.format == "PNG" and chart.size == (500, 300)
    grid = Image.open(io.BytesIO(out["images"]["top_covers.png"]))
    assert grid.size == (4 * 128, 128 + 34)
    assert grid.convert("RGB").getpixel((64, 64)) == (0, 0, 255)  # best cover first: i2 is blue

    md = out["markdown"]
    assert md.startswith("# Sleeve weekly report 2026-01-12 → 2026-01-19")
    assert "3 requests · 4 images · 6 reviews · 3 users · mean rating 3.80 (▲0.80 vs 3.00" in md
    assert "![Rating distribution](ratings.png)" in md and "![Top-rated covers](top_covers.png)" in md
    assert "style retraining: trained → gate: promote (clip improved by 0.02) → style-v2" in md
    assert "Crawl sample: 3 new, 1 updated, 1 quarantined, 2 errors (of 15 fetched)" in md
    assert "personalize.train: RuntimeError ×2 (1 runs)" in md
    assert "1 ratings outside 1–5 were ignored." in md

    blocks = out["blocks"]
    assert blocks[0]["type"] == "header" and len(blocks) <= MAX_BLOCKS
    assert "Sunrise &lt;Remix&gt; &amp; Co" in json.dumps(blocks)  # mrkdwn control characters escaped
    assert out["text"].startswith("Sleeve weekly report") and "mean rating 3.80" in out["text"]


def test_no_personal_data_in_report(report_env):
    warehouse = report_env.warehouse
    seed_week(warehouse, report_env.store)
    warehouse.upsert("users", [{"user_id": "u0", "email_masked": "a***@e***.com", "display_name": "Alice"}])
    out = render(build_report(warehouse, WEEK, WEEK_END), load)
    text = out["markdown"] + json.dumps(out["blocks"], ensure_ascii=False) + out["text"]
    for personal in ("@", "Alice", "u0", "u1", "u2"):
        assert personal not in text


def test_empty_week_says_so(report_env):
    warehouse = report_env.warehouse
    out = render(build_report(warehouse, WEEK, WEEK_END), load)
    assert "No activity in the week 2026-01-12 → 2026-01-19" in out["markdown"]
    assert "No activity" in out["text"] and out["images"] == {}
    assert "GPU time: none recorded." in out["markdown"]


def test_chart_for_a_week_without_ratings_has_no_division_by_zero():
    report = {"week_start": "2026-01-12", "week_end": "2026-01-19",
              "ratings": {"distribution": {str(k): 0 for k in range(1, 6)}, "mean": None}}
    assert rating_chart_png(report).startswith(b"\x89PNG")


def test_missing_thumbnail_becomes_a_placeholder():
    def broken(uri):
        raise FileNotFoundError(uri)

    covers = [{"image_id": "i", "uri": "file:///nope.png", "title": "A very long song title indeed", "rating": 4.0,
               "reviews": 1}]
    grid = Image.open(io.BytesIO(covers_grid_png(covers, broken)))
    assert grid.size == (128, 162) and grid.convert("RGB").getpixel((10, 10)) == (187, 187, 187)


def test_blocks_respect_slack_limits():
    blocks = [{"type": "header", "text": {"type": "plain_text", "text": "h" * 400}}]
    blocks += [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 5000}} for _ in range(80)]
    fitted = fit_blocks(blocks)
    assert len(fitted) == MAX_BLOCKS
    assert len(fitted[0]["text"]["text"]) == 150
    assert all(len(b["text"]["text"]) <= MAX_SECTION_CHARS for b in fitted if b["type"] == "section")
    assert fitted[-1]["elements"][0]["text"] == "…32 more blocks left out"


def test_captions_render_hangul_not_boxes():
    """With the bundled NanumGothic, distinct Hangul syllables draw distinct glyphs (a font
    without Hangul draws the same 'missing glyph' box for each)."""
    from sleeve.report_render import _caption_font

    font = _caption_font()
    masks = {bytes(font.getmask(ch)) for ch in "밤편지"}
    assert len(masks) == 3
