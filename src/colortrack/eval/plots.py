"""The plots of `colortrack analyze` and of a training run's metrics (matplotlib, from the
`plots` extra): pyplot figures for the report, and the object API for training, which keeps no
pyplot state in its process."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from colortrack.errors import UsageError

if TYPE_CHECKING:
    from colortrack.eval.analysis import MethodScores


def pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("plots need matplotlib: pip install 'colortrack[plots]'") from None
    return plt


def plot_pck(plt, curve: dict[int, float]):
    figure, ax = plt.subplots(figsize=(4.5, 3.2), layout="constrained")
    ax.plot(list(curve), list(curve.values()), marker="o")
    ax.set_xlabel("frames since the annotated one")
    ax.set_ylabel("PCK@0.2")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title("keypoints: accuracy against distance", fontsize=10)
    return figure


def png_of(plt, figure) -> bytes:
    """The figure as PNG bytes, closed: written beside the report and embedded in it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def img_tag(data: bytes, alt: str = "", kind: str = "png") -> str:
    text = base64.b64encode(data).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/{kind};base64,{text}">'


def plot_over_time(plt, methods: list[MethodScores]):
    sequences = list(methods[0].frames)
    cols = min(5, len(sequences))
    rows = -(-len(sequences) // cols)
    figure, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows + 0.4),
                                squeeze=False, sharey=True, layout="constrained")
    for ax, sequence in zip(axes.flat, sequences, strict=False):
        for method in methods:
            values = method.frames[sequence]
            ax.plot(np.arange(1, len(values) + 1), values, label=method.name, linewidth=1.2)
        ax.set_title(sequence, fontsize=9)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(sequences):]:
        ax.axis("off")
    axes[0][0].set_ylabel("J&F")
    axes[0][0].legend(fontsize=7)
    figure.suptitle("J&F over time (frame index)", fontsize=11)
    return figure


def plot_attributes(plt, table: dict[str, dict[str, float]], methods: list[MethodScores]):
    names = list(table)
    figure, ax = plt.subplots(figsize=(min(14, 2 + 0.25 * len(names) * len(methods)), 3.2),
                              layout="constrained")
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        bars = ax.bar(np.arange(len(names)) + i * width, [table[a][method.name] for a in names],
                      width, label=method.name)
        overall = np.mean([method.mean(s) for s in method.frames])
        ax.axhline(overall, color=bars.patches[0].get_facecolor(), linestyle="--", linewidth=1,
                   label=f"{method.name}, all {len(method.frames)} sequences")
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2,
                  [f"{a}\n({int(table[a]['sequences'])})" for a in names], fontsize=8)
    ax.set_ylabel("mean J&F")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title("J&F by DAVIS attribute, averaged over the sequences having it (count)",
                 fontsize=10)
    return figure


def plot_colorization(plt, accuracy: dict[str, float], method: MethodScores, r: float | None):
    figure, ax = plt.subplots(figsize=(4.5, 3.6), layout="constrained")
    x = [accuracy[s] for s in accuracy]
    y = [method.mean(s) for s in accuracy]
    ax.scatter(x, y)
    for s, xi, yi in zip(accuracy, x, y, strict=True):
        ax.annotate(s, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("colorization accuracy (% of feature cells)")
    ax.set_ylabel(f"J&F of {method.name}")
    ax.set_title("tracking against colorization" + ("" if r is None else f" (r = {r:.2f})"),
                 fontsize=10)
    ax.grid(alpha=0.3)
    return figure


def plot_training(metrics: str | Path, png: str | Path) -> bool:
    """Loss, accuracy (training and held-out, with the color prior's) and learning rate of a
    run's metrics.csv as a PNG, written atomically; False (nothing written) without
    matplotlib."""
    import csv

    from colortrack.data.files import atomic_path

    try:  # the object API: no pyplot state in a training process
        from matplotlib.figure import Figure
    except ImportError:
        return False
    with open(metrics) as f:
        rows = [r for r in csv.DictReader(f) if None not in r.values()]
    if not rows:
        return False

    def series(key: str) -> tuple[list[int], list[float]]:
        kept = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
        return [s for s, _ in kept], [v for _, v in kept]

    figure = Figure(figsize=(13, 3.2))
    axes = figure.subplots(1, 3)
    for ax, (title, keys) in zip(axes, [
            ("loss", ("loss", "val_loss", "prior_loss")),
            ("accuracy", ("accuracy", "val_accuracy", "prior_accuracy")),
            ("learning rate", ("lr",))], strict=True):
        for key in keys:
            steps, values = series(key)
            if steps:
                ax.plot(steps, values, label=key, linewidth=1 if key in ("loss", "accuracy")
                        else 1.8, alpha=0.6 if key in ("loss", "accuracy") else 1.0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[2].set_yscale("log")
    with atomic_path(png) as tmp:
        figure.savefig(tmp, format="png", dpi=80, bbox_inches="tight")
    return True
