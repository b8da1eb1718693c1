"""Classification metrics from predicted and true digits, as plain JSON-able values."""

from __future__ import annotations

import numpy as np


def digit_metrics(preds: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, per-class accuracy and the 10x10 confusion matrix (rows: true, cols: predicted)."""
    preds, labels = preds.reshape(-1).astype(np.int64), labels.reshape(-1).astype(np.int64)
    confusion = np.bincount(labels * 10 + preds, minlength=100).reshape(10, 10)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(1), 1)
    return {
        "accuracy": float((preds == labels).mean()),
        "per_class_accuracy": [float(a) for a in per_class],
        "confusion": confusion.tolist(),
    }


def sequence_metrics(preds: np.ndarray, labels: np.ndarray) -> dict:
    """For (N, 4) digit sequences: all-four-right accuracy, per-digit and per-position accuracy."""
    right = preds == labels  # (N, 4)
    digits = digit_metrics(preds, labels)
    return {
        "sequence_accuracy": float(right.all(1).mean()),
        "digit_accuracy": digits["accuracy"],
        "position_accuracy": [float(a) for a in right.mean(0)],
        "per_class_accuracy": digits["per_class_accuracy"],
        "confusion": digits["confusion"],
    }
