"""Read digits from the user's own images with a trained checkpoint.

    digitformer predict .data/models/encoder-decoder-default photos/ grid.png --json

Each image is first brought to what the model reads (`digitformer.inference.prepare`: paper,
lighting and pen removed, the digit cut, scaled and centred as MNIST's were; a grid per quadrant). A
picture with nothing to read gets no digits and a reason, never a guess; a reading whose
confidence is low says so.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from rich.console import Console
from rich.progress import track
from torch import nn

from digitformer.inference.checkpoint import CHECKPOINT_FILES, PRETRAINED_DIR, load_model
from digitformer.inference.prepare import NoInk, layout_of, read_gray
from digitformer.inference.readers import READERS, input_shape, kind_of, read_judged, token_strings
from digitformer.utils.errors import DigitformerError
from digitformer.utils.fileio import printable
from digitformer.utils.runtime import each, pick_device

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
LOW_CONFIDENCE = 0.6  # a digit read with less than this probability is flagged
STDIN = "-"  # an image path of "-" is read from standard input
CHOICES = (*READERS, "auto")  # --model: a bundled reader, or chosen per picture by its layout
LAYOUT_NAMES = {"digit": "one digit", "grid": "a 2x2 grid of digits", "number": "a number"}
ERR = Console(stderr=True)


@dataclass
class Prediction:
    """What was read in one file: `digits` None (and a `reason`) when there was nothing to
    read; `low_confidence` when some digit's probability is under LOW_CONFIDENCE."""

    file: str
    digits: str | None
    confidence: list[float]
    probabilities: list[list[float]]
    reason: str | None = None
    warning: str | None = None  # the picture looks like what another reader reads...
    looks_like: str | None = None  # ...and that reader's kind
    # per digit, the columns [left, right) it was read from as shares of the picture's width
    # (numbers read in pieces: a lone digit's own, an even share of its cluster's if touching)
    spans: list[list[float]] = field(default_factory=list)

    @property
    def low_confidence(self) -> bool:
        return any(c < LOW_CONFIDENCE for c in self.confidence)

    @property
    def number_confidence(self) -> float | None:
        """The product of the digits' confidences (the decision that the number ends there is
        not in it): a whole reading is at most as sure as this."""
        return float(np.prod(self.confidence)) if self.digits is not None else None

    def to_dict(self) -> dict:
        whole = self.number_confidence
        return {  # probabilities to 4 decimals: what a reader can tell apart
            "file": printable(self.file),
            "digits": self.digits,
            "confidence": [round(c, 4) for c in self.confidence],
            "probabilities": [[round(p, 4) for p in row] for row in self.probabilities],
            "number_confidence": None if whole is None else round(whole, 4),
            "low_confidence": self.low_confidence,
            "spans": self.spans,
            "reason": self.reason,
            "warning": self.warning,
            "looks_like": self.looks_like,
        }


@dataclass
class Readings:
    """What a batch of pictures gave: a Prediction and the prepared input for each picture
    that could be prepared, one message per picture that could not, and warnings."""

    results: list[Prediction] = field(default_factory=list)
    inputs: list[np.ndarray] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # the pictures a digit reader's judge finds like none of the ten digits (refused, unless
    # the reader was asked not to judge: then read as the digit they are most like); a
    # number read in pieces lists none (its pieces are judged inside `read_in_pieces`)
    unlike: set[str] = field(default_factory=set)
    # the pictures a digit reader's pair probe (`inference.pairs`) finds two touching digits in
    # (read as one all the same: `read_in_pieces` asks the numbers model of such a piece)
    two: set[str] = field(default_factory=set)


