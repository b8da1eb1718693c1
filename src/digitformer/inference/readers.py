"""The one table of readers: what each kind of model reads, and everything that follows from it.

    kind = kind_of(model)                   # READERS["digit"], ["grid"] or ["number"]
    image = kind.prepare(pixels, model)     # a person's picture -> the model's input (uint8)
    tokens, probs = read(model, images)     # every model reads the same way: `model.read`

A kind names the training task that makes it, the model class, the input it reads, how a
picture is prepared for it, its test-time views and its headline metric. Callers ask the table
(or the model's `read`) instead of comparing strings that name a model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import numpy as np
import torch
from torch import nn

from digitformer.inference.attention import digit_looked, grid_looked, number_looked
from digitformer.inference.prepare import prepare, prepare_number
from digitformer.models import MODEL_TYPES, Seq2Seq, ViT
from digitformer.utils.errors import DigitformerError
from digitformer.utils.runtime import reading
from digitformer.utils.tensors import to_float

# Test-time views, (degrees, dx, dy) each: the digit itself, moved one pixel each way, and
# turned 6 degrees each way (docs/reading-pictures.md, "Test-time views").
DIGIT_VIEWS = ((0, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1), (6, 0, 0), (-6, 0, 0))
# A number is moved as a whole, a pixel each way: turning a wide canvas would lift its ends.
NUMBER_VIEWS = DIGIT_VIEWS[:5]
# A digit read below this probability is read again in its views, averaged (`read_judged`):
# on lone digits of numbers, the views' gain at a tenth of their cost (docs/numbers.md).
UNSURE = 0.9
END_TOKEN = 10  # a number's end token (the start token's id too)


@dataclass(frozen=True)
class Kind:
    """One kind of reader. `prepare(pixels, model, preprocess)` brings a grayscale picture
    (H, W) in [0, 1] to the model's uint8 input; `view_tile` is the size of the tiles that
    test-time views move one by one (None: the whole canvas)."""

    name: str  # what `--model`, `load()` and `?kind=` call it
    task: str  # the training task that makes it
    model_class: type[nn.Module]
    reads: str  # in words
    metric: str  # the headline of its evaluation
    views: tuple[tuple[int, int, int], ...]
    view_tile: int | None
    make_input: Callable[[np.ndarray, nn.Module, bool], np.ndarray]
    looked: Callable[[Any, torch.Tensor], np.ndarray]  # per digit read, where it looked

    @property
    def model_type(self) -> str:
        """The name a checkpoint stores for the model class ("encoder-only" ...)."""
        return MODEL_TYPE[self.model_class]

    def prepare(self, pixels: np.ndarray, model: nn.Module, preprocess: bool = True) -> np.ndarray:
        return self.make_input(pixels, model, preprocess)


def _digit(pixels, model, preprocess):
    return prepare(pixels, grid=False, preprocess=preprocess)


def _grid(pixels, model, preprocess):
    return prepare(pixels, grid=True, preprocess=preprocess)


def _number(pixels, model, preprocess):
    return prepare_number(pixels, *input_shape(model), preprocess)


MODEL_TYPE: dict[type[nn.Module], str] = {
    model_class: name for name, (model_class, _) in MODEL_TYPES.items()
}
READERS = {
    "digit": Kind(
        "digit", "encoder-only", ViT, "one digit", "accuracy", DIGIT_VIEWS, 28, _digit, digit_looked
    ),
    "grid": Kind(
        "grid",
        "encoder-decoder",
        Seq2Seq,
        "the four digits of a 2x2 grid",
        "sequence_accuracy",
        DIGIT_VIEWS,
        28,
        _grid,
        grid_looked,
    ),
    "number": Kind(
        "number",
        "numbers",
        Seq2Seq,
        "a number of any length",
        "exact_match",
        NUMBER_VIEWS,
        None,
        _number,
        number_looked,
    ),
}
BY_TASK = {kind.task: kind for kind in READERS.values()}


def kind_of(model: nn.Module) -> Kind:
    """A model's kind, from its class and config (an Ensemble: its members')."""
    cfg = model.cfg
    if isinstance(model, ViT) or not hasattr(cfg, "end_token"):
        return READERS["digit"]
    return READERS["number" if cfg.end_token is not None else "grid"]


def kind_of_checkpoint(meta: dict) -> Kind:
    """A checkpoint's kind, from its metadata alone (no model built)."""
    task = meta.get("settings", {}).get("task")
    if task in BY_TASK:
        return BY_TASK[task]
    config = meta.get("model_config", {})
    if meta.get("model_type") == READERS["digit"].model_type:
        return READERS["digit"]
    return READERS["number" if config.get("ending") == "end" else "grid"]


