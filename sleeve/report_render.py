"""Turn a weekly report (``sleeve.report.build_report``) into what people read: a verdict and the
model decision first (readable in ten seconds), then the details for engineers; as Markdown, as a
Slack Block Kit message within Slack's limits, and as PNGs (rating trend, rating distribution,
top-covers grid). The text is built once (``summary`` / ``sections``) and rendered per format, so
Markdown and Slack agree.

Every string that comes from users or the web (song titles, artists) or from stored rows passes
through the format's escape (:func:`md`, :func:`mrkdwn`, :func:`clean` for PNG captions and plain
text): control and invisible format characters are dropped, Markdown and HTML syntax is escaped,
Slack's control characters are entity-encoded, so no title can inject markup, links or mentions.
"""

from __future__ import annotations

import io
import logging
import re
import unicodedata
from collections.abc import Callable

log = logging.getLogger(__name__)

# Slack limits (https://docs.slack.dev/reference/block-kit/blocks): a message holds at most
# 50 blocks, a section's text at most 3000 characters, a header's at most 150.
MAX_BLOCKS = 50
MAX_SECTION_CHARS = 3000
MAX_HEADER_CHARS = 150
MAX_FALLBACK_CHARS = 3000
MAX_FIELD_CHARS = 200  # one title or artist in a line of text
CHART_NAME = "ratings.png"
TREND_NAME = "trend.png"
GRID_NAME = "top_covers.png"
PRODUCT_GRID_NAME = "top_product_shots.png"
Escape = Callable[[object], str]

# -- escaping ------------------------------------------------------------------------------

_DROP = {"Cc", "Cf", "Cs", "Co", "Cn"}  # control, format (zero-width, bidi overrides), surrogates, private, unassigned
_MD_SPECIAL = re.compile(r"([\\`*_\[\]~|#!])")


def clean(value: object, limit: int = MAX_FIELD_CHARS) -> str:
    """``value`` as one line of visible text: control and invisible format characters (NUL,
    bidi overrides, zero-width) dropped, whitespace collapsed, clipped to ``limit``."""
    text = "".join(" " if ch in "\t\n\r\v\f" else ch for ch in str(value))
    text = "".join(ch for ch in text if unicodedata.category(ch) not in _DROP)
    return _clip(" ".join(text.split()), limit)


def md(value: object, limit: int = MAX_FIELD_CHARS) -> str:
    """For Markdown (CommonMark/GFM): HTML's ``& < >`` as entities, Markdown syntax backslash-escaped."""
    text = clean(value, limit).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def mrkdwn(value: object, limit: int = MAX_FIELD_CHARS) -> str:
    """For Slack mrkdwn: ``& < >`` are Slack's control characters (links, mentions)."""
    return clean(value, limit).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# -- words and numbers ---------------------------------------------------------------------

def plural(n: int | float, word: str, many: str | None = None) -> str:
    return f"{n:g} {word if n == 1 else many or word + 's'}"


