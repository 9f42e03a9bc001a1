"""Turn a weekly report (``sleeve.report.build_report``) into what people read: a rating chart
PNG, a grid PNG of the top covers, Markdown, and a Slack Block Kit message within Slack's
limits. The text is built once (``sections``) and rendered twice, so Markdown and Slack agree.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

# Slack limits (https://docs.slack.dev/reference/block-kit/blocks): a message holds at most
# 50 blocks, a section's text at most 3000 characters, a header's at most 150.
MAX_BLOCKS = 50
MAX_SECTION_CHARS = 3000
MAX_HEADER_CHARS = 150
MAX_FALLBACK_CHARS = 3000
CHART_NAME = "ratings.png"
GRID_NAME = "top_covers.png"


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


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _week(report: dict) -> str:
    return f"{report['week_start'][:10]} → {report['week_end'][:10]}"


def headline(report: dict) -> str:
    """One line that says whether the week went well."""
    if report["empty"]:
        return (f"No activity in the week {_week(report)}: no requests, images, reviews or pipeline runs "
                "were recorded.")
    a, r = report["activity"], report["ratings"]
    mean = "no ratings" if r["mean"] is None else f"mean rating {r['mean']:.2f}"
    if r["change"] is not None:
        arrow = "▲" if r["change"] > 0 else "▼" if r["change"] < 0 else "="
        mean += f" ({arrow}{abs(r['change']):.2f} vs {r['previous_mean']:.2f} the week before)"
    elif r["mean"] is not None:
        mean += " (no ratings the week before)"
    return (f"{a['requests']} requests · {a['images']} images · {a['reviews']} reviews · "
            f"{a['users']} users · {mean}")


def _metrics(metrics: dict, limit: int = 6) -> str:
    shown = [f"{k}={_num(v)}" for k, v in sorted(metrics.items()) if isinstance(v, (int, float))][:limit]
    return ", ".join(shown)


def _model_lines(m: dict) -> list[str]:
    lines = []
    for run in m["runs"]:
        line = f"{run['kind'] or 'style'} retraining: {run['status']}"
        if run["reason"]:
            line += f" ({run['reason']})"
        if run["decision"]:
            reasons = "; ".join(str(x) for x in run["decision_reasons"])
            line += f" → gate: {run['decision']}" + (f" ({reasons})" if reasons else "")
        if run["model_version"]:
            line += f" → {run['model_version']}"
        if run["metrics"]:
            line += f"; metrics {_metrics(run['metrics'])}"
        lines.append(line)
    if not m["runs"]:
        lines.append("No retraining run recorded for this week.")
    prod = m["production"]
    lines.append("Production model: none registered yet." if prod is None else
                 f"Production model: {prod['version']} (since {(prod['since'] or '?')[:10]})")
    lines += [f"Rollback: {rb['restored']} restored, {', '.join(rb['retired'])} retired" for rb in m["rollbacks"]]
    return lines + _canary_lines(m.get("canary") or {})


def _canary_lines(c: dict) -> list[str]:
    lines = []
    for d in c.get("decisions", []):
        e = d["evidence"]
        if e.get("diff") is not None:
            numbers = (f"canary {e['canary_mean']:.2f} ★ ({e['canary_requests']} requests) vs production "
                       f"{e['production_mean']:.2f} ★ ({e['production_requests']} requests), "
                       f"{e['diff']:+.2f} [{e['low']:+.2f}, {e['high']:+.2f}] "
                       f"{e['rules']['confidence']:.0%} interval")
        else:
            numbers = f"{e.get('canary_requests', 0)} canary vs {e.get('production_requests', 0)} production requests"
        lines.append(f"Canary {d['version']} vs {d['production_version']}: {numbers} → {d['decision']}")
    lines += [f"Canary now serving: {s['version']} (against {s['against'] or 'base'}, since {(s['since'] or '?')[:10]})"
              for s in c.get("serving", [])]
    return lines


def _data_lines(d: dict) -> list[str]:
    lines = []
    for source, s in d["crawl"].items():
        lines.append(f"Crawl {source}: {s['new']} new, {s['updated']} updated, {s['quarantined']} quarantined, "
                     f"{s['errors']} errors (of {s['fetched']} fetched)")
    if not d["crawl"]:
        lines.append("Crawl: no runs this week.")
    lab = d["label"]
    if lab["songs"] or lab["labelled"]:
        lines.append(f"Labelling: {lab['labelled']} labelled of {lab['songs']} ({lab['llm']} LLM, {lab['offline']} "
                     f"offline, {lab['fallbacks']} fallbacks, {lab['cache_hits']} cache hits); tokens "
                     f"{lab['prompt_tokens']} in / {lab['completion_tokens']} out")
    else:
        lines.append("Labelling: no runs this week.")
    gen = d["generate"]
    if gen["requests"] or gen["images"] or gen["failed"]:
        lines.append(f"Generation: {gen['images']} images for {gen['requests']} requests, {gen['failed']} failed, "
                     f"{gen['skipped_existing']} already existed")
    per = d["personalize"]
    if per["requests"]:
        lines.append(f"Personalisation: {per['trained']} adapters trained for {per['requests']} requests, "
                     f"{per['images']} images, {per['failed']} failed")
    return lines


def _health_lines(h: dict) -> list[str]:
    lines = []
    if h["failures"]:
        lines.append(f"{h['failed_runs']} DAG runs had failed tasks:")
        lines += [f"  {f['dag_id']}.{f['task_id']}: {f['error'] or 'error'} ×{f['tries']} "
                  f"({f['runs']} runs)" for f in h["failures"]]
    else:
        lines.append("No failed tasks recorded.")
    if h["failed_stages"]:
        lines.append(f"{h['failed_stages']} stage runs ended failed.")
    lines += [f"{s['dag_id']}/{s['stage']}: {s['runs']} runs, {_secs(s['total_s'])} total, "
              f"longest {_secs(s['max_s'])}" for s in h["stages"]]
    if h["gpu_seconds_total"]:
        parts = ", ".join(f"{k} {_secs(v)}" for k, v in h["gpu_seconds"].items())
        lines.append(f"GPU time: {_secs(h['gpu_seconds_total'])} ({parts})")
    else:
        lines.append("GPU time: none recorded.")
    return lines


def sections(report: dict) -> list[tuple[str, list[str]]]:
    """(title, lines) for each part of the report, in reading order."""
    if report["empty"]:
        return [("Health", _health_lines(report["health"]))]
    r = report["ratings"]
    rating_lines = [" · ".join(f"{k}★ {v}" for k, v in r["distribution"].items())]
    if r["invalid"]:
        rating_lines.append(f"{r['invalid']} ratings outside 1–5 were ignored.")
    covers = [f"{i}. {c['title']}" + (f" — {c['artist']}" if c.get("artist") else "") +
              f": {c['rating']:.2f} ({c['reviews']} reviews)" for i, c in enumerate(report["top_covers"], 1)]
    return [
        ("Ratings", rating_lines),
        ("Top-rated covers", covers or ["No rated covers this week."]),
        ("Model", _model_lines(report["model"])),
        ("Data", _data_lines(report["data"])),
        ("Health", _health_lines(report["health"])),
    ]


def title(report: dict) -> str:
    return f"Sleeve weekly report {_week(report)}"


def to_markdown(report: dict, images: tuple[str, ...] = ()) -> str:
    out = [f"# {title(report)}", "", headline(report), ""]
    if CHART_NAME in images:
        out += ["![Rating distribution](ratings.png)", ""]
    for name, lines in sections(report):
        out += [f"## {name}", ""] + [f"{'  ' if line.startswith('  ') else ''}- {line.strip()}" for line in lines] + [""]
        if name == "Top-rated covers" and GRID_NAME in images:
            out += ["![Top-rated covers](top_covers.png)", ""]
    return "\n".join(out)


def fallback_text(report: dict) -> str:
    """The notification / accessibility text Slack shows where blocks cannot be."""
    return _clip(f"{title(report)}: {headline(report)}", MAX_FALLBACK_CHARS)


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


def _escape(text: str) -> str:
    """Slack mrkdwn treats &, < and > as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_blocks(report: dict) -> list[dict]:
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": title(report)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _escape(headline(report))}},
    ]
    for name, lines in sections(report):
        body = "\n".join(f"• {_escape(line.strip())}" for line in lines)
        blocks += [{"type": "divider"}, {"type": "section", "text": {"type": "mrkdwn", "text": f"*{name}*\n{body}"}}]
    return fit_blocks(blocks)


