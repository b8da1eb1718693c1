"""Pictures of a run: the Braille validation display of an epoch, training curves, confusion.

The Braille picture draws the terminal display's dots themselves (2x4 dots a character, cells
spaced as embossed Braille is), so it needs no font with Braille glyphs.
"""

from __future__ import annotations

import numpy as np

from digitformer.apps.viz.plots import figure, save

# Embossed Braille proportions (mm): dots 2.5 apart, cells 6 apart, lines 10 apart.
DOT, CELL_W, CELL_H = 2.5, 6.0, 10.0


def braille_dots(image: np.ndarray, threshold: int = 128) -> np.ndarray:
    """(H, W) image -> (K, 2) dot centres (x, y) in mm, one per inked pixel, as `braille()`
    groups pixels: 2 columns x 4 rows per character."""
    ys, xs = np.nonzero(image >= threshold)
    x = xs // 2 * CELL_W + xs % 2 * DOT
    y = ys // 4 * CELL_H + ys % 4 * DOT
    return np.stack([x, y], 1).astype(float)


def braille_picture(
    images: np.ndarray, labels: np.ndarray, preds: np.ndarray, title: str, path, per_row: int = 5
) -> None:
    """The per-epoch Braille display as a PNG: single digits (N, 28, 28) with (N,) or grids
    (N, 56, 56) with (N, 4); expected digit top-left, predicted bottom-right (green/red)."""
    preds, labels = preds.reshape(len(images), -1), labels.reshape(len(images), -1)
    side = 2 if preds.shape[1] == 4 else 1
    d = images.shape[1] // side
    box_w, box_h = d // 2 * CELL_W, -(-d // 4) * CELL_H  # one digit's box
    gap = CELL_W
    sample_w, sample_h = side * box_w + (side - 1) * gap, side * box_h + (side - 1) * gap
    rows = -(-len(images) // per_row)
    width, height = per_row * sample_w + (per_row + 1) * 3 * gap, rows * (sample_h + 3 * gap)
    scale = 12 / width  # the picture is 12 inches wide
    fig = figure(12, round(height * scale + 0.5, 1))
    ax = fig.add_axes((0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    dots = []
    for i in range(len(images)):
        ox = 3 * gap + (i % per_row) * (sample_w + 3 * gap)
        oy = 1.5 * gap + (i // per_row) * (sample_h + 3 * gap)
        for k in range(side * side):
            r, c = divmod(k, side)
            x0, y0 = ox + c * (box_w + gap), oy + r * (box_h + gap)
            digit = images[i, r * d : (r + 1) * d, c * d : (c + 1) * d]
            dots.append(braille_dots(digit) + (x0, y0))
            ax.add_patch(_box(x0, y0, box_w, box_h))
            expected, predicted = int(labels[i, k]), int(preds[i, k])
            ax.text(x0 + 1, y0 + 1, str(expected), color="grey", va="top", fontsize=8)
            ax.text(
                x0 + box_w - 1,
                y0 + box_h - 1,
                str(predicted),
                color="green" if expected == predicted else "red",
                ha="right",
                va="bottom",
                fontsize=9,
                weight="bold",
            )
    points = np.concatenate(dots)
    ax.scatter(points[:, 0], points[:, 1], s=1.5, c="black")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.suptitle(title, fontsize=10)
    save(fig, path)


def _box(x: float, y: float, w: float, h: float):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 1, y - 1), w + 1, h + 1, fill=False, lw=0.6, ec="grey")


def training_curves(history: list[dict], metric: str, title: str, path) -> None:
    """Loss and accuracy per epoch, train and validation (12 x 4.5 inches)."""
    epochs = [r["epoch"] for r in history]
    fig = figure(12, 4.5)
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    loss_ax.plot(epochs, [r["val_loss"] for r in history], "o-", label="validation")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    acc_ax.plot(
        epochs, [100 * r["train_accuracy"] for r in history], "o-", label="train (per digit)"
    )
    acc_ax.plot(
        epochs,
        [100 * r[f"val_{metric}"] for r in history],
        "o-",
        label=f"validation ({metric.replace('_', ' ')})",
    )
    if "val_digit_accuracy" in history[0]:
        acc_ax.plot(
            epochs,
            [100 * r["val_digit_accuracy"] for r in history],
            "o-",
            label="validation (digit)",
        )
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(wspace=0.25, top=0.85)
    save(fig, path)


def confusion_heatmap(confusion: np.ndarray, title: str, path) -> None:
    """Row-normalized 10x10 confusion matrix with the counts written in (7 x 6 inches)."""
    confusion = np.asarray(confusion)
    share = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    fig = figure(7, 6)
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for t in range(10):
        for p in range(10):
            if confusion[t, p]:
                color = "white" if share[t, p] > 0.5 else "black"
                ax.text(
                    p, t, str(confusion[t, p]), ha="center", va="center", fontsize=7, color=color
                )
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted digit", ylabel="true digit")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label="share of the true digit's samples")
    save(fig, path)