def _num(value, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e6 else f"{value:.3e}"
    return str(value)


def _secs(seconds: float) -> str:
    seconds = float(seconds or 0)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _signed(value: float, digits: int = 2, unit: str = "") -> str:
    return f"{'▲' if value > 0 else '▼' if value < 0 else '±'}{abs(value):.{digits}f}{unit}"


def _percent_change(now: int, before: int) -> str | None:
    return None if not before else _signed(100 * (now - before) / before, 0, " %")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _week(report: dict) -> str:
    return f"{report['week_start'][:10]} → {report['week_end'][:10]}"


def title(report: dict) -> str:
    return f"Sleeve weekly report {_week(report)}"


# -- the ten-second summary ----------------------------------------------------------------

def verdict(report: dict) -> tuple[str, str, list[str]]:
    """(emoji, words, reasons): ❌ something failed or ratings fell sharply, ⚠️ something to look
    at, ✅ a good week."""
    if report["empty"]:
        return "⚠️", "No activity", ["no requests, covers, reviews or pipeline runs were recorded"]
    h, r, a = report["health"], report["ratings"], report["activity"]
    bad, look = [], []
    if h["failed_stages"]:
        bad.append(f"{plural(h['failed_stages'], 'stage run')} ended failed")
    if any(run["status"] == "failed" for run in report["model"]["runs"]):
        bad.append("retraining failed")
    if r["change"] is not None and r["change"] <= -0.5:
        bad.append(f"the mean rating fell by {-r['change']:.2f}")
    elif r["change"] is not None and r["change"] <= -0.1:
        look.append(f"the mean rating fell by {-r['change']:.2f}")
    if h["failures"] and not bad:
        tries = sum(f["tries"] for f in h["failures"])
        look.append(f"{plural(tries, 'task try', 'task tries')} failed (see Health)")
    if a["previous_images"] and a["images"] < 0.7 * a["previous_images"]:
        look.append(f"{100 * (1 - a['images'] / a['previous_images']):.0f} % fewer covers than the week before")
    if a["images"] and not r["count"]:
        look.append("no cover was rated")
    if bad:
        return "❌", "Needs attention", bad + look
    if look:
        return "⚠️", "Mixed week", look
    return "✅", "Good week", []


def headline(report: dict) -> str:
    """The verdict and the week's key numbers with their change since the week before."""
    emoji, words, reasons = verdict(report)
    if report["empty"]:
        return f"{emoji} {words} in the week {_week(report)}: {reasons[0]}."
    a, r = report["activity"], report["ratings"]
    if r["mean"] is None:
        mean = "no ratings"
    elif r["change"] is not None:
        mean = f"mean rating {r['mean']:.2f} ({_signed(r['change'])} vs {r['previous_mean']:.2f} the week before)"
    else:
        mean = f"mean rating {r['mean']:.2f} (no ratings the week before)"
    covers = plural(a["images"], "cover")
    if (change := _percent_change(a["images"], a["previous_images"])) is not None:
        covers += f" ({change})"
    why = f" ({'; '.join(reasons)})" if reasons else ""
    return (f"{emoji} {words}{why}: {mean} · {covers} · {plural(a['reviews'], 'review')} · "
            f"{plural(a['users'], 'user')}")


def _current(report: dict, esc: Escape) -> str:
    prod = report["model"]["production"]
    return f"{esc(prod['version'])}" if prod else "the base model"


def _val_loss_change(run: dict) -> float | None:
    """The challenger's validation loss relative to the champion's, in % (negative: better)."""
    try:
        chall = float(run["metrics"]["challenger"]["val_loss"])
        champ = float(run["metrics"]["champion"]["val_loss"])
    except (KeyError, TypeError, ValueError):
        return None
    return 100 * (chall - champ) / champ if champ and champ == champ and chall == chall else None


def _trained_on(run: dict, report: dict) -> str:
    counts = run.get("trained_on") or {}
    generated, covers = counts.get("generated"), counts.get("covers")
    if generated == 0 and covers:
        return (f" It trained on {plural(covers, 'crawled cover')} only: no reviewed cover of this week passed "
                "the rating filter.")
    if generated is None and not report["activity"]["reviews"]:
        return " It trained on crawled covers only: there were no reviews this week."
    return ""


def decision(report: dict, esc: Escape = str) -> str:
    """What happened to the model this week, in plain words."""
    runs = [run for run in report["model"]["runs"] if run["kind"] == "style"]
    current = _current(report, esc)
    if not runs:
        return f"No retraining ran for this week; {current} stayed in production."
    run = runs[-1]
    if run["status"] == "skipped":
        return f"No new model: retraining was skipped ({esc(run['reason'] or 'no reason recorded')}); {current} stays."
    if run["status"] == "failed":
        return f"No new model: retraining failed ({esc(run['reason'] or 'no reason recorded')}); {current} stays."
    if run["status"] != "trained":
        return (f"Retraining was still {esc(run['status'] or 'unknown')} when this report was made; re-run the "
                "report for this week to see its decision.")
    change = _val_loss_change(run)
    delta = f"validation loss {_signed(change, 1, ' %')} vs {current}" if change is not None else ""
    if run["decision"] == "promote" and run["metrics"].get("canary"):
        text = (f"{esc(run['model_version'])} passed the gate" + (f" ({delta})" if delta else "")
                + f" and became the canary: it serves a share of next week's requests, and their ratings "
                  f"decide whether it replaces {current}.")
    elif run["decision"] == "promote":
        text = (f"Promoted {esc(run['model_version'])} to production: the new model passed the gate"
                + (f" ({delta})." if delta else "."))
    else:
        # The gate's first reason says why (worse, or too few images to tell); the loss change beside it.
        reason = esc(run["decision_reasons"][0]) if run["decision_reasons"] else ""
        why = "; ".join(part for part in (reason, delta) if part) or "no reason recorded"
        text = f"Kept {current}, the gate did not promote the new model ({why})."
    return text + _trained_on(run, report)


def summary(report: dict, esc: Escape = str) -> list[str]:
    """The lines a reader needs in ten seconds: verdict with numbers, the model decision."""
    return [headline(report)] + ([] if report["empty"] else [f"Model: {decision(report, esc)}"])


# -- the details ---------------------------------------------------------------------------

def _activity_lines(a: dict) -> list[str]:
    lines = [f"{plural(a['requests'], 'cover request')} (users asking for covers of a song)"]
    if a["personalization_requests"]:
        lines[0] += (f" and {plural(a['personalization_requests'], 'personalisation request')} (covers with the "
                     "user's own face, trained from their photos; never in the shared model or in Top covers)")
    personal = f", {a['personalized_images']} of them personalised" if a["personalized_images"] else ""
    lines.append(f"{plural(a['images'], 'cover')} made{personal}; {plural(a['reviews'], 'review')} from "
                 f"{plural(a['users'], 'active user')}")
    return lines


def trend_line(report: dict) -> str | None:
    weeks = [w for w in report.get("trend", []) if w["mean"] is not None]
    if not weeks:
        return None
    first, last = weeks[0], weeks[-1]
    means = " → ".join(f"{w['mean']:.2f}" for w in weeks)
    line = f"Trend over the last {plural(len(report['trend']), 'week')}: mean rating {means}"
    if len(weeks) > 1:
        line += (f" ({_signed(last['mean'] - first['mean'])} since {first['week_start'][:10]}); 4–5★ "
                 f"{100 * first['share_4plus']:.0f} % → {100 * last['share_4plus']:.0f} %")
    else:
        line += f"; 4–5★ {100 * last['share_4plus']:.0f} % (no earlier week with ratings)"
    return line


def _rating_lines(report: dict) -> list[str]:
    r = report["ratings"]
    lines = [" · ".join(f"{k}★ {v}" for k, v in r["distribution"].items())]
    if r["share_4plus"] is not None:
        lines.append(f"{100 * r['share_4plus']:.0f} % of ratings were 4★ or 5★")
    if r["invalid"]:
        lines.append(f"{plural(r['invalid'], 'rating')} outside 1–5 {'was' if r['invalid'] == 1 else 'were'} ignored")
    if line := trend_line(report):
        lines.append(line)
    return lines


def _cover_lines(report: dict, esc: Escape) -> list[str]:
    lines = [f"{esc(c['title'])} — {esc(c['artist'] or 'unknown artist')}: {c['rating']:.2f} "
             f"({plural(c['reviews'], 'review')})" for c in report["top_covers"]]
    return lines or [f"No cover had {plural(report['top_min_reviews'], 'review')} or more this week."]


def _model_lines(m: dict, esc: Escape) -> list[str]:
    lines = []
    for run in m["runs"]:
        line = f"{esc(run['kind'])} retraining: {esc(run['status'])}"
        if run["reason"]:
            line += f" ({esc(run['reason'])})"
        if run["model_version"]:
            line += f", version {esc(run['model_version'])}"
        if run["decision"]:
            line += f"; gate: {esc(run['decision'])}"
        lines.append(line)
        lines += [f"gate: {esc(reason)}" for reason in run["decision_reasons"]]
        val = run["metrics"].get("challenger", {}).get("val_loss"), run["metrics"].get("champion", {}).get("val_loss")
        if None not in val:
            champion = esc(m["production"]["version"]) if m["production"] else "the base model"
            lines.append(f"validation loss {_num(val[0], 5)} (new) vs {_num(val[1], 5)} ({champion})")
        counts = run.get("trained_on") or {}
        if counts:
            lines.append("trained on " + ", ".join(f"{plural(counts[k], what)}" for k, what in (
                ("generated", "reviewed cover"), ("covers", "crawled cover"), ("train", "training image"),
                ("val", "held-out image")) if isinstance(counts.get(k), int)))
    prod = m["production"]
    lines.append("In production during the week: the base model (no style version promoted yet)." if prod is None
                 else f"In production during the week: {esc(prod['version'])} (promoted {prod['since'][:10]})")
    lines += [f"rollback: {esc(rb['restored'] or '?')} restored, {esc(rb['retired'])} retired" for rb in m["rollbacks"]]
    return lines + _canary_lines(m.get("canary") or {}, esc)


def _canary_lines(c: dict, esc: Escape) -> list[str]:
    """The users' verdict on the canary: both arms' mean ratings side by side, the interval, the decision."""
    lines = []
    for d in c.get("decisions", []):
        e = d["evidence"]
        if e.get("diff") is not None:
            numbers = (f"canary {e['canary_mean']:.2f} ★ ({plural(e['canary_requests'], 'request')}) vs production "
                       f"{e['production_mean']:.2f} ★ ({plural(e['production_requests'], 'request')}), "
                       f"{e['diff']:+.2f} [{e['low']:+.2f}, {e['high']:+.2f}] "
                       f"{e['rules']['confidence']:.0%} interval")
        else:
            numbers = (f"{plural(e.get('canary_requests', 0), 'canary request')} vs "
                       f"{plural(e.get('production_requests', 0), 'production request')} rated")
        lines.append(f"canary {esc(d['version'])} vs {esc(d['production_version'] or 'the base model')}: "
                     f"{numbers} → {esc(d['decision'])}")
    lines += [f"canary serving: {esc(s['version'])} (against {esc(s['against'] or 'the base model')}, "
              f"since {(s['since'] or '?')[:10]})" for s in c.get("serving", [])]
    return lines


def _data_lines(d: dict, esc: Escape) -> list[str]:
    lines = []
    for source, s in d["crawl"].items():
        lines.append(f"Crawl {esc(source)}: {s['new']} new, {s['updated']} updated, {s['quarantined']} quarantined, "
                     f"{plural(s['errors'], 'error')} (of {s['fetched']} fetched)")
    if not d["crawl"]:
        lines.append("Crawl: no runs this week.")
    lab = d["label"]
    if lab["songs"] or lab["labelled"]:
        lines.append(f"Labelling: {lab['labelled']} of {plural(lab['songs'], 'song')} labelled ({lab['llm']} by the "
                     f"LLM, {lab['offline']} offline, {plural(lab['fallbacks'], 'fallback')}, "
                     f"{plural(lab['cache_hits'], 'cache hit')}); {lab['prompt_tokens']} tokens in, "
                     f"{lab['completion_tokens']} out")
    else:
        lines.append("Labelling: no runs this week.")
    gen = d["generate"]
    if gen["requests"] or gen["images"] or gen["failed"]:
        lines.append(f"Generation: {plural(gen['images'], 'cover')} for {plural(gen['requests'], 'request')}, "
                     f"{gen['failed']} failed")
    per = d["personalize"]
    if per["requests"]:
        lines.append(f"Personalisation: {plural(per['trained'], 'adapter')} trained for "
                     f"{plural(per['requests'], 'request')}, {plural(per['images'], 'cover')}, {per['failed']} failed")
    return lines


GPU_NAMES = {"personalize": "personalisation", "train:style": "style training", "train:dreambooth": "DreamBooth"}


def _health_lines(h: dict, esc: Escape) -> list[str]:
    lines = []
    if h["failures"]:
        lines.append(f"{plural(h['failed_runs'], 'DAG run')} had failed tasks:")
        lines += [f"  {esc(f['dag_id'])}.{esc(f['task_id'])}: {esc(f['error'] or 'error')} in "
                  f"{plural(f['tries'], 'try', 'tries')} ({plural(f['runs'], 'run')})" for f in h["failures"]]
    else:
        lines.append("No failed tasks recorded.")
    if h["failed_stages"]:
        lines.append(f"{plural(h['failed_stages'], 'stage run')} ended failed.")
    lines += [f"{esc(s['dag_id'])}/{esc(s['stage'])}: {plural(s['runs'], 'run')}, "
              f"{esc(', '.join(s['statuses']))}" for s in h["stages"]]
    if h["gpu_seconds_total"]:
        parts = ", ".join(f"{GPU_NAMES.get(k, esc(k))} {_secs(v)}" for k, v in h["gpu_seconds"].items())
        lines.append(f"GPU time: {_secs(h['gpu_seconds_total'])} ({parts}; generation is not counted: its re-runs do "
                     "not keep it)")
    else:
        lines.append("GPU time: none recorded for training or personalisation.")
    return lines


def product_shot_lines(report: dict, esc: Escape = str) -> list[str]:
    """The product-shots line, and the best-rated shots (the grid shows them) as sub-items."""
    p = report.get("product_shots") or {}
    if not p.get("requests"):
        return ["Product shots: none this week."]
    mean = "no ratings" if p["mean_rating"] is None else \
        f"mean rating {p['mean_rating']:.2f} ({plural(p['reviews'], 'review')})"
    return [f"{plural(p['shots'], 'shot')} for {plural(p['requests'], 'product')}, {p['failed']} failed; {mean}"] + [
        f"  {esc(s['title'])}: {s['rating']:.2f} ({plural(s['reviews'], 'review')})" for s in p["top"]]


def sections(report: dict, esc: Escape = str) -> list[tuple[str, str, list[str]]]:
    """(title, list style "bullets" | "numbered", lines) for each detail section, in reading order."""
    if report["empty"]:
        return [("Health", "bullets", _health_lines(report["health"], esc))]
    covers_title = (f"Top covers (one per request, by mean rating then number of reviews; at least "
                    f"{plural(report['top_min_reviews'], 'review')})")
    return [
        ("Activity", "bullets", _activity_lines(report["activity"])),
        ("Ratings", "bullets", _rating_lines(report)),
        (covers_title, "numbered" if report["top_covers"] else "bullets", _cover_lines(report, esc)),
        ("Model (details)", "bullets", _model_lines(report["model"], esc)),
        ("Data", "bullets", _data_lines(report["data"], esc)),
        ("Product shots", "bullets", product_shot_lines(report, esc)),
        ("Health", "bullets", _health_lines(report["health"], esc)),
    ]


IMAGE_AFTER = {"Ratings": CHART_NAME, "Top covers": GRID_NAME, "Product shots": PRODUCT_GRID_NAME}
IMAGE_TEXT = {TREND_NAME: "Rating trend over the last weeks", CHART_NAME: "Rating distribution this week",
              GRID_NAME: "Top covers", PRODUCT_GRID_NAME: "Top-rated product shots"}


def _image_after(section: str) -> str | None:
    return next((name for prefix, name in IMAGE_AFTER.items() if section.startswith(prefix)), None)


def to_markdown(report: dict, images: tuple[str, ...] = ()) -> str:
    head, *model_line = summary(report, md)
    out = [f"# {title(report)}", "", f"**{md(head, MAX_SECTION_CHARS)}**", ""] + [*model_line, ""] * bool(model_line)
    if TREND_NAME in images:
        out += [f"![{IMAGE_TEXT[TREND_NAME]}]({TREND_NAME})", ""]
    for name, style, lines in sections(report, md):
        out += [f"## {name}", ""]
        for n, line in enumerate(lines, 1):
            marker = f"{n}." if style == "numbered" else "-"
            out.append(f"  - {line.strip()}" if line.startswith("  ") else f"{marker} {line}")
        out.append("")
        if (image := _image_after(name)) in images:
            out += [f"![{IMAGE_TEXT[image]}]({image})", ""]
    return "\n".join(out)


def fallback_text(report: dict) -> str:
    """The notification / accessibility text Slack shows where blocks cannot be (mrkdwn)."""
    return mrkdwn(f"{title(report)}: {headline(report)}", MAX_FALLBACK_CHARS)


def fit_blocks(blocks: list[dict]) -> list[dict]:
    """Clip texts to Slack's per-block limits and the message to 50 blocks (the last kept
    block says how many were dropped)."""
    fitted = []
    for block in blocks:
        block = dict(block)
        if block["type"] == "header":
            block["text"] = {**block["text"], "text": _clip(block["text"]["text"], MAX_HEADER_CHARS)}
        elif block["type"] == "section" and "text" in block:
            block["text"] = {**block["text"], "text": _clip(block["text"]["text"], MAX_SECTION_CHARS)}
        fitted.append(block)
    if len(fitted) > MAX_BLOCKS:
        dropped = len(fitted) - (MAX_BLOCKS - 1)
        fitted = fitted[: MAX_BLOCKS - 1] + [
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"…{dropped} more blocks left out"}]}
        ]
    return fitted