def rating_chart_png(report: dict) -> bytes:
    """Bar chart of the week's 1–5 ratings (matplotlib, Agg canvas: no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    r = report["ratings"]
    stars = [int(k) for k in r["distribution"]]
    counts = list(r["distribution"].values())
    fig = Figure(figsize=(5, 3), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bars = ax.bar(stars, counts, color=["#d9534f", "#f0ad4e", "#cccccc", "#5bc0de", "#5cb85c"])
    ax.bar_label(bars, labels=[str(c) for c in counts])
    ax.set_xticks(stars, [f"{s}★" for s in stars])
    ax.set_ylabel("reviews")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max([*counts, 1]) * 1.2)
    mean = "no ratings" if r["mean"] is None else f"mean {r['mean']:.2f}"
    ax.set_title(f"Ratings {_week(report)} ({mean})", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


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


def covers_grid_png(covers: list[dict], load: Callable[[str], bytes], tile: int = 128, cols: int = 4) -> bytes | None:
    """A grid of the covers' thumbnails, each captioned with its song and rating. ``load``
    fetches image bytes by URI; an image that cannot be loaded becomes a grey tile."""
    if not covers:
        return None
    from PIL import Image, ImageDraw

    caption_h = 34
    cols = min(cols, len(covers))
    rows = -(-len(covers) // cols)
    grid = Image.new("RGB", (cols * tile, rows * (tile + caption_h)), "white")
    draw = ImageDraw.Draw(grid)
    font = _caption_font()
    for i, cover in enumerate(covers):
        x, y = (i % cols) * tile, (i // cols) * (tile + caption_h)
        try:
            with Image.open(io.BytesIO(load(cover.get("thumb_uri") or cover["uri"]))) as img:
                thumb = img.convert("RGB").resize((tile, tile))
        except Exception as exc:  # a missing thumbnail must not sink the report
            log.warning("cover %s could not be loaded (%s); drawing a placeholder", cover["image_id"],
                        type(exc).__name__)
            thumb = Image.new("RGB", (tile, tile), "#bbbbbb")
        grid.paste(thumb, (x, y))
        draw.text((x + 3, y + tile + 2), _clip(cover["title"], 20), fill="black", font=font)
        draw.text((x + 3, y + tile + 17), f"{cover['rating']:.2f}/5 ({cover['reviews']})", fill="#444444", font=font)
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    return buf.getvalue()


def render(report: dict, load: Callable[[str], bytes]) -> dict:
    """Everything a notifier sends: text, blocks, markdown and the PNGs by file name."""
    images = {CHART_NAME: rating_chart_png(report)} if report["ratings"]["count"] else {}
    grid = covers_grid_png(report["top_covers"], load)
    if grid:
        images[GRID_NAME] = grid
    return {
        "week_start": report["week_start"],
        "week_end": report["week_end"],
        "title": title(report),
        "text": fallback_text(report),
        "blocks": to_blocks(report),
        "markdown": to_markdown(report, tuple(images)),
        "images": images,
    }
