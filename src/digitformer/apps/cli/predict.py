"""`digitformer predict [CHECKPOINT] IMAGE_OR_DIR...`: read people's pictures."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digitformer.apps.cli.common import computing
from digitformer.display.braille import render_numbers, render_samples, use_color
from digitformer.utils.errors import DigitformerError
from digitformer.utils.fileio import printable, write_text_atomic

if TYPE_CHECKING:
    from digitformer.inference.predict import Prediction


def register(sub, shared) -> None:
    p = sub.add_parser(
        "predict",
        parents=[shared[k] for k in ("device", "threads")],
        usage="digitformer predict [options] [CHECKPOINT] IMAGE_OR_DIR [IMAGE_OR_DIR ...]",
        help="read digits from your own images",
        description="Read one digit, the four digits of a 2x2 grid, or a number of any "
        "length, in PNG, JPEG, BMP, "
        "GIF, TIFF or WebP images, or folders of them: by the bundled models (--model), or "
        "by a checkpoint given first (a run folder, a .safetensors file, pretrained:NAME, "
        "hf://owner/repo). A picture with nothing to read says so. Unreadable files are "
        "reported one line each; the others are still read; the exit status is 1 if any "
        "file failed. A path of - reads one image from standard input.",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a checkpoint first (optional), then pictures, folders, or - for standard input",
    )
    p.add_argument(
        "--model",
        choices=("digit", "grid", "number", "auto"),
        default="digit",
        help="without a checkpoint: the bundled digit, grid or number reader, or auto (each "
        "picture by its ink layout); default: digit",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--csv", metavar="FILE", help="also write the results to FILE as CSV")
    p.add_argument("--show", action="store_true", help="draw each input in Braille")
    p.add_argument(
        "--no-preprocess",
        dest="preprocess",
        action="store_false",
        help="use images as they are (they must be 28x28, or 56x56 for grids)",
    )
    p.add_argument(
        "--batch-size", type=int, default=256, help="pictures read at once (default: 256)"
    )
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    from digitformer.inference.predict import looks_like_checkpoint, predict_paths

    if args.csv and any(Path(args.csv).resolve() == Path(p).resolve() for p in args.paths):
        raise DigitformerError(
            f"--csv {args.csv} is one of the pictures to read: name another file"
        )
    computing(args)
    paths, checkpoint = args.paths, None
    if len(paths) > 1 and looks_like_checkpoint(paths[0]):
        checkpoint, paths = paths[0], paths[1:]
    readings = predict_paths(
        paths, checkpoint, args.model, args.preprocess, args.batch_size, args.device, args.show
    )
    results, inputs, errors = readings.results, readings.inputs, readings.errors
    for message in readings.warnings:
        print(f"digitformer: warning: {message}", file=sys.stderr)
    if args.csv:
        write_csv(results, args.csv)
    if args.json:
        for result in results:
            print(json.dumps(result.to_dict()))
    elif results:
        print(format_table(results, inputs if args.show else None))
    for message in errors:
        print(f"digitformer: error: {message}", file=sys.stderr)
    return 1 if errors else 0


def write_csv(results: list[Prediction], path: str | Path) -> None:
    """One row per picture: file, digits, confidence per digit, the whole number's confidence,
    low_confidence, reason, and each digit's columns as shares of the picture's width
    (`left-right`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    header = ["file", "digits", "confidence", "number_confidence", "low_confidence", "reason"]
    writer.writerow([*header, "spans"])
    for r in results:
        confidence = " ".join(f"{c:.4f}" for c in r.confidence)
        whole = "" if r.number_confidence is None else f"{r.number_confidence:.4f}"
        spans = " ".join(f"{a:.4f}-{b:.4f}" for a, b in r.spans)
        row = [printable(r.file), r.digits or "", confidence, whole, r.low_confidence]
        row.append(r.reason or "")
        writer.writerow([*row, spans])
    write_text_atomic(path, buffer.getvalue())


def format_table(results: list[Prediction], inputs: list[np.ndarray] | None = None) -> str:
    """One row per file: digits and the confidence of each (flagged when low, or the reason
    when there was nothing to read); with `inputs`, each prepared image drawn in Braille
    under its row (`predict --show`)."""
    names = [printable(r.file) for r in results]
    width = max([len(n) for n in names] + [4])
    lines = [f"{'file':<{width}}  digits  confidence"]
    for i, result in enumerate(results):
        if result.digits is None:
            lines.append(f"{names[i]:<{width}}  {'-':<6}  {result.reason}")
            continue
        confidence = " ".join(f"{c:.3f}" for c in result.confidence)
        flag = "  (low confidence)" if result.low_confidence else ""
        lines.append(f"{names[i]:<{width}}  {result.digits:<6}  {confidence}{flag}")
        if inputs is not None:
            image = inputs[i]
            if image.shape in ((28, 28), (56, 56)):
                digits = np.array([int(d) for d in result.digits])
                lines.append(render_samples(image[None], None, digits, color=use_color()))
            else:  # a number's canvas
                lines.append(render_numbers(image[None], None, [result.digits], color=use_color()))
    return "\n".join(lines)