def _image_block(name: str) -> dict:
    """An image block naming the PNG by file name; :func:`sleeve.delivery.with_images` points
    it at the uploaded file (or leaves it out where the transport cannot carry images)."""
    return {"type": "image", "image_url": name, "alt_text": IMAGE_TEXT[name],
            "title": {"type": "plain_text", "text": IMAGE_TEXT[name]}}


def to_blocks(report: dict, images: tuple[str, ...] = ()) -> list[dict]:
    head, *model_line = summary(report, mrkdwn)
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": clean(title(report), MAX_HEADER_CHARS)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join([f"*{mrkdwn(head, MAX_SECTION_CHARS)}*", *model_line])}},
    ]
    if TREND_NAME in images:
        blocks.append(_image_block(TREND_NAME))
    for name, style, lines in sections(report, mrkdwn):
        body = "\n".join(f"{'    ◦' if line.startswith('  ') else f'{n}.' if style == 'numbered' else '•'} "
                         f"{line.strip()}" for n, line in enumerate(lines, 1))
        blocks += [{"type": "divider"}, {"type": "section", "text": {"type": "mrkdwn", "text": f"*{name}*\n{body}"}}]
        if (image := _image_after(name)) in images:
            blocks.append(_image_block(image))
    return fit_blocks(blocks)


