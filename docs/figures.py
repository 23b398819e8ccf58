"""Draw the two figures of the README and the home page: the cycle with its noise injection, and the headline
results. `python docs/figures.py` rewrites docs/img/cycle.png and docs/img/headline.png (matplotlib only).

The headline numbers are copied from the studies (docs/study.md, docs/semi-supervised.md: the tables of paired
differences, 3 and 5 seeds) and from the paper's Table 2; when a study is measured again, update RESULTS.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parent / "img"

# (label, mean, (low, high) of the 95 % interval or None) of "2-bit quantization minus no noise", mIoU points.
RESULTS = [
    ("paper: Cityscapes, 148,750 it., 512×256 (1 run)", 5.7, None),
    ("watermark study: toy city, 2,400 it., 64×32 (3 seeds)", -3.8, (-15.9, 8.2)),
    ("semi-supervised study, 1/8 labelled, anchor's cycle (5 seeds)", 1.2, (-0.5, 2.9)),
    ("semi-supervised study, 1/8 labelled, paper's cycle (5 seeds)", 0.5, (-1.1, 2.0)),
    ("semi-supervised study, 1/4 labelled, anchor's cycle (5 seeds)", 0.3, (-1.8, 2.4)),
    ("semi-supervised study, 1/4 labelled, paper's cycle (5 seeds)", -0.5, (-2.7, 1.7)),
]


def _box(ax, xy, text, colour, w=1.5, h=0.62):
    x, y = xy
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.04", fc=colour, ec="#333",
                                lw=1.2))
    ax.text(x, y, text, ha="center", va="center", fontsize=10.5)


def _arrow(ax, a, b, text="", colour="#333", rad=0.0, dy=0.16):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=14, lw=1.4, color=colour,
                                 connectionstyle=f"arc3,rad={rad}", shrinkA=2, shrinkB=2))
    if text:
        ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + dy, text, ha="center", va="bottom", fontsize=8.5,
                color="#444")


def cycle_figure(path: Path) -> None:
    """Forward cycle x -> G -> logits -> noise -> F -> x_rec on top; backward cycle y -> F -> fake x -> G, D_X
    below."""
    fig, ax = plt.subplots(figsize=(10.5, 3.9))
    ax.set_xlim(0, 13.6)
    ax.set_ylim(0.2, 4.4)
    ax.axis("off")
    net, data, noise = "#dbe8ff", "#f2f2f2", "#ffd9b3"
    top, bottom = 3.35, 1.25
    ax.text(0.1, 4.2, "forward cycle", fontsize=10, weight="bold", color="#1f3d7a")
    ax.text(0.1, 2.1, "backward cycle", fontsize=10, weight="bold", color="#1f3d7a")
    _box(ax, (0.9, top), "image x", data, w=1.3)
    _box(ax, (3.0, top), "G (ERFNet)", net)
    _box(ax, (5.3, top), "logits\nS×H×W", data, w=1.3)
    _box(ax, (7.6, top), "noise injection\nquantize / Gaussian", noise, w=2.1)
    _box(ax, (10.0, top), "F (ERFNet)", net)
    _box(ax, (12.3, top), "x_rec", data, w=1.3)
    for a, b, t in [((1.55, top), (2.25, top), ""), ((3.75, top), (4.65, top), ""),
                    ((5.95, top), (6.55, top), ""), ((8.65, top), (9.25, top), ""),
                    ((10.75, top), (11.65, top), "")]:
        _arrow(ax, a, b, t)
    _arrow(ax, (12.3, top - 0.33), (0.9, top - 0.33), colour="#a33", rad=-0.12)
    ax.text(11.4, 2.3, "J_rec_X = mean |x_rec − x|  (eq. 3)", ha="center", fontsize=8.5, color="#a33")
    ax.text(5.3, top - 0.55, "J_seg = CE(logits, y)  (eq. 1)", ha="center", va="top", fontsize=8.5, color="#a33")
    _box(ax, (0.9, bottom), "labels ȳ\n(one-hot)", data, w=1.3)
    _box(ax, (3.0, bottom), "F (ERFNet)", net)
    _box(ax, (5.3, bottom), "fake image", data, w=1.3)
    _box(ax, (7.6, bottom), "G (ERFNet)", net)
    _box(ax, (10.0, bottom), "ŷ_rec", data, w=1.3)
    _box(ax, (5.3, 0.45), "D_X (PatchGAN): real or fake?", "#e3f5e1", w=3.2, h=0.45)
    for a, b in [((1.55, bottom), (2.25, bottom)), ((3.75, bottom), (4.65, bottom)),
                 ((5.95, bottom), (6.85, bottom)), ((8.35, bottom), (9.35, bottom))]:
        _arrow(ax, a, b)
    _arrow(ax, (5.3, bottom - 0.31), (5.3, 0.68))
    ax.text(7.05, 0.45, "J_adv (eq. 2), J_disc (eq. 8)", va="center", fontsize=8.5, color="#a33")
    ax.text(11.0, bottom - 0.05, "J_rec_Y = CE(ŷ_rec, ȳ)\n(eq. 4)", fontsize=8.5, color="#a33", va="center")
    ax.text(7.6, top + 0.45, "destroys low-amplitude detail (\"watermarks\")\nthat F could otherwise read",
            ha="center", va="bottom", fontsize=8.5, color="#8a4b00")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def headline_figure(path: Path) -> None:
    """The paper's +5.7 points beside this project's measured differences with their 95 % intervals."""
    fig, ax = plt.subplots(figsize=(9.0, 3.0))
    ys = list(range(len(RESULTS)))[::-1]
    for y, (label, mean, ci) in zip(ys, RESULTS):
        colour = "#c0392b" if ci is None else "#1f5fa8"
        if ci:
            ax.plot(ci, [y, y], color=colour, lw=2.2)
        ax.plot([mean], [y], "o", color=colour, ms=7)
        ax.text(mean, y + 0.2, f"{mean:+.1f}", ha="center", va="bottom", fontsize=8.5, color=colour)
    ax.axvline(0, color="#555", lw=1, ls="--")
    ax.set_yticks(ys, [r[0] for r in RESULTS], fontsize=9)
    ax.set_ylim(-0.6, len(RESULTS) - 0.3)
    ax.set_xlabel("2-bit quantization minus no noise, mIoU points (bars: paired 95 % intervals)",
                  fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    cycle_figure(OUT / "cycle.png")
    headline_figure(OUT / "headline.png")
    print(f"wrote {OUT / 'cycle.png'} and {OUT / 'headline.png'}")
