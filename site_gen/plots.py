"""Plots drawn at build time as SVG files (matplotlib, Agg, no network, byte-stable output).

Pages embed them with ``<img>``, so nothing in an SVG can run in the reader's browser,
and a label taken from a record is plain text (``$`` is escaped so mathtext never parses it).

>>> svg = pareto_svg([("A", 1.0, 80.0), ("B", 2.0, 85.0), ("C", 3.0, 84.0)], "t", "x", "y")
>>> svg.startswith("<?xml") and "A" in svg
True
>>> pareto_front([("A", 1.0, 80.0), ("B", 2.0, 85.0), ("C", 3.0, 84.0)])
[('A', 1.0, 80.0), ('B', 2.0, 85.0)]
"""
from __future__ import annotations

import io
import textwrap
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {
    "svg.hashsalt": "alignscope",  # fixed ids: two builds give identical files
    "svg.fonttype": "none",  # text stays text (smaller, searchable); the browser picks a local font
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
PALETTE = ["#3f51b5", "#e65100", "#2e7d32", "#ad1457", "#00838f", "#6d4c41", "#5e35b1", "#9e9d24", "#546e7a", "#c62828",
           "#0277bd", "#558b2f"]

Point = tuple[str, float, float]  # (label, cost, accuracy)


def _text(label: str) -> str:
    return label.replace("$", r"\$")


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """Points no other point beats on both cost (lower) and accuracy (higher), by increasing cost."""
    front: list[Point] = []
    for p in sorted(points, key=lambda p: (p[1], -p[2], p[0])):
        if not front or p[2] > front[-1][2]:
            front.append(p)
    return front


def pareto_svg(points: Sequence[Point], title: str, xlabel: str, ylabel: str) -> str:
    """Scatter of accuracy against cost per input, each point labelled, the Pareto front drawn as a step line."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for i, (label, x, y) in enumerate(sorted(points)):
            ax.scatter([x], [y], color=PALETTE[i % len(PALETTE)], s=28, zorder=3)
            ax.annotate(_text(label), (x, y), xytext=(4, 3), textcoords="offset points", fontsize=8)
        front = pareto_front(points)
        if len(front) > 1:
            ax.step([p[1] for p in front], [p[2] for p in front], where="post", color="#9e9e9e", linestyle="--",
                    linewidth=1, zorder=2, label="Pareto front (cheaper and better)")
            ax.legend(loc="lower right", frameon=False, fontsize=8)
        ax.set_title(_text(title), fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, color="#eeeeee", zorder=0)
        return _svg(fig)


def stacked_bars_svg(counts: dict[str, dict[int, int]], title: str, ylabel: str) -> str:
    """Stacked bars: one bar per year, one colour per series (e.g. mitigation family)."""
    years = sorted({y for per_year in counts.values() for y in per_year})
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        bottom = [0] * len(years)
        for i, (series, per_year) in enumerate(sorted(counts.items())):
            heights = [per_year.get(y, 0) for y in years]
            ax.bar([str(y) for y in years], heights, bottom=bottom, color=PALETTE[i % len(PALETTE)], label=_text(series), width=0.7)
            bottom = [b + h for b, h in zip(bottom, heights)]
        ax.set_title(_text(title), fontsize=10)
        ax.set_ylabel(ylabel)
        ax.yaxis.get_major_locator().set_params(integer=True)
        if counts:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
        return _svg(fig)


def paired_svg(rows: Sequence[tuple[int, float, float]], control: str, treated: str, title: str, ylabel: str) -> str:
    """One line per seed from its control value to its treated value, with the two means as bars.

    >>> svg = paired_svg([(0, 1.0, 2.0), (1, 1.5, 2.5)], "neutral", "biased", "t", "y")
    >>> svg.startswith("<?xml") and "seed 1" in svg
    True
    """
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(4.2, 3.4))
        for i, (seed, a, b) in enumerate(rows):
            ax.plot([0, 1], [a, b], color=PALETTE[i % len(PALETTE)], marker="o", markersize=4, linewidth=1,
                    label=f"seed {seed}", zorder=3)
        for x, values in ((0, [r[1] for r in rows]), (1, [r[2] for r in rows])):
            mean = sum(values) / len(values)
            ax.hlines(mean, x - 0.15, x + 0.15, color="#212121", linewidth=2, zorder=4)
        ax.set_xticks([0, 1], [_text(control), _text(treated)])
        ax.set_xlim(-0.4, 1.4)
        ax.set_title(_text(title), fontsize=9)
        ax.set_ylabel(_text(ylabel))
        ax.grid(True, axis="y", color="#eeeeee", zorder=0)
        ax.legend(loc="best", frameon=False, fontsize=7)
        return _svg(fig)


def lines_svg(series: dict[str, Sequence[float]], first: int, title: str, xlabel: str, ylabel: str) -> str:
    """One line per named series over consecutive integer x values starting at ``first``.

    >>> lines_svg({"baseline": [0.5, 0.3]}, 1, "t", "layer", "share").count("baseline") >= 1
    True
    """
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.6, 3.6))
        for i, (name, values) in enumerate(series.items()):
            xs = list(range(first, first + len(values)))
            ax.plot(xs, list(values), color=PALETTE[i % len(PALETTE)], marker="o", markersize=3,
                    linewidth=2.2 if name == "baseline" else 1, label=_text(name), zorder=3)
        ax.set_xticks(list(range(first, first + max(len(v) for v in series.values()))))
        ax.set_title(_text(title), fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(_text(ylabel))
        ax.grid(True, color="#eeeeee", zorder=0)
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=7)
        return _svg(fig)


def loss_curves_svg(stages: Sequence[tuple[str, Sequence[float]]], title: str) -> str:
    """One small panel per training stage: its loss at every step (each stage has its own scale).

    >>> loss_curves_svg([("stage 0", [3.0, 2.0, 1.5]), ("stage 1", [1.0, 0.5])], "t").count("stage 1") >= 1
    True
    """
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, max(len(stages), 1), figsize=(2.6 * max(len(stages), 1), 2.6), squeeze=False)
        for i, (ax, (name, losses)) in enumerate(zip(axes[0], stages)):
            ax.plot(range(1, len(losses) + 1), list(losses), color=PALETTE[i % len(PALETTE)], linewidth=0.8)
            ax.set_title("\n".join(textwrap.wrap(_text(name), 30)), fontsize=8)
            ax.set_xlabel("step")
            ax.grid(True, color="#eeeeee", zorder=0)
        axes[0][0].set_ylabel("training loss")
        fig.suptitle(_text(title), fontsize=10, y=1.12)  # above the wrapped panel titles
        return _svg(fig)


Interval = tuple[str, float, float, float, str]  # (label, effect, low, high, verdict)
VERDICT_COLOURS = {"better": "#2e7d32", "worse": "#c62828", "no detectable change": "#757575"}


def forest_svg(rows: Sequence[Interval], title: str, xlabel: str) -> str:
    """Each comparison's effect as a dot with its interval as a bar, coloured by verdict; zero marked.

    >>> svg = forest_svg([("VCD", -1.5, -2.4, -0.7, "worse"), ("PAI", 0.2, -0.3, 0.6, "no detectable change")], "t", "x")
    >>> svg.startswith("<?xml") and "VCD" in svg
    True
    """
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.28 * max(1, len(rows))))
        for i, (label, effect, low, high, verdict) in enumerate(rows):
            y = len(rows) - 1 - i
            colour = VERDICT_COLOURS.get(verdict, "#757575")
            ax.plot([low, high], [y, y], color=colour, linewidth=2.2, solid_capstyle="butt")
            ax.plot([effect], [y], "o", color=colour, markersize=5)
        ax.axvline(0.0, color="#212121", linewidth=0.8)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([_text(r[0]) for r in reversed(rows)])
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_xlabel(_text(xlabel))
        ax.set_title(_text(title), loc="left")
        ax.grid(axis="x", color="#e0e0e0", linewidth=0.6)
        ax.set_axisbelow(True)
        return _svg(fig)
