"""What the training loop shows: the progress bar of an epoch, its one-line summary, and the
Braille picture of the first validation samples."""

from __future__ import annotations

import contextlib

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from digitformer.display.braille import use_color
from digitformer.training.logger import Logger
from digitformer.training.tasks import Task


@contextlib.contextmanager
def progress_bar(description: str, total: int, show: bool = True):
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
        disable=not show,
    )
    with progress:
        yield progress, progress.add_task(description, total=total, stats="")


def epoch_line(r: dict, epochs: int, metric: str) -> str:
    line = (
        f"epoch {r['epoch']}/{epochs} | train loss {r['train_loss']:.4f} acc "
        f"{100 * r['train_accuracy']:.2f}% | val loss {r['val_loss']:.4f} "
        f"{metric.replace('_', ' ')} {100 * r[f'val_{metric}']:.2f}%"
    )
    if "val_digit_accuracy" in r:
        line += f" digit {100 * r['val_digit_accuracy']:.2f}%"
    return line + f" | lr {r['lr']:.2e} | {r['seconds']:.1f}s {r['samples_per_second']:,.0f}/s"


def show_samples(task: Task, predictions, logger: Logger, epoch: int, n: int = 10) -> None:
    logger.print(f"epoch {epoch + 1}: first validation samples")
    logger.print(task.render(predictions[:n], n, color=use_color(logger.stream)))
