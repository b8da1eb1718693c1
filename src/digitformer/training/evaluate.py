"""Evaluate a checkpoint on the validation or test split, as a table or JSON.

digitformer eval .data/models/encoder-decoder-default --split test
"""

from __future__ import annotations

import numpy as np

from digitformer.inference.checkpoint import load_model
from digitformer.inference.ensemble import Ensemble
from digitformer.inference.readers import kind_of, partners_of
from digitformer.training.tasks import task_for_checkpoint
from digitformer.utils.errors import DigitformerError
from digitformer.utils.runtime import pick_device


def evaluate_checkpoint(
    path: str | list[str],
    split: str = "test",
    data_dir: str | None = None,
    device: str = "auto",
    beam_size: int = 1,
    tta: bool = False,
    progress: bool = False,
) -> dict:
    """Metrics of a checkpoint on a split, rebuilt from the checkpoint's own settings. A list
    of checkpoints (of one model type) is evaluated as an ensemble: their probabilities are
    averaged (per generated position for the encoder-decoder); the data settings are the
    first checkpoint's. tta: average over test-time views of each digit too."""
    if split not in ("val", "test"):
        raise DigitformerError(f"split must be val or test, got {split!r}")
    dev = pick_device(device)
    paths = path if isinstance(path, list) else [path]
    loaded = [load_model(p, dev) for p in paths]
    model, meta = loaded[0]
    # a bundled digit reader reads with its partners (readers.read): measured as it reads
    members = [m for loaded_model, _ in loaded for m in (loaded_model, *partners_of(loaded_model))]
    if len(members) > 1 or tta:
        types = {m["model_type"] for _, m in loaded}
        if len(types) > 1:
            raise DigitformerError(f"an ensemble needs one model type, got {sorted(types)}")
        model = Ensemble(members, tta=tta).eval()
    if beam_size != 1:  # checked before the data is loaded
        if kind_of(model).name == "digit" or len(paths) > 1 or tta:
            raise DigitformerError("--beam is for a single encoder-decoder checkpoint, no --tta")
        if not 1 <= beam_size <= 10:
            raise DigitformerError(f"--beam must be 1 to 10, got {beam_size}")
    task = task_for_checkpoint(meta, dev, split=split, data_dir=data_dir)
    metrics, _ = task.evaluate(model, split, beam_size=beam_size, progress=progress)
    views = len(kind_of(model).views)
    return {
        "checkpoint": ", ".join(map(str, paths)),
        "models": len(members),
        "model_type": meta["model_type"],
        "kind": kind_of(model).name,
        "split": split,
        "epoch": meta.get("epoch"),
        "beam_size": beam_size,
        "tta": tta,
        "views": views if tta else 1,
        **metrics,
    }


def format_report(result: dict) -> str:
    pct = lambda x: f"{100 * x:6.2f}%"  # noqa: E731
    what = (
        f"ensemble of {result['models']} checkpoints ({result['checkpoint']})"
        if result.get("models", 1) > 1
        else f"checkpoint {result['checkpoint']} (epoch {result['epoch']})"
    )
    if result.get("beam_size", 1) > 1:
        what += f", beam search of {result['beam_size']}"
    if result.get("tta"):
        what += f", {result.get('views', 'several')} test-time views averaged"
    lines = [f"{result['model_type']} {what}, {result['split']} split, {result['count']} samples"]
    if "exact_match" in result:  # numbers: no per-position or per-class figures
        for name, key in (
            ("exact match (the whole number right)", "exact_match"),
            ("character error rate", "cer"),
            ("length right", "length_accuracy"),
        ):
            lines.append(f"{name:<37} {pct(result[key])}")
        lines.append(
            "exact match by length: "
            + "  ".join(f"{n}: {pct(a).strip()}" for n, a in result["exact_by_length"].items())
        )
        lines.append(f"loss {result['loss']:.4f}")
        return "\n".join(lines)
    if "sequence_accuracy" in result:
        lines.append(
            f"sequence accuracy (all four digits right) {pct(result['sequence_accuracy'])}"
        )
        lines.append(f"digit accuracy                            {pct(result['digit_accuracy'])}")
        names = ("top-left", "top-right", "bottom-left", "bottom-right")
        lines.append(
            "per position: "
            + "  ".join(f"{n} {pct(a).strip()}" for n, a in zip(names, result["position_accuracy"]))
        )
    else:
        lines.append(f"accuracy {pct(result['accuracy'])}")
    lines.append(f"loss {result['loss']:.4f}")
    lines.append("")
    lines.append("per-class accuracy and confusion matrix (rows: true digit, columns: predicted)")
    lines.append("digit    acc  " + " ".join(f"{d:>5}" for d in range(10)))
    confusion = np.asarray(result["confusion"])
    for digit in range(10):
        row = " ".join(f"{n:>5}" for n in confusion[digit])
        lines.append(f"{digit:>5} {pct(result['per_class_accuracy'][digit])} {row}")
    return "\n".join(lines)
