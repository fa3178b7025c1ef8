"""The report's figures: PNG bytes drawn with matplotlib's Agg canvas (no pyplot state)."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def loss_curve_png(loss: list[float], title: str) -> bytes:
    """The word2vec issue's loss PNG (w2v_eval.loss_png), as bytes for the store."""
    from .word2vec_eval import loss_png
    with tempfile.TemporaryDirectory() as tmp:
        return loss_png(loss, Path(tmp) / "loss.png", title).read_bytes()


def confusion_png(matrix: list[list[int]], labels: list[str], title: str) -> bytes:
    """Rows = true class, columns = predicted; each cell annotated with its count."""
    m = np.asarray(matrix, dtype=np.int64)                                   # (C, C)
    side = 1.6 + 0.55 * len(labels)
    fig = _figure(side + 1.2, side)
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > m.max() / 2 else "black")
    return _png(fig)


def projection_png(points: np.ndarray, labels: list[str | None], title: str) -> bytes:
    """(N, 2) points, one colour per label (one colour and no legend when nothing is labelled)."""
    fig = _figure(6.4, 4.8)
    ax = fig.add_subplot()
    names = sorted({lab for lab in labels if lab is not None})
    groups = [(n, [lab == n for lab in labels]) for n in names]
    if any(lab is None for lab in labels):
        groups.append(("(no label)", [lab is None for lab in labels]))
    for name, mask in groups:
        xy = points[np.asarray(mask)]
        ax.scatter(xy[:, 0], xy[:, 1], s=10, alpha=0.7, label=name)
    if names:
        ax.legend(fontsize="small", markerscale=1.5, loc="best")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title)
    return _png(fig)


def learning_curve_png(history: dict, title: str) -> bytes:
    """Training and validation loss per epoch (left axis), validation accuracy (right), the kept epoch marked."""
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    fig = _figure(6.4, 3.6)
    ax = fig.add_subplot()
    ax.plot(epochs, history["train_loss"], label="training loss")
    ax.plot(epochs, history["val_loss"], label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    if history.get("best_epoch", -1) >= 0:
        ax.axvline(history["best_epoch"] + 1, color="#6e7781", linestyle=":", label="kept (best validation loss)")
    acc = ax.twinx()
    acc.plot(epochs, history["val_accuracy"], color="#2da44e", label="validation accuracy")
    acc.set_ylabel("accuracy")
    lines = ax.get_legend_handles_labels()[0] + acc.get_legend_handles_labels()[0]
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize="small", loc="center right")
    ax.set_title(title)
    return _png(fig)
