"""The report's charts, drawn from report_data's dict into PNG bytes (inlined as base64, so no file or URL).

Distributions are drawn from each site's aggregates only (no per-case value reaches the coordinator): a box
from q1 to q3 and a line at the median (when the site sent them), a diamond at the mean and a bar for the 95 %
CI of the mean.
"""

import io

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt

from models.shared.wire import MEAN_DICE, MEAN_DICE_CI_HIGH, MEAN_DICE_CI_LOW, STATS, Status, stat_key

PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
"""Okabe–Ito colours: distinguishable with the common colour-vision deficiencies and in greyscale print."""


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def dice_over_rounds(data: dict) -> bytes:
    """Mean Dice per site per round with its 95 % CI band; the pooled mean dashed; suppressed rounds are gaps."""
    figure, axes = plt.subplots(figsize=(7.5, 3.6))
    for index, (site, points) in enumerate(data["rounds"].items()):
        shown = [p for p in points if p["status"] == Status.REPORTED]
        colour = PALETTE[index % len(PALETTE)]
        label = site if shown else f"{site} (suppressed)"
        rounds = [p["round"] for p in shown]
        axes.plot(rounds, [p[MEAN_DICE] for p in shown], marker="o", color=colour, label=label)
        if shown and shown[0][MEAN_DICE_CI_LOW] is not None:
            axes.fill_between(
                rounds,
                [p[MEAN_DICE_CI_LOW] for p in shown],
                [p[MEAN_DICE_CI_HIGH] for p in shown],
                color=colour,
                alpha=0.15,
                linewidth=0,
            )
    pooled = [p for p in data["pooled"] if MEAN_DICE in p]
    axes.plot(
        [p["round"] for p in pooled],
        [p[MEAN_DICE] for p in pooled],
        "k--",
        label="pooled (reporting sites)",
    )
    axes.set(xlabel="round", ylabel="mean Dice over regions", ylim=(0, 1))
    axes.set_xticks(data["run"]["rounds_evaluated"])
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(figure)


def baseline_curves(data: dict) -> bytes:
    """One panel per site: the global model's and the local-only model's mean Dice over rounds (CI of the latter)."""
    sites = [s for s in data["training"]["baseline"]["sites"] if s["rounds"]]
    figure, panels = plt.subplots(
        1, len(sites), figsize=(2.7 * len(sites) + 0.8, 2.8), sharey=True, squeeze=False
    )
    for panel, site in zip(panels[0], sites, strict=True):
        rounds = [p["round"] for p in site["rounds"]]
        panel.plot(
            rounds, [p["global"] for p in site["rounds"]], marker="o", color=PALETTE[0], label="global"
        )
        panel.plot(
            rounds, [p["local"] for p in site["rounds"]], marker="s", color=PALETTE[1], label="local-only"
        )
        panel.fill_between(
            rounds,
            [p["local_ci"][0] for p in site["rounds"]],
            [p["local_ci"][1] for p in site["rounds"]],
            color=PALETTE[1],
            alpha=0.15,
            linewidth=0,
        )
        panel.set_title(site["name"], fontsize=9)
        panel.set_xticks(rounds)
        panel.set(xlabel="round", ylim=(0, 1))
        panel.grid(alpha=0.3)
    panels[0][0].set_ylabel("mean Dice over regions")
    panels[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return _png(figure)


def distributions(data: dict, metric: dict) -> bytes:
    """One panel per region: each site's quartile box, median, mean and CI of the mean at its last round."""
    regions = data["regions"]
    sites = data["sites"]
    figure, panels = plt.subplots(
        1, len(regions), figsize=(2.6 * len(regions) + 1.0, 2.9), sharey=True, squeeze=False
    )
    for panel, region in zip(panels[0], regions, strict=True):
        for index, site in enumerate(sites):
            colour = PALETTE[index % len(PALETTE)]
            if site["status"] != Status.REPORTED:
                panel.text(
                    index,
                    0.5,
                    site["status"],
                    rotation=90,
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="0.4",
                    transform=panel.get_xaxis_transform(),
                )
                continue
            stats = {s: site["metrics"].get(stat_key(metric["name"], region["name"], s)) for s in STATS}
            if stats["median"] is not None:  # position statistics: only from a site's min-position-cases on
                panel.add_patch(
                    plt.Rectangle(
                        (index - 0.3, stats["q1"]),
                        0.6,
                        stats["q3"] - stats["q1"],
                        facecolor=colour,
                        alpha=0.25,
                        edgecolor=colour,
                    )
                )
                panel.plot([index - 0.3, index + 0.3], [stats["median"]] * 2, color=colour, linewidth=2)
            has_ci = stats["ci-low"] is not None and stats["ci-high"] is not None  # a CI the site withheld
            panel.errorbar(
                index,
                stats["mean"],
                yerr=[[stats["mean"] - stats["ci-low"]], [stats["ci-high"] - stats["mean"]]]
                if has_ci
                else None,
                fmt="D",
                color="black",
                markersize=4,
                capsize=3,
                linewidth=1,
            )
        panel.set_title(f"{region['name'].upper()} ({region['title']})", fontsize=9)
        panel.set_xticks(range(len(sites)), [s["name"] for s in sites], rotation=30, ha="right", fontsize=8)
        panel.set_xlim(-0.7, len(sites) - 0.3)
        panel.grid(axis="y", alpha=0.3)
    unit = f" ({metric['unit']})" if metric["unit"] else ""
    panels[0][0].set_ylabel(f"{metric['title']}{unit}")
    panels[0][0].autoscale_view()
    return _png(figure)