def input_shape(model: nn.Module) -> tuple[int, int]:
    """The (height, width) of the images a model reads."""
    cfg: Any = model.cfg
    return cfg.image_size, getattr(cfg, "width", cfg.image_size)


def token_strings(tokens: np.ndarray, end: int = END_TOKEN) -> list[str]:
    """(N, S) tokens read (digits, then the end token, or -100 pads) -> the digits as text."""
    out = []
    for row in np.asarray(tokens):
        stop = np.flatnonzero((row == end) | (row < 0))
        out.append("".join(map(str, row[: stop[0] if len(stop) else len(row)])))
    return out


def read(
    model: nn.Module,
    images: np.ndarray,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, H, W) inputs -> tokens (N, S) and probabilities (N, S, V), by batches: one
    position for a digit, four for a grid, a number's digits then its end token (10)."""
    if batch_size < 1:
        raise DigitformerError("batch size must be at least 1")
    tokens, probs = [], []
    for batch in torch.from_numpy(images).split(batch_size):
        x = to_float(batch.to(device))
        with reading(model, len(x)):
            t, p = cast(Any, model).read(x)  # ViT.read or Seq2Seq.read
            if partners_of(model):
                p = _with_partners(model, x, p[:, 0].float())[:, None]
                t = p.argmax(-1)
        tokens.append(t.cpu().numpy())
        probs.append(p.float().cpu().numpy())
    return np.concatenate(tokens), np.concatenate(probs)


class Judged(NamedTuple):
    """`read_judged`'s answer: tokens (N, S) and probabilities (N, S, V) as `read` gives
    them, and two judgements of a digit reader's inputs from its final CLS token, (N,) bool
    each, None where the model has no such judge: `far`, like none of the ten digits
    (`model.novelty`), and `two`, two touching digits (`model.pairs`)."""

    tokens: np.ndarray
    probs: np.ndarray
    far: np.ndarray | None
    two: np.ndarray | None


def read_judged(
    model: nn.Module,
    images: np.ndarray,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    views: bool = False,
    apart: bool = False,
) -> Judged:
    """`read`, and the digit reader's judges' verdicts on each input (`Judged`). A digit ViT's
    reading and its judgements come from one pass: all start from its final CLS token. `views`
    (a digit ViT): a digit it is unsure of (`UNSURE`) is read again in its test-time views,
    and their probabilities averaged (the judges look at the digit as it is). `apart` (whole
    pictures, not the pieces of a number): where the reader has a judge apart (`judge_of`),
    `far` is that judge's verdict or the reader's own (by the looser distance of a whole
    picture, `Novelty.whole_threshold`, where it has one: the bundle's has none)."""
    judge = judge_of(model) if apart and batch_size >= 1 and isinstance(model, ViT) else None
    judges = getattr(model, "novelty", None), getattr(model, "pairs", None)
    judged = judges != (None, None) or judge is not None
    if batch_size < 1 or (not judged and not views) or not isinstance(model, ViT):
        tokens, probs = read(model, images, batch_size, device)
        if not judged:
            return Judged(tokens, probs, None, None)
        from digitformer.inference.novelty import features

        return Judged(tokens, probs, *_verdicts(judges, features(model, images)))
    batches: list[np.ndarray] = []
    verdicts: list[tuple] = []
    for batch in torch.from_numpy(np.ascontiguousarray(images)).split(batch_size):
        x = to_float(batch.to(device))
        with reading(model, len(x)):
            cls = model.forward_features(x)[0][:, 0]
            seen = model.head(cls).float().softmax(-1)
            seen = _second_look(model, x, seen) if views else _with_partners(model, x, seen)
        batches.append(seen[:, None].cpu().numpy())
        far, two = _verdicts(judges, cls.float().cpu(), whole=judge is not None)
        if judge is not None:  # no digit where either judge says so
            with reading(judge, len(x)):
                feats = cast(ViT, judge).forward_features(x)[0][:, 0].float().cpu()
            by_judge: np.ndarray = cast(Any, judge).novelty.is_novel(feats).numpy()
            far = by_judge if far is None else (far | by_judge).astype(bool)
        verdicts.append((far, two))
    joined = np.concatenate(batches)
    far, two = (None if v[0] is None else np.concatenate(v) for v in zip(*verdicts))
    return Judged(joined.argmax(-1), joined, far, two)


