"""Classification metrics from predicted and true digits, as plain JSON-able values."""

from __future__ import annotations

import numpy as np
from rapidfuzz.distance import Levenshtein

from digitformer.inference.readers import token_strings


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


def number_metrics(preds: np.ndarray, labels: np.ndarray) -> dict:
    """For numbers of any length ((N, S) tokens, ended by the end token): exact match (the
    whole number, its length included), character error rate (edit distance over the true
    length, Levenshtein), length accuracy, and exact match for each true length."""
    read, true = token_strings(preds), token_strings(labels)
    exact = np.array([r == t for r, t in zip(read, true)])
    lengths = np.array([len(t) for t in true])
    edits = sum(Levenshtein.distance(r, t) for r, t in zip(read, true))
    return {
        "exact_match": float(exact.mean()),
        "cer": edits / max(1, int(lengths.sum())),
        "length_accuracy": float(np.mean([len(r) == len(t) for r, t in zip(read, true)])),
        "exact_by_length": {
            str(n): float(exact[lengths == n].mean()) for n in sorted(set(lengths.tolist()))
        },
    }
