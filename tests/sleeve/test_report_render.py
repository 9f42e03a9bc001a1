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
    report = json.loads(json.dumps(build_report(warehouse, WEEK, WEEK_END, min_reviews=1)))  # as out of XCom
    out = render(report, load)

    chart = Image.open(io.BytesIO(out["images"]["ratings.png"]))
    assert chart.format == "PNG" and chart.size == (500, 300)
    assert Image.open(io.BytesIO(out["images"]["trend.png"])).size == (600, 280)
    grid = Image.open(io.BytesIO(out["images"]["top_covers.png"]))
    assert grid.size == (3 * 128 + 2 * 4, 128 + 50)  # one cover per request: 3 requests
    assert grid.convert("RGB").getpixel((64, 64)) == (0, 0, 255)  # best cover first: i2 is blue

    md = out["markdown"]
    assert md.startswith("# Sleeve weekly report 2026-01-12 → 2026-01-19\n\n**❌ Needs attention (1 stage run ended "
                         "failed): mean rating 3.80 (▲0.80 vs 3.00 the week before) · 4 covers · 6 reviews · 3 users**")
    assert "\nModel: Promoted style-v2 to production: the new model passed the gate.\n" in md
    assert "![Rating trend over the last weeks](trend.png)" in md and "![Top covers](top_covers.png)" in md
    assert "Crawl sample: 3 new, 1 updated, 1 quarantined, 2 errors (of 15 fetched)" in md
    assert "  - personalize.train: RuntimeError in 2 tries (1 run)" in md
    assert "- 1 rating outside 1–5 was ignored" in md
    assert "\n1. Sunrise &lt;Remix&gt; &amp; Co — Demo Band: 5.00 (1 review)\n2. Blue Night — Demo Band: 4.50 " \
           "(2 reviews)\n" in md
    assert "- 1." not in md and "- -" not in md  # no doubled list markers
    assert "Personalisation: 0 adapters trained for 1 request, 0 covers, 1 failed" in md

    blocks = out["blocks"]
    assert blocks[0]["type"] == "header" and len(blocks) <= MAX_BLOCKS
    assert "Sunrise &lt;Remix&gt; &amp; Co" in json.dumps(blocks)  # mrkdwn control characters escaped
    assert [b["image_url"] for b in blocks if b["type"] == "image"] == ["trend.png", "ratings.png", "top_covers.png"]
    assert out["text"].startswith("Sleeve weekly report") and "mean rating 3.80" in out["text"]


def _report(**changes) -> dict:
    """A minimal report dict, as build_report returns it, for wording tests."""
    report = {
        "week_start": "2026-01-12T03:00:00+00:00", "week_end": "2026-01-19T03:00:00+00:00", "empty": False,
        "activity": {"requests": 1, "personalization_requests": 1, "images": 5, "personalized_images": 1,
                     "reviews": 1, "users": 1, "previous_images": 10},
        "ratings": {"distribution": {1: 0, 2: 0, 3: 0, 4: 1, 5: 0}, "count": 1, "mean": 4.0, "share_4plus": 1.0,
                    "invalid": 0, "previous_mean": 4.5, "previous_count": 2, "change": -0.5},
        "trend": [], "top_covers": [], "top_min_reviews": 1,
        "model": {"runs": [{"kind": "style", "status": "trained", "reason": None, "decision": "keep",
                            "decision_reasons": ["val_loss 1.03 above limit 1.02"], "model_version": "style-b",
                            "gpu_seconds": 1.0, "trained_on": {"generated": 0, "covers": 7},
                            "metrics": {"challenger": {"val_loss": 1.03}, "champion": {"val_loss": 1.0}}}],
                  "production": {"version": "style-a", "base_model": "b", "since": "2026-01-05T03:00:00+00:00"},
                  "rollbacks": []},
        "data": {"crawl": {}, "crawl_total": {}, "label": {"songs": 0, "labelled": 0},
                 "generate": {"requests": 1, "images": 4, "failed": 0},
                 "personalize": {"requests": 1, "trained": 1, "failed": 0, "images": 1, "gpu_seconds": 1.0}},
        "health": {"failures": [], "failed_runs": 0, "failed_stages": 0, "stages": [], "gpu_seconds": {},
                   "gpu_seconds_total": 0},
    }
    for key, value in changes.items():
        report[key] = {**report[key], **value} if isinstance(value, dict) else value
    return report