def find_images(paths: Iterable[str]) -> tuple[list[Path], list[str]]:
    """Expand folders into their image files (sorted); report paths that do not exist."""
    files, errors = [], []
    for raw in paths:
        path = Path(raw)
        if raw == STDIN:
            files.append(path)
        elif path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
            if not found:
                errors.append(f"{path}: no image files in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif path.exists():  # a FIFO, a device, a socket: reading it could block forever
            errors.append(f"{path}: not a regular file")
        else:
            errors.append(f"{path}: no such file or folder")
    return files, errors


def predict_pictures(
    model: nn.Module,
    pictures: list[np.ndarray],
    names: list[str],
    preprocess: bool = True,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    layouts: list[str] | None = None,
    judge: bool = True,
    apart: bool = True,
) -> Readings:
    """Grayscale pictures (H, W) in [0, 1] -> a Prediction for each that could be prepared (in
    their order; digits None and the reason where there is nothing to read, or, for a digit
    reader that knows its digits (`novelty`) and `judge`, where a mark is like none of them; a
    warning where the picture's layout (`layouts`, found here when not given) is not what this
    reader reads), their prepared inputs (zeros for those), and one message per picture that
    could not be prepared. A digit the reader is unsure of is read again in its test-time
    views (`readers.read_judged`). `apart`: whole pictures, judged by the reader's judge apart
    where it has one; not for the pieces of a number, which its own judge routes."""
    kind = kind_of(model)

    def prepared(i: int) -> tuple[str, np.ndarray | DigitformerError]:
        """Picture i's layout and the model's input (or why there is none), in one task: both
        ask `find_ink`, and its answer is kept for the second."""
        layout = layouts[i] if layouts is not None else layout_of(pictures[i])
        try:
            return layout, kind.prepare(pictures[i], model, preprocess)
        except DigitformerError as exc:
            return layout, exc

    out = Readings()
    for name, (layout, ready) in zip(names, each(prepared, range(len(pictures)))):
        if isinstance(ready, NoInk):
            out.inputs.append(np.zeros(input_shape(model), np.uint8))
            out.results.append(Prediction(name, None, [], [], str(ready)))
        elif isinstance(ready, DigitformerError):
            out.errors.append(_named(name, ready))
        else:
            out.inputs.append(ready)
            other = layout if layout != kind.name else None
            warning = _mismatch(layout, kind.name)
            out.results.append(Prediction(name, None, [], [], None, warning, other))
    readable = [i for i, r in enumerate(out.results) if r.reason is None]
    if readable:
        batch = np.stack([out.inputs[i] for i in readable])
        tokens, probs, far, two = read_judged(
            model, batch, batch_size, device, views=True, apart=apart
        )
        for k, (row, digits) in enumerate(zip(readable, token_strings(tokens))):
            _fill(out.results[row], digits, probs[k])
        for row in [] if two is None else np.asarray(readable)[two]:
            out.two.add(out.results[row].file)
        for row in [] if far is None else np.asarray(readable)[far]:
            out.unlike.add(out.results[row].file)
            if judge:
                _refuse(out.results[row], "not a digit (it is like none of the ten)")
    return out


def _refuse(result: Prediction, reason: str) -> None:
    result.digits, result.confidence, result.probabilities, result.reason = None, [], [], reason


def _fill(result: Prediction, digits: str, probs: np.ndarray) -> None:
    steps = probs[: len(digits), :10]  # each digit's step (not the end token's)
    result.confidence = [float(c) for c in steps.max(-1)]
    result.probabilities = [[float(x) for x in r] for r in steps]
    result.digits = digits or None
    if not digits:
        result.reason = "no number read (the model ended before any digit)"


def _named(name: str, exc: Exception) -> str:
    message = str(exc)
    return message if message.startswith(name) else f"{name}: {message}"


def looks_like_checkpoint(path: str) -> bool:
    """Whether a `predict` argument names a checkpoint rather than an image or a folder."""
    if path.startswith(("pretrained:", "hf://")) or path.endswith((".safetensors", ".json")):
        return True
    folder = Path(path)
    return folder.is_dir() and any((folder / f).is_file() for f in CHECKPOINT_FILES)


MAX_STDIN_BYTES = 64 * 1024 * 1024  # a picture from a pipe: a phone photo is ~5-15 MB


def _stdin() -> io.BytesIO:
    """Standard input as one picture's bytes, read no further than MAX_STDIN_BYTES: an endless
    pipe is refused, not held."""
    data = sys.stdin.buffer.read(MAX_STDIN_BYTES + 1)
    if len(data) > MAX_STDIN_BYTES:
        raise DigitformerError(f"standard input is over {MAX_STDIN_BYTES:,} bytes: not a picture")
    return io.BytesIO(data)


def read_files(files: list[Path]) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Image files (and "-", standard input) -> grayscale pictures, their names, and one
    message per file that could not be read."""

    def decoded(path: Path) -> np.ndarray | DigitformerError:
        try:
            return read_gray(_stdin() if str(path) == STDIN else path, str(path))
        except DigitformerError as exc:
            return exc

    pictures, names, errors = [], [], []
    for path, picture in zip(files, each(decoded, files)):
        if isinstance(picture, DigitformerError):
            errors.append(_named(str(path), picture))
        else:
            pictures.append(picture)
            names.append(str(path))
    return pictures, names, errors


def _mismatch(layout: str, kind: str) -> str | None:
    """What to say when a picture looks like what another reader reads (None: it does not)."""
    if layout == kind:
        return None
    return (
        f"looks like {LAYOUT_NAMES[layout]}, read as {READERS[kind].reads} (read it with the "
        f"{layout} reader: --model {layout} or auto, ?kind={layout}, load('{layout}'))"
    )


def _digit_model(model: nn.Module, loaded: dict[str, nn.Module], device) -> nn.Module | None:
    """The digit reader that reads a numbers model's lone digits: the one loaded already, else
    the bundled one (None for other models, or with none bundled)."""
    if kind_of(model).name != "number":
        return None
    if "digit" in loaded:
        return loaded["digit"]
    if not (PRETRAINED_DIR / "digit.safetensors").is_file():
        return None
    return load_model("pretrained:digit", device)[0]


def predict_paths(
    paths: Iterable[str],
    checkpoint: str | Path | None = None,
    model: str = "digit",
    preprocess: bool = True,
    batch_size: int = 256,
    device: str = "auto",
    canvases: bool = True,
) -> Readings:
    """`digitformer predict`: image files and folders read by a checkpoint, or by the bundled
    model `model` ("digit", "grid", "number", or "auto": each picture by the one its ink
    layout calls for) -> predictions in file order, their prepared inputs, one message per
    failure, and a warning for each picture whose layout is not what its reader reads.
    `canvases` False: a number read in pieces gets zeros for its input, not the whole number
    on the numbers model's canvas (drawn only by `--show`; 0.4 ms a line)."""
    if batch_size < 1:
        raise DigitformerError("--batch-size must be at least 1")
    if model not in CHOICES:
        raise DigitformerError(f"--model must be one of {', '.join(CHOICES)}, got {model!r}")
    dev = pick_device(device)
    files, errors = find_images(paths)
    models: dict[str, nn.Module] = {}
    if checkpoint is not None:
        loaded = load_model(checkpoint, dev)[0]
        models[kind_of(loaded).name] = loaded
    out = Readings(errors=errors)
    workers = _workers(files, dev)
    # a chunk at a time (in each process): memory stays that of one chunk, however large the
    # folder; shared among processes, four chunks each or more, so that they end together
    size = CHUNK if workers == 1 else max(MIN_SHARE, min(CHUNK, -(-len(files) // (4 * workers))))
    chunks = [files[i : i + size] for i in range(0, len(files), size)]
    many = len(files) > 50  # a folder of pictures: show progress (on standard error)
    job = _Job(model, checkpoint is not None, models, preprocess, batch_size, dev, canvases)
    if workers > 1:
        parts = _in_processes(chunks, job, workers)
    else:
        parts = (_read_chunk(chunk, job, Readings()) for chunk in chunks)
    bar = track(
        parts, "reading pictures", len(chunks), disable=not many, transient=True, console=ERR
    )
    for part in bar:
        out.results += part.results
        out.inputs += part.inputs
        out.errors += part.errors
        out.unlike |= part.unlike
        out.two |= part.two
    out.warnings = [f"{r.file}: {r.warning}" for r in out.results if r.warning]
    return out


CHUNK = 64  # pictures decoded, prepared and read together by `predict_paths` (see ink.KEPT)
MIN_SHARE = 16  # ...and no fewer when a folder is shared among processes
MIN_FOLDER = 64  # a folder of this many pictures or more is read by a process per core


def _workers(files: list[Path], dev: torch.device) -> int:
    """Processes to read `files` with: on a Linux CPU, one per thread PyTorch uses, for a
    folder large enough to repay their start (each loads its readers); else 1 (standard
    input is the parent's alone; macOS and Windows do not fork safely)."""
    if dev.type != "cpu" or len(files) < MIN_FOLDER or sys.platform != "linux":
        return 1
    if any(str(f) == STDIN for f in files):
        return 1
    return max(1, min(torch.get_num_threads(), MAX_PROCESSES, len(files) // MIN_SHARE))


MAX_PROCESSES = 8


def _in_processes(chunks: list[list[Path]], job: _Job, workers: int) -> Iterator[Readings]:
    """Each chunk read by `_read_chunk` in a pool of forked processes of one thread (PyTorch's
    and BLAS's) each: the preparation is many small NumPy and SciPy calls that hold the GIL
    between them, so threads share one core's worth of it. The workers are forked here, before
    the caller starts its progress bar's thread, and inherit `job` (the readers loaded so far).
    -> each chunk's Readings, in order."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    _WORKER["job"] = job  # (the parent's own reading does not look here)
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(workers, context, initializer=_start_worker)
    try:
        parts = pool.map(_read_in_worker, chunks)  # submitted at once: the workers fork now
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    return _collected(pool, parts)


def _collected(pool, parts: Iterator[Readings]) -> Iterator[Readings]:
    from concurrent.futures.process import BrokenProcessPool

    try:
        yield from parts
    except BrokenProcessPool as error:
        raise DigitformerError(
            f"a process reading pictures stopped ({error}; out of memory?): read fewer at a "
            "time, or with --threads 1"
        ) from None
    finally:  # an error (or Ctrl-C) stops what has not started
        pool.shutdown(wait=True, cancel_futures=True)


_WORKER: dict = {}  # what a reading process reads with (set before it is forked)


def _start_worker() -> None:
    import signal

    from threadpoolctl import threadpool_limits

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    torch.set_num_threads(1)
    threadpool_limits(1)


def _read_in_worker(files: list[Path]) -> Readings:
    return _read_chunk(files, _WORKER["job"], Readings())


class _Job(NamedTuple):
    """What `predict_paths` reads each chunk of files with (`_read_chunk`)."""

    model: str  # a bundled reader's name, or "auto"
    fixed: bool  # the one checkpoint in `models` reads every picture
    models: dict[str, nn.Module]  # the readers loaded so far (more are loaded as needed)
    preprocess: bool
    batch_size: int
    dev: torch.device
    canvases: bool  # a number read in pieces keeps its whole canvas (`read_in_pieces`)


def _read_chunk(files: list[Path], job: _Job, out: Readings) -> Readings:
    """Read `files` into `out`, and return it: each by the reader its layout calls for (`model`
    "auto"), by the bundled reader `model`, or by the one checkpoint in `models` (`fixed`);
    readers are loaded the first time a chunk needs them."""
    model, fixed, models, dev = job.model, job.fixed, job.models, job.dev
    preprocess, batch_size = job.preprocess, job.batch_size
    pictures, names, errors = read_files(files)
    out.errors += errors
    # what each picture looks like: here only to choose its reader; a reader that warns of
    # a picture unlike what it reads (`predict_pictures`) looks for itself, one in pieces never
    auto = model == "auto" and not fixed
    layouts = each(layout_of, pictures) if auto else None
    if fixed:
        kinds = [next(iter(models))] * len(names)
    else:
        kinds = layouts if layouts is not None else [model] * len(names)
        if auto and not (PRETRAINED_DIR / "number.safetensors").is_file():
            kinds = ["digit" if k == "number" else k for k in kinds]  # warned about
        for kind in set(kinds) - set(models):
            models[kind] = load_model(f"pretrained:{kind}", dev)[0]
    found: dict[str, tuple[Prediction, np.ndarray]] = {}
    for kind in set(kinds):
        reader = models[kind]
        picked = [i for i, k in enumerate(kinds) if k == kind]
        chosen = [pictures[i] for i in picked], [names[i] for i in picked]
        helper = _digit_model(reader, models, dev) if preprocess else None
        if helper is not None:  # a number read in pieces, its lone digits by the digit reader
            models.setdefault("digit", helper)  # loaded once for the whole folder
            from digitformer.inference.pieces import read_in_pieces

            part = read_in_pieces(reader, helper, *chosen, batch_size, dev, job.canvases)
        else:
            layouts_picked = None if layouts is None else [layouts[i] for i in picked]
            part = predict_pictures(reader, *chosen, preprocess, batch_size, dev, layouts_picked)
        out.errors += part.errors
        out.unlike |= part.unlike
        out.two |= part.two
        found |= {r.file: (r, image) for r, image in zip(part.results, part.inputs)}
    for name in names:
        if name in found:
            out.results.append(found[name][0])
            out.inputs.append(found[name][1])
    return out