# -- images --------------------------------------------------------------------------------

def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def rating_chart_png(report: dict) -> bytes:
    """Bar chart of the week's 1–5 ratings (matplotlib, Agg canvas: no display needed)."""
    from matplotlib.ticker import MaxNLocator

    r = report["ratings"]
    stars = [int(k) for k in r["distribution"]]
    counts = list(r["distribution"].values())
    fig = _figure(5, 3)
    ax = fig.add_subplot()
    bars = ax.bar(stars, counts, color=["#d9534f", "#f0ad4e", "#cccccc", "#5bc0de", "#5cb85c"])
    ax.bar_label(bars, labels=[str(c) for c in counts])
    ax.set_xticks(stars, [f"{s}★" for s in stars])
    ax.set_ylabel("reviews")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max([*counts, 1]) * 1.2)
    mean = "no ratings" if r["mean"] is None else f"mean {r['mean']:.2f}"
    ax.set_title(f"Ratings {_week(report)} ({mean})", fontsize=10)
    return _png(fig)


def trend_chart_png(report: dict) -> bytes:
    """Mean rating (line) and share of 4–5★ (bars) per week over the last weeks; a triangle marks
    the weeks whose retraining put a new model into production."""
    weeks = report["trend"]
    x = list(range(len(weeks)))
    labels = [w["week_start"][5:10] for w in weeks]
    fig = _figure(6, 2.8)
    share_ax = fig.add_subplot()
    share_ax.bar(x, [100 * (w["share_4plus"] or 0) for w in weeks], color="#d6eaf8", width=0.6, label="4–5★ share")
    share_ax.set_ylim(0, 100)
    share_ax.set_ylabel("4–5★ share (%)", color="#5b7fa3", fontsize=8)
    share_ax.tick_params(axis="y", labelcolor="#5b7fa3", labelsize=8)
    mean_ax = share_ax.twinx()
    means = [w["mean"] if w["mean"] is not None else float("nan") for w in weeks]
    mean_ax.plot(x, means, color="#1f4e79", marker="o", linewidth=2, label="mean rating")
    for i, w in enumerate(weeks):
        if w["mean"] is not None:
            mean_ax.annotate(f"{w['mean']:.2f}", (i, w["mean"]), textcoords="offset points", xytext=(0, 7),
                             ha="center", fontsize=7, color="#1f4e79")
        if w.get("promoted"):
            mean_ax.plot([i], [1.15], marker="^", color="#2e7d32", markersize=8)
    mean_ax.set_ylim(1, 5.4)
    mean_ax.set_ylabel("mean rating (1–5)", color="#1f4e79", fontsize=8)
    mean_ax.tick_params(axis="y", labelsize=8)
    share_ax.set_xticks(x, labels, fontsize=8)
    share_ax.set_xlabel("week starting (▲ = new model promoted from that week)", fontsize=8)
    share_ax.set_title(f"Ratings per week, the last {plural(len(weeks), 'week')} (to {report['week_end'][:10]})",
                       fontsize=10)
    return _png(fig)