def test_headline_verdict_and_the_decision_in_plain_words():
    from sleeve.report_render import decision, headline

    bad = _report()
    assert headline(bad).startswith("❌ Needs attention (the mean rating fell by 0.50; 50 % fewer covers than the "
                                    "week before): mean rating 4.00 (▼0.50 vs 4.50 the week before) · 5 covers (▼50 %)"
                                    " · 1 review · 1 user")
    assert decision(bad) == ("Kept style-a, the gate did not promote the new model (val_loss 1.03 above limit 1.02; "
                             "validation loss ▲3.0 % vs style-a). "
                             "It trained on 7 crawled covers only: no reviewed cover of this week passed the "
                             "rating filter.")
    good = _report(ratings={"change": 0.2, "previous_mean": 3.8}, activity={"previous_images": 4})
    assert headline(good).startswith("✅ Good week: mean rating 4.00 (▲0.20 vs 3.80 the week before) · 5 covers "
                                     "(▲25 %)")
    mixed = _report(ratings={"change": -0.2, "previous_mean": 4.2}, activity={"previous_images": 5})
    assert headline(mixed).startswith("⚠️ Mixed week (the mean rating fell by 0.20): ")
    promoted = _report(model={"runs": [{**bad["model"]["runs"][0], "decision": "promote", "trained_on": {
        "generated": 3, "covers": 2}, "metrics": {"challenger": {"val_loss": 0.9}, "champion": {"val_loss": 1.0}}}]})
    assert decision(promoted) == ("Promoted style-b to production: the new model passed the gate (validation loss "
                                  "▼10.0 % vs style-a).")
    none = _report(model={"runs": [], "production": None})
    assert decision(none) == "No retraining ran for this week; the base model stayed in production."


def test_plurals_and_personalisation_requests_explained():
    from sleeve.report_render import to_markdown

    md = to_markdown(_report())
    assert "- 1 cover request (users asking for covers of a song) and 1 personalisation request (covers with " \
           "the user's own face" in md
    assert "- 5 covers made, 1 of them personalised; 1 review from 1 active user" in md
    assert "Personalisation: 1 adapter trained for 1 request, 1 cover, 0 failed" in md
    assert "No cover had 1 review or more this week." in md


HOSTILE = "<script>alert(1)</script>\x00 *bold* [x](http://evil) <!channel> \u202egnp.exe"


def test_every_rendering_escapes_titles_from_the_web(report_env):
    warehouse = report_env.warehouse
    seed_week(warehouse, report_env.store)
    warehouse.upsert("songs", [{"song_id": "s1", "source": "sample", "source_id": "1", "title": HOSTILE,
                                "artist": "<b>Band</b>\x07"}])
    out = render(build_report(warehouse, WEEK, WEEK_END, min_reviews=1), load)
    md, blocks = out["markdown"], json.dumps(out["blocks"], ensure_ascii=False)
    for text in (md, blocks, out["text"]):
        assert "\x00" not in text and "\x07" not in text and "\u202e" not in text
    assert "<script>" not in md and "<b>" not in md and "[x](http" not in md and " *bold*" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt; \\*bold\\* \\[x\\](http://evil) &lt;\\!channel&gt;" in md
    assert "<script>" not in blocks and "<!channel>" not in blocks and "&lt;!channel&gt;" in blocks
    grid = covers_grid_png([{"image_id": "i", "uri": "x", "title": HOSTILE, "artist": "\x00", "rating": 4.0,
                             "reviews": 1}], lambda uri: b"")
    assert Image.open(io.BytesIO(grid)).size == (128, 178)  # a NUL in a caption draws, it does not raise


def test_trend_chart_and_line():
    from sleeve.report_render import trend_chart_png, trend_line

    weeks = [{"week_start": f"2026-01-{d:02d}T03:00:00+00:00", "reviews": n, "mean": m, "share_4plus": s,
              "promoted": p} for d, n, m, s, p in ((5, 0, None, None, None), (12, 4, 3.0, 0.25, "style-a"),
                                                  (19, 8, 3.75, 0.5, None))]
    report = _report(trend=weeks)
    assert trend_line(report) == ("Trend over the last 3 weeks: mean rating 3.00 → 3.75 (▲0.75 since 2026-01-12); "
                                  "4–5★ 25 % → 50 %")
    assert Image.open(io.BytesIO(trend_chart_png(report))).format == "PNG"


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
    assert "GPU time: none recorded" in out["markdown"] and "Model:" not in out["markdown"]


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
    assert grid.size == (128, 178) and grid.convert("RGB").getpixel((10, 10)) == (187, 187, 187)


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
