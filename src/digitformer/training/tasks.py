"""The tasks the one training loop runs: single digits (ViT) and 2x2 grids (seq2seq).

A task owns its data (uint8 tensors in memory), its batches, its loss and its evaluation;
the loop in train.py knows nothing else about it. `TASKS` is the one registry of them.

task = build_task(settings, device, with_test=True)
metrics, predictions = task.evaluate(model, "test")
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import track
from torch import nn

from digitformer.data.augment import (
    as_trained,
    random_affine,
    random_blur,
    random_stroke,
    two_loop_eights,
    with_flagged_ones,
)
from digitformer.data.grids import draw_picks, make_grids, tile_2x2
from digitformer.data.mnist import Digits, load_split
from digitformer.data.numbers import END, LAYOUTS, Numbers, draw_numbers, ink_boxes, make_numbers
from digitformer.display.braille import render_numbers, render_samples
from digitformer.inference.readers import READERS, Kind, token_strings
from digitformer.models import NUM_CLASSES, Seq2SeqConfig
from digitformer.training.metrics import digit_metrics, number_metrics, sequence_metrics
from digitformer.training.settings import TrainSettings
from digitformer.utils.defaults import DATA_DIR
from digitformer.utils.errors import DigitformerError
from digitformer.utils.runtime import reading
from digitformer.utils.tensors import to_float

STDERR = Console(stderr=True)  # progress goes to standard error: standard output stays data
VAL_SPLIT_SEED = 20240917  # fixed: every run and every sweep trial validates on the same digits
VAL_GRID_SEED = 1


def split_train_val(train: Digits, val_size: int, train_size: int | None) -> tuple[Digits, Digits]:
    """A fixed held-out validation split of the training digits (same for every seed)."""
    if val_size >= len(train):
        raise ValueError(
            f"val_size ({val_size}) must be smaller than the training set ({len(train)})"
        )
    order = np.random.default_rng(VAL_SPLIT_SEED).permutation(len(train))
    val_idx, train_idx = order[:val_size], order[val_size:]
    if train_size is not None:
        train_idx = train_idx[:train_size]
    pick = lambda idx: Digits(train.images[idx], train.labels[idx])  # noqa: E731
    return pick(np.sort(train_idx)), pick(np.sort(val_idx))


@dataclass
class EvalSet:
    images: torch.Tensor  # uint8 (N, H, W)
    labels: torch.Tensor  # (N,) or (N, 4)


class Task:
    kind: Kind  # the reader this task trains: its model type and headline metric
    extra_metrics: tuple[str, ...] = ()  # further validation metrics each epoch records

    def __init__(self, settings: TrainSettings, train: Digits, device: torch.device) -> None:
        self.settings, self.device = settings, device
        train_digits, val_digits = split_train_val(train, settings.val_size, settings.train_size)
        self.train_images = torch.from_numpy(train_digits.images).to(device)
        self.train_labels = torch.from_numpy(train_digits.labels).long().to(device)
        self.val_digits = val_digits
        self.eval_sets: dict[str, EvalSet] = {}

    @property
    def model_type(self) -> str:
        return self.kind.model_type

    @property
    def primary_metric(self) -> str:
        return self.kind.metric

    def _generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.settings.seed * 100_003 + epoch)

    def _augment(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        s = self.settings
        if not s.augment:
            return images
        return as_trained(images, gen, vars(s))

    def steps_per_epoch(self) -> int:
        return -(-self.epoch_size() // self.settings.batch_size)

    def epoch_size(self) -> int:
        raise NotImplementedError

    def train_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def loss(
        self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(mean loss, number of correct predictions, number of predictions)."""
        raise NotImplementedError

    def eval_batch(
        self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, beam_size: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean loss, predicted digits) for one batch, in eval mode."""
        raise NotImplementedError

    def add_eval_set(self, name: str, eval_set: EvalSet) -> None:
        self.eval_sets[name] = eval_set

    @torch.inference_mode()
    def evaluate(
        self, model: nn.Module, split: str, *, beam_size: int = 1, progress: bool = False
    ) -> tuple[dict[str, Any], np.ndarray]:
        """Metrics of `model` on a split ("val", or "test" when loaded), and its predictions.
        beam_size > 1: an encoder-decoder reads with beam search; `progress` shows a bar."""
        data = self.eval_sets[split]
        was_training = model.training
        model.eval()
        bs = self.settings.eval_batch_size
        total_loss = 0.0
        preds = []
        starts = range(0, len(data.labels), bs)
        bar = dict(description=f"reading {split}", transient=True, console=STDERR)
        for start in track(starts, disable=not progress, **bar):
            images = to_float(data.images[start : start + bs].to(self.device))
            labels = data.labels[start : start + bs].to(self.device)
            with reading(model, len(labels)):  # as the readers read (bf16 where it is fast)
                loss, predicted = self.eval_batch(model, images, labels, beam_size)
            total_loss += float(loss) * len(labels)
            preds.append(predicted.cpu().numpy())
        model.train(was_training)
        labels = data.labels.cpu().numpy()
        predictions = np.concatenate(preds)
        metrics = self.metrics(predictions, labels)
        metrics["loss"] = total_loss / len(labels)
        metrics["count"] = len(labels)
        return metrics, predictions

    def metrics(self, preds: np.ndarray, labels: np.ndarray) -> dict:
        raise NotImplementedError

    def render(self, predictions: np.ndarray, n: int, color: bool = False) -> str:
        """The first n validation samples in Braille, with what was read (the display)."""
        data = self.eval_sets["val"]
        return "(expected top-left, predicted bottom-right)\n" + render_samples(
            data.images[:n].numpy(), data.labels[:n].numpy(), predictions[:n], color=color
        )


class DigitTask(Task):
    """Single 28x28 digits for the encoder-only ViT."""

    kind = READERS["digit"]

    def __init__(self, settings, train: Digits, device, test: Digits | None = None) -> None:
        super().__init__(settings, train, device)
        self.add_eval_set("val", _digit_set(self.val_digits))
        if test is not None:
            self.add_eval_set("test", _digit_set(test))

    def epoch_size(self) -> int:
        return len(self.train_labels)

    def train_batches(self, epoch: int):
        gen = self._generator(epoch)
        order = torch.randperm(self.epoch_size(), generator=gen).to(self.device)
        for idx in order.split(self.settings.batch_size):
            labels = self.train_labels[idx]
            images = to_float(self.train_images[idx])
            if self.settings.augment:
                images = with_flagged_ones(images, labels, gen, self.settings.aug_ones)
            yield self._augment(images, gen), labels

    def loss(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor):
        logits = model(inputs)  # (B, 10)
        loss = F.cross_entropy(
            logits.float(), targets, label_smoothing=self.settings.label_smoothing
        )
        return loss, (logits.argmax(-1) == targets).sum(), len(targets)

    def eval_batch(
        self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, beam_size: int = 1
    ):
        logits = model(inputs).float()  # (B, 10)
        return F.cross_entropy(logits, targets), logits.argmax(-1)

    def metrics(self, preds, labels):
        return digit_metrics(preds, labels)


def _digit_set(digits: Digits) -> EvalSet:
    return EvalSet(torch.from_numpy(digits.images), torch.from_numpy(digits.labels).long())


class GridTask(Task):
    """2x2 grids of four digits for the encoder-decoder; fresh training grids every epoch."""

    kind = READERS["grid"]
    extra_metrics = ("digit_accuracy",)

    def __init__(self, settings, train: Digits, device, test: Digits | None = None) -> None:
        super().__init__(settings, train, device)
        val = make_grids(
            self.val_digits.images, self.val_digits.labels, settings.val_grids, VAL_GRID_SEED
        )
        self.add_eval_set(
            "val", EvalSet(torch.from_numpy(val.images), torch.from_numpy(val.labels).long())
        )
        if test is not None:
            grids = make_grids(test.images, test.labels, settings.test_grids, settings.test_seed)
            self.add_eval_set(
                "test",
                EvalSet(torch.from_numpy(grids.images), torch.from_numpy(grids.labels).long()),
            )

    def epoch_size(self) -> int:
        return self.settings.train_grids

    def train_batches(self, epoch: int):
        gen = self._generator(epoch)
        picks = draw_picks(
            len(self.train_labels), self.epoch_size(), seed=self.settings.seed * 100_003 + epoch
        )
        picks = torch.from_numpy(picks).to(self.device)  # (N, 4) digit indices
        for idx in picks.split(self.settings.batch_size):
            b = len(idx)
            digits = self._augment(
                to_float(self.train_images[idx.reshape(-1)]), gen
            )  # (4B, 1, 28, 28)
            grids = tile_2x2(digits.reshape(b, 4, 28, 28)).unsqueeze(1)  # (B, 1, 56, 56)
            yield grids, self.train_labels[idx]

    def loss(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor):
        logits = model(inputs, targets)  # (B, 4, 10), teacher forcing
        loss = F.cross_entropy(
            logits.float().reshape(-1, NUM_CLASSES),
            targets.reshape(-1),
            label_smoothing=self.settings.label_smoothing,
        )
        return loss, (logits.argmax(-1) == targets).sum(), targets.numel()

    def eval_batch(
        self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, beam_size: int = 1
    ):
        logits = model(inputs, targets).float()  # teacher-forced loss, as in training
        loss = F.cross_entropy(logits.reshape(-1, NUM_CLASSES), targets.reshape(-1))
        digits, _ = model.read(inputs, beam_size=beam_size)  # what generation writes
        return loss, digits

    def metrics(self, preds, labels):
        return sequence_metrics(preds, labels)


IGNORE = -100  # target positions after a number's end token: no loss, no accuracy


def number_targets(digits: torch.Tensor, lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """Digits (N, n) in reading order (anything past each length) -> decoder targets (N, steps):
    the digits, the end token, then IGNORE."""
    n = digits.shape[1]
    targets = torch.full((len(digits), steps), IGNORE, dtype=torch.long, device=digits.device)
    targets[:, :n] = digits.long()
    position = torch.arange(steps, device=digits.device)
    lengths = lengths.to(digits.device).long()[:, None]
    targets = torch.where(position == lengths, END, targets)
    return targets.masked_fill(position > lengths, IGNORE)


class NumbersTask(Task):
    """Handwritten numbers of any length (`settings.layout`: a line, or a grid with blanks)
    for the encoder-decoder with an end token; fresh numbers drawn every epoch."""

    kind = READERS["number"]
    extra_metrics = ("cer", "length_accuracy")

    def __init__(self, settings, train: Digits, device, test: Digits | None = None) -> None:
        super().__init__(settings, train, device)
        cfg = Seq2SeqConfig.from_dict(settings.model)
        if cfg.ending != "end":
            raise ValueError("the numbers task needs a model with an end token (model.ending: end)")
        if settings.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}")
        self.layout = settings.layout
        self.slots = 9 if self.layout == "grid" else cfg.max_digits  # digits a number can hold
        if cfg.max_digits < self.slots:
            raise ValueError("a grid holds up to 9 digits: model.max_digits must be at least 9")
        self.height, self.width, self.steps = cfg.image_size, cfg.width, cfg.steps
        self.zeros = torch.nonzero(self.train_labels.cpu() == 0).flatten()  # two-loop 8s
        self.add_eval_set("val", self._eval_set(self.val_digits, settings.val_grids, VAL_GRID_SEED))
        if test is not None:
            self.add_eval_set("test", self._eval_set(test, settings.test_grids, settings.test_seed))

    def make(self, digits: Digits, n: int, seed: int) -> Numbers:
        """n numbers of this task's layout and canvas from `digits`, fixed by the seed."""
        return make_numbers(
            digits.images,
            digits.labels,
            n,
            seed,
            layout=self.layout,
            max_digits=self.slots,
            height=self.height,
            width=self.width,
        )

    def _eval_set(self, digits: Digits, n: int, seed: int) -> EvalSet:
        numbers = self.make(digits, n, seed)
        targets = number_targets(
            torch.from_numpy(numbers.digits), torch.from_numpy(numbers.lengths), self.steps
        )
        return EvalSet(torch.from_numpy(numbers.images), targets)

    def epoch_size(self) -> int:
        return self.settings.train_grids

    def train_batches(self, epoch: int):
        gen = self._generator(epoch)
        picks = torch.randint(
            0, len(self.train_labels), (self.epoch_size(), self.slots), generator=gen
        )
        for idx in picks.split(self.settings.batch_size):
            flat = idx.reshape(-1)
            on_device = flat.to(self.device)
            labels = self.train_labels[on_device]
            sources = self._augment_digits(to_float(self.train_images[on_device]), labels, gen)
            images, digits, lengths = draw_numbers(
                sources[:, 0],
                labels,
                ink_boxes(sources[:, 0].cpu() * 255),  # after the pen, the rotation, the 8s
                torch.arange(len(flat)).view(idx.shape),
                gen,
                layout=self.layout,
                height=self.height,
                width=self.width,
            )
            if self.settings.augment:
                images = random_blur(images, gen, self.settings.aug_blur)
            yield images, number_targets(digits, lengths, self.steps)

    def _augment_digits(
        self, digits: torch.Tensor, labels: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        """A share of the 8s replaced by two loops and of the 1s flagged, then the pen and a small
        rotation of each digit before it is placed (its placement brings the scale, slant and
        position; shifting it here would move it off its box)."""
        s = self.settings
        if not s.augment:
            return digits
        chosen = torch.rand(len(labels), generator=gen) < s.aug_eights
        eights = torch.nonzero((labels.cpu() == 8) & chosen).flatten()
        if len(eights) and len(self.zeros):  # (a training set without 0s keeps its 8s)
            pairs = torch.randint(0, len(self.zeros), (2 * len(eights),), generator=gen)
            zeros = to_float(self.train_images[self.zeros[pairs].to(self.device)])
            digits[eights.to(self.device)] = two_loop_eights(zeros.view(-1, 2, 1, 28, 28), gen)
        digits = with_flagged_ones(digits, labels, gen, s.aug_ones)
        digits = random_stroke(digits, gen, s.aug_stroke)
        return random_affine(
            digits, gen, 0.0, s.aug_rotate, 0.0, s.aug_elastic, s.aug_elastic_sigma
        )

    def loss(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor):
        logits = model(inputs, targets)  # (B, S, 11), teacher forcing
        loss = F.cross_entropy(
            logits.float().flatten(0, 1),
            targets.reshape(-1),
            ignore_index=IGNORE,
            label_smoothing=self.settings.label_smoothing,
        )
        scored = targets != IGNORE
        right = ((logits.argmax(-1) == targets) & scored).sum()
        return loss, right, int(scored.sum())

    def eval_batch(
        self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, beam_size: int = 1
    ):
        logits = model(inputs, targets).float()
        loss = F.cross_entropy(logits.flatten(0, 1), targets.reshape(-1), ignore_index=IGNORE)
        tokens, _ = model.read(inputs, beam_size=beam_size)
        return loss, tokens

    def metrics(self, preds, labels):
        return number_metrics(preds, labels)

    def render(self, predictions: np.ndarray, n: int, color: bool = False) -> str:
        n = min(n, 4)  # a number is wide: four of them
        data = self.eval_sets["val"]
        expected = token_strings(data.labels[:n].numpy())
        return render_numbers(
            data.images[:n].numpy(), expected, token_strings(predictions[:n]), color=color
        )


TASKS: dict[str, type[Task]] = {task.kind.task: task for task in (DigitTask, GridTask, NumbersTask)}


def build_task(settings: TrainSettings, device: torch.device, with_test: bool = False) -> Task:
    """The task `settings` names, its data loaded (the test split too when asked)."""
    if settings.task not in TASKS:
        raise DigitformerError(f"unknown task {settings.task!r}; choose from {', '.join(TASKS)}")
    train = load_split(settings.data_dir, "train")
    test = load_split(settings.data_dir, "test") if with_test else None
    try:
        return TASKS[settings.task](settings, train, device, test=test)
    except ValueError as exc:
        raise DigitformerError(f"invalid settings: {exc}") from None


def task_for_checkpoint(
    meta: dict[str, Any], device: torch.device, *, split: str, data_dir: str | None = None
) -> Task:
    """The task a checkpoint was trained on, rebuilt from its settings, with `split` ready to
    evaluate: what `eval`, `viz` and the benchmarks read a checkpoint against. The data come
    from `data_dir` (default: DATA_DIR), never from a folder the checkpoint names: a
    checkpoint is input from strangers, and must not choose where files are read or written."""
    if split not in ("val", "test"):
        raise DigitformerError(f"split must be val or test, got {split!r}")
    if not isinstance(meta.get("settings"), dict):
        raise DigitformerError("the checkpoint holds no training settings")
    try:
        settings = TrainSettings(**{**meta["settings"], "device": str(device)})
    except TypeError as exc:
        message = f"the checkpoint's settings do not fit this version: {exc}"
        raise DigitformerError(message) from None
    settings.data_dir = DATA_DIR if data_dir is None else data_dir
    settings.out_dir = settings.init_encoder = ""
    if split == "test":  # validation is not read: a small data folder (a test's) does too
        settings.val_size, settings.val_grids = min(settings.val_size, 500), 100
    return build_task(settings, device, with_test=split == "test")