def _verdicts(
    judges: tuple, feats: torch.Tensor, whole: bool = False
) -> tuple[np.ndarray | None, ...]:
    """(N, D) final CLS features -> each judge's (N,) bool verdict (None: no such judge);
    `whole`: "not a digit" by a whole picture's looser distance where the judge has one."""
    novelty, pairs = judges
    return (
        None if novelty is None else novelty.is_novel(feats, whole).numpy(),
        None if pairs is None else pairs.is_two(feats).numpy(),
    )


def partners_of(model: nn.Module) -> list[nn.Module]:
    """Other digit ViTs that a digit reader averages its readings with: the bundled one has
    two (docs/reading-pictures.md, "Three digit readers"), loaded the first time they are
    needed (`model.partner_paths`, set by `checkpoint.load_model`), so a reader whose digits
    are all sure never loads them. Its judges and attention stay the model's own."""
    found = getattr(model, "partners", None)
    if found is None:
        paths = getattr(model, "partner_paths", ())
        if not paths:
            return []
        from digitformer.inference.checkpoint import load_model

        device = next(model.parameters()).device
        found = [load_model(path, device)[0] for path in paths]
        vars(model)["partners"] = found  # a plain attribute, not one of its modules
    return found


def judge_of(model: nn.Module) -> nn.Module | None:
    """The digit ViT that says "not a digit" for a digit reader's whole pictures, apart from
    the readers (the bundled one's: taught marks that are no digit, with its own fitted
    `novelty`; docs/reading-pictures.md, "A taught judge beside the readers"), loaded the
    first time it is needed (`model.judge_path`, set by `checkpoint.load_model`); None where
    there is none."""
    found = getattr(model, "judge", None)
    if found is None:
        path = getattr(model, "judge_path", None)
        if path is None:
            return None
        from digitformer.inference.checkpoint import load_model

        found = load_model(path, next(model.parameters()).device)[0]
        if getattr(found, "novelty", None) is None:
            raise DigitformerError(f"{path}: the judge has no fitted judgement beside it")
        vars(model)["judge"] = found  # a plain attribute, not one of its modules
    return found


def _with_partners(model: nn.Module, x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """probs (B, 10), a digit ViT's own of x, averaged with its partners' (`partners_of`)."""
    partners = partners_of(model)
    if not partners:
        return probs
    return torch.stack([probs, *(p(x).float().softmax(-1) for p in partners)]).mean(0)


def _second_look(model: nn.Module, x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """probs (B, 10) of digits x (B, 1, 28, 28), the model's own; those under UNSURE averaged
    over the views, the model's and its partners' (`partners_of`): a sure digit costs one
    reading, and a reader whose digits are all sure never loads its partners."""
    from digitformer.inference.ensemble import tta_views

    unsure = probs.max(-1).values < UNSURE
    if not unsure.any():
        return probs
    doubtful = x[unsure]
    first = _with_partners(model, doubtful, probs[unsure])
    others = torch.cat(tta_views(doubtful)[1:])  # the first view is the digit as it is
    seen = _with_partners(model, others, model(others).float().softmax(-1))
    seen = seen.view(-1, int(unsure.sum()), probs.shape[-1])
    probs = probs.clone()
    probs[unsure] = torch.cat([first[None], seen]).mean(0)
    return probs


def where_looked(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """uint8 inputs (B, H, W) -> for each digit read, where the model looked: maps
    (B, S, h, w), each scaled to a maximum of 1."""
    maps = kind_of(model).looked(model, images)
    return maps / np.maximum(maps.max((-1, -2), keepdims=True), 1e-12)
