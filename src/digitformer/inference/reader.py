"""The Python API: a trained model that reads pictures, prepared as `digitformer predict` does.

import digitformer

reader = digitformer.load("digit")       # the bundled digit reader; "grid" for 2x2 grids,
                                         # "number", "auto" (each picture by its layout),
                                         # or a run folder, a checkpoint, hf://owner/repo
for result in reader.predict(["seven.png", pixels, pil_image]):
    print(result.digits, result.confidence, result.reason)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from digitformer.inference.checkpoint import (
    CHECKPOINT_FILES,
    PRETRAINED,
    PRETRAINED_DIR,
    load_model,
    read_meta,
    resolve_path,
)
from digitformer.inference.pieces import read_in_pieces
from digitformer.inference.predict import CHUNK, Prediction, Readings, predict_pictures
from digitformer.inference.prepare import gray_pixels, layout_of, read_gray
from digitformer.inference.readers import READERS, input_shape, kind_of, kind_of_checkpoint
from digitformer.utils.defaults import RUNS_DIR
from digitformer.utils.errors import DigitformerError
from digitformer.utils.runtime import pick_device

SHOWN_METRICS = ("accuracy", "sequence_accuracy", "digit_accuracy", "exact_match", "cer", "loss")


class Reader:
    """A loaded model and what it reads: `kind` is "digit" (one 28x28 digit), "grid" (the
    four digits of a 2x2 grid) or "number" (a number of any length). What the Python API
    returns and what the server serves."""

    def __init__(
        self,
        model: torch.nn.Module,
        meta: dict,
        device: torch.device,
        source: str,
        name: str | None = None,
        digits: torch.nn.Module | None = None,
    ):
        self.model, self.meta, self.device, self.source = model, meta, device, source
        # a numbers reader with a digit model reads in pieces (digitformer.inference.pieces)
        self.digits = digits
        self.model_type = meta["model_type"]
        self.kind = kind_of(model).name
        self.name = name or self.kind

    def __repr__(self) -> str:
        return f"Reader({self.kind}, {self.source})"

    def describe(self) -> dict:
        """What /models shows of it: its name, kind, input, size and validation figures."""
        val = self.meta.get("metrics", {}).get("val", {})
        height, width = input_shape(self.model)
        return {
            "name": self.name,
            "model_type": self.model_type,
            "kind": self.kind,
            "input_size": height,
            "input_shape": [height, width],
            "checkpoint": self.source,
            "epoch": self.meta.get("epoch"),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "validation": {k: v for k, v in val.items() if k in SHOWN_METRICS},
        }

    def read_pictures(
        self,
        pictures: list[np.ndarray],
        names: list[str],
        preprocess: bool = True,
        batch_size: int = 256,
    ) -> Readings:
        """Grayscale pictures (H, W) in [0, 1] -> `Readings` (predictions and prepared inputs)."""
        if self.digits is not None and preprocess:
            return read_in_pieces(
                self.model, self.digits, pictures, names, batch_size, device=self.device
            )
        return predict_pictures(self.model, pictures, names, preprocess, batch_size, self.device)

    def predict(
        self, images: Iterable, *, preprocess: bool = True, batch_size: int = 256
    ) -> list[Prediction]:
        """Read each picture: a file path, a PIL image, or an array (H, W) or (H, W, 1|3|4) of
        uint8 0-255, uint16 0-65535 or floats 0-1; any size, ink dark or light. Returns one
        Prediction each: `digits` (None, with a `reason`, when there is nothing to read),
        `confidence` per digit, `probabilities`, `low_confidence`, `number_confidence` and, for
        a number read in pieces, each digit's `spans`."""
        if isinstance(images, (str, Path, np.ndarray, Image.Image)):
            images = [images]  # one picture is a list of one
        pictures, names = [], []
        for i, item in enumerate(images):
            name = str(item) if isinstance(item, (str, Path)) else f"image {i}"
            pictures.append(_pixels(item, name))
            names.append(name)
        readings = self.read_pictures(pictures, names, preprocess, batch_size)
        if readings.errors:
            raise DigitformerError(readings.errors[0])
        return readings.results


class AutoReader:
    """The bundled readers, each picture read by the one its ink's layout calls for (one
    digit, a 2x2 grid, a number: `layout_of`), as `digitformer predict --model auto` does.
    Each reader is loaded the first time a picture needs it."""

    kind = "auto"

    def __init__(self, device: str = "auto", pieces: bool = True) -> None:
        self.device, self.pieces = device, pieces
        self.readers: dict[str, Reader] = {}

    def __repr__(self) -> str:
        return f"AutoReader({', '.join(self.readers) or 'none loaded yet'})"

    def predict(
        self, images: Iterable, *, preprocess: bool = True, batch_size: int = 256
    ) -> list[Prediction]:
        """As `Reader.predict`, each picture by the reader of its layout."""
        if isinstance(images, (str, Path, np.ndarray, Image.Image)):
            images = [images]
        items = list(images)
        results: list[Prediction] = []
        for start in range(0, len(items), CHUNK):  # as predict_paths: each picture's ink is
            chunk = items[start : start + CHUNK]  # found once, for its layout and its reading
            pictures = [_pixels(item, _name(item, start + i)) for i, item in enumerate(chunk)]
            kinds = [layout_of(p) for p in pictures]
            found: dict[int, Prediction] = {}
            for kind in dict.fromkeys(kinds):
                if kind not in self.readers:
                    self.readers[kind] = load(kind, self.device, self.pieces)
                picked = [i for i, k in enumerate(kinds) if k == kind]
                read = self.readers[kind].predict(
                    [pictures[i] for i in picked], preprocess=preprocess, batch_size=batch_size
                )
                for i, r in zip(picked, read):
                    r.file = _name(chunk[i], start + i)
                    found[i] = r
            results += [found[i] for i in sorted(found)]
        return results