def _caption_font(size: int = 11):
    """NanumGothic (SIL OFL, shipped in the koreanize-matplotlib wheel) so Korean song titles
    render as Hangul instead of boxes; Pillow's default font if that package is missing.
    The package is located, not imported: importing it would restyle matplotlib globally."""
    from importlib.util import find_spec
    from pathlib import Path

    from PIL import ImageFont

    spec = find_spec("koreanize_matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "fonts" / "NanumGothic.ttf"
        if path.exists():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)


def _fit(draw, text: str, font, width: int) -> str:
    """``text`` clipped with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def covers_grid_png(covers: list[dict], load: Callable[[str], bytes], tile: int = 128, cols: int = 4) -> bytes | None:
    """A grid of the covers' thumbnails, each captioned with its song title, artist and rating.
    ``load`` fetches image bytes by URI; an image that cannot be loaded becomes a grey tile."""
    if not covers:
        return None
    from PIL import Image, ImageDraw

    caption_h, gap = 50, 4
    cols = min(cols, len(covers))
    rows = -(-len(covers) // cols)
    grid = Image.new("RGB", (cols * (tile + gap) - gap, rows * (tile + caption_h)), "white")
    draw = ImageDraw.Draw(grid)
    font, small = _caption_font(12), _caption_font(11)
    for i, cover in enumerate(covers):
        x, y = (i % cols) * (tile + gap), (i // cols) * (tile + caption_h)
        try:
            with Image.open(io.BytesIO(load(cover.get("thumb_uri") or cover["uri"]))) as img:
                thumb = img.convert("RGB").resize((tile, tile))
        except Exception as exc:  # a missing thumbnail must not sink the report
            log.warning("cover %s could not be loaded (%s); drawing a placeholder", cover["image_id"],
                        type(exc).__name__)
            thumb = Image.new("RGB", (tile, tile), "#bbbbbb")
        grid.paste(thumb, (x, y))
        draw.text((x + 2, y + tile + 2), _fit(draw, clean(cover["title"]), font, tile - 4), fill="black", font=font)
        draw.text((x + 2, y + tile + 17), _fit(draw, clean(cover.get("artist") or "unknown artist"), small, tile - 4),
                  fill="#333333", font=small)
        draw.text((x + 2, y + tile + 32), f"{cover['rating']:.2f}★ · {plural(cover['reviews'], 'review')}",
                  fill="#666666", font=small)
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    return buf.getvalue()


def render(report: dict, load: Callable[[str], bytes]) -> dict:
    """Everything a notifier sends: text, blocks, markdown and the PNGs by file name."""
    images = {}
    if any(w["mean"] is not None for w in report.get("trend", [])):
        images[TREND_NAME] = trend_chart_png(report)
    if report["ratings"]["count"]:
        images[CHART_NAME] = rating_chart_png(report)
    if grid := covers_grid_png(report["top_covers"], load):
        images[GRID_NAME] = grid
    product_grid = covers_grid_png((report.get("product_shots") or {}).get("top", []), load)
    if product_grid:
        images[PRODUCT_GRID_NAME] = product_grid
    return {
        "week_start": report["week_start"],
        "week_end": report["week_end"],
        "title": title(report),
        "text": fallback_text(report),
        "blocks": to_blocks(report, tuple(images)),
        "markdown": to_markdown(report, tuple(images)),
        "images": images,
    }
