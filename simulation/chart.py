"""The simulation's chart: held-out mean rating per week and strategy, the sabotaged week shaded."""

from __future__ import annotations

from pathlib import Path


def draw_chart(output: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=(3, 2))
    weeks = list(range(output["weeks"] + 1))
    for name, series in output["strategies"].items():
        line, = top.plot(weeks, series["mean_rating"], marker="o", label=name)
        promoted = [w + 1 for w, p in enumerate(series["promotions"]) if p]
        top.scatter(promoted, [series["mean_rating"][w] for w in promoted], s=90, facecolors="none",
                    edgecolors=line.get_color())
        bottom.plot(weeks, [100 * v for v in series["share_4plus"]], marker="o", color=line.get_color())
    k = output.get("sabotaged_week")
    for axis in (top, bottom):
        if k:
            axis.axvspan(k - 0.5, k + 0.5, color="red", alpha=0.08)
        axis.grid(alpha=0.3)
    if k:
        top.text(k, top.get_ylim()[1], " ratings inverted", color="red", va="top", ha="center", fontsize=8)
    top.set_ylim(1, 5)
    bottom.set_ylim(0, 100)
    top.set_ylabel("held-out mean rating (1-5)")
    top.set_title(f"Simulated users, taste '{output['taste']}' (circles: a new model went to production)", fontsize=10)
    top.legend(loc="best", fontsize=8)
    bottom.set_ylabel("ratings >= 4 stars (%)")
    bottom.set_xlabel("week (0 = the base model)")
    bottom.set_xticks(weeks)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