def _name(item, i: int) -> str:
    return str(item) if isinstance(item, (str, Path)) else f"image {i}"


def load(name: str | Path = "digit", device: str = "auto", pieces: bool = True):
    """A Reader: "digit", "grid" or "number" (the bundled models), "auto" (all three, each
    picture by its layout: an AutoReader), or anything a command takes as a checkpoint (a run
    folder, a .safetensors file, pretrained:NAME, hf://owner/repo). A numbers reader reads in
    pieces, its lone digits by the bundled digit reader, unless `pieces` is False (or no digit
    reader is bundled)."""
    if str(name) == "auto":
        return AutoReader(device, pieces)
    source = f"pretrained:{name}" if str(name) in PRETRAINED else str(name)
    dev = pick_device(device)
    model, meta = load_model(source, dev)
    digits = digit_helper(model, dev) if pieces else None
    return Reader(model, meta, dev, source, digits=digits)


def digit_helper(model: torch.nn.Module, device: torch.device) -> torch.nn.Module | None:
    """For a numbers model: the bundled digit reader that reads its lone digits (None for other
    models, or when none is bundled)."""
    if kind_of(model).name != "number" or not (PRETRAINED_DIR / "digit.safetensors").is_file():
        return None
    return load_model("pretrained:digit", device)[0]


def load_readers(sources: list[str], device: str | torch.device = "auto") -> dict[str, Reader]:
    """Several readers by name (a run's folder name, a checkpoint's stem, pretrained:NAME's
    NAME; `+` added to a name already taken): what `serve` serves."""
    dev = device if isinstance(device, torch.device) else pick_device(device)
    readers: dict[str, Reader] = {}
    for source in sources:
        path = resolve_path(source)
        model, meta = load_model(path, dev)
        name = path.parent.name if path.stem in ("best", "last") else path.stem
        while name in readers:
            name += "+"
        readers[name] = Reader(model, meta, dev, str(source), name, digit_helper(model, dev))
    if not readers:
        raise DigitformerError("no checkpoint to serve")
    return readers


def list_models(runs_dir: str | Path = RUNS_DIR) -> list[dict]:
    """The bundled models (with their test accuracy) and the runs in `runs_dir` (with their
    best validation score): what `digitformer models` prints."""
    rows = []
    report_file = PRETRAINED_DIR / "report.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    for name in PRETRAINED:
        if (PRETRAINED_DIR / f"{name}.safetensors").is_file():
            test = report.get(name, {}).get("test", {})
            once = test.get("with its partners, once", test.get("once", {}))  # as it reads
            score = once.get(READERS[name].metric)
            rows.append(_row(f"pretrained:{name}", name, score, "test", "bundled"))
    for run in sorted(p for p in Path(runs_dir).glob("*") if p.is_dir()):
        if not any((run / f).is_file() for f in CHECKPOINT_FILES):
            continue
        try:
            _, meta, _ = read_meta(run)
        except DigitformerError as exc:
            rows.append(
                {"name": str(run), "kind": "?", "score": None, "split": "", "where": str(exc)}
            )
            continue
        val = meta.get("metrics", {}).get("val", {})
        kind = kind_of_checkpoint(meta)
        score = val.get(kind.metric)
        rows.append(_row(str(run), kind.name, score, "val", f"epoch {meta.get('epoch')}"))
    return rows


def _row(name: str, kind: str, score, split: str, where: str) -> dict:
    return {"name": name, "kind": kind, "score": score, "split": split, "where": where}


def format_models(rows: list[dict]) -> str:
    if not rows:
        return "no models: none bundled and no runs found"
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'model':<{width}}  kind    accuracy       where"]
    for r in rows:
        score = "" if r["score"] is None else f"{100 * r['score']:.2f}% ({r['split']})"
        lines.append(f"{r['name']:<{width}}  {r['kind']:<6}  {score:<13}  {r['where']}")
    return "\n".join(lines)


def _pixels(item, name: str) -> np.ndarray:
    """Any picture the API takes -> float grayscale (H, W) in [0, 1]."""
    if isinstance(item, (str, Path)):
        return read_gray(item, name)
    if isinstance(item, Image.Image):
        return gray_pixels(ImageOps.exif_transpose(item))  # upright, as its EXIF tag says
    values = np.asarray(item)
    if values.ndim == 3 and values.shape[-1] == 1:  # one channel: (H, W, 1)
        values = values[..., 0]
    if values.ndim == 3 and values.shape[-1] in (3, 4):
        dtype = values.dtype
        values = values[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        values = values.astype(dtype) if np.issubdtype(dtype, np.integer) else values
    if values.ndim != 2 or values.size == 0:
        raise DigitformerError(
            f"{name}: an array picture is (H, W), (H, W, 1) or (H, W, 3), got {values.shape}"
        )
    if values.dtype == np.uint8:
        return values.astype(np.float32) / 255
    if values.dtype == np.uint16:
        return values.astype(np.float32) / 65535
    if values.dtype == bool:
        return values.astype(np.float32)
    values = np.nan_to_num(values.astype(np.float32))
    return np.clip(values / 255 if values.max() > 1 else values, 0, 1)
