"""One training loop for every task: AdamW (or Muon + AdamW), warm-up + cosine, clipping, an
optional moving average of the weights, checkpoints, resume.

digitformer train encoder-only --config default --epochs 3
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel

from digitformer.display.braille import use_color
from digitformer.inference.checkpoint import (
    load_model,
    load_train_state,
    save_checkpoint,
    save_train_state,
)
from digitformer.models import ViT, build_model
from digitformer.training.logger import Logger
from digitformer.training.settings import TrainSettings
from digitformer.training.tasks import TASKS, Task, build_task
from digitformer.utils.errors import DigitformerError
from digitformer.utils.fileio import atomic_path, remove_stale_temporaries
from digitformer.utils.runtime import (
    Dist,
    autocast,
    configure_threads,
    device_for,
    dist_env,
    init_distributed,
    pick_device,
)

STATE_FILE = "last.state.safetensors"


def lr_at(step: int, total: int, s: TrainSettings) -> float:
    """Linear warm-up to lr, then cosine decay to min_lr at the last step."""
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    progress = (step - s.warmup_steps) / max(1, total - s.warmup_steps)
    return s.min_lr + 0.5 * (s.lr - s.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(
    model: nn.Module, s: TrainSettings, fused: bool
) -> torch.optim.Optimizer | Optimizers:
    """AdamW; no weight decay on biases and norms (1-D) or what the model names in
    `no_weight_decay()` (positions, embeddings). With `optimizer: muon`, the weight matrices of
    the linear layers but the output head get Muon (orthogonalized momentum updates, its rate
    scaled to match AdamW's update size, so one `lr` serves both) and the rest AdamW."""
    named = model.no_weight_decay()
    matrices = {
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name != "head"
    }
    muon, decay, no_decay = [], [], []
    for name, p in model.named_parameters():
        if s.optimizer == "muon" and name in matrices:
            muon.append(p)
        else:
            (no_decay if p.ndim < 2 or name in named else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": s.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    adamw = torch.optim.AdamW(groups, lr=s.lr, betas=(0.9, 0.999), fused=fused or None)
    if not muon:
        return adamw
    orthogonal = torch.optim.Muon(
        muon, lr=s.lr, weight_decay=s.weight_decay, adjust_lr_fn="match_rms_adamw"
    )
    return Optimizers(orthogonal, adamw)


class Optimizers:
    """Several optimizers over disjoint parameters, stepped, scheduled and saved as one: their
    param_groups one list, their state_dict one dict indexed as if one optimizer held them all."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers
        self.param_groups = [g for o in optimizers for g in o.param_groups]

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        state, groups, offset = {}, [], 0
        for optimizer in self.optimizers:
            part = optimizer.state_dict()
            state |= {offset + i: v for i, v in part["state"].items()}
            groups += [
                {**g, "params": [offset + i for i in g["params"]]} for g in part["param_groups"]
            ]
            offset += sum(len(g["params"]) for g in part["param_groups"])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        groups, offset = list(state_dict["param_groups"]), 0
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{len(groups)} parameter groups saved, {len(self.param_groups)} here")
        for optimizer in self.optimizers:
            mine, groups = (
                groups[: len(optimizer.param_groups)],
                groups[len(optimizer.param_groups) :],
            )
            count = sum(len(g["params"]) for g in mine)
            optimizer.load_state_dict(
                {
                    "state": {
                        i - offset: v
                        for i, v in state_dict["state"].items()
                        if offset <= i < offset + count
                    },
                    "param_groups": [
                        {**g, "params": [i - offset for i in g["params"]]} for g in mine
                    ],
                }
            )
            offset += count
        self.param_groups = [g for o in self.optimizers for g in o.param_groups]


def weight_average(model: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of the weights, updated after every step (None when decay
    is 0). Its decay warms up as min(decay, (1 + n) / (10 + n)) after n updates, so that the
    first, random weights are soon forgotten."""
    if not decay:
        return None

    def update(average: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        rate = min(decay, (1 + int(n)) / (10 + int(n)))
        torch._foreach_lerp_(average, current, 1 - rate)

    return AveragedModel(model, multi_avg_fn=update)


def train(
    settings: TrainSettings,
    *,
    resume: bool = False,
    force: bool = False,
    logger: Logger | None = None,
    task: Task | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> dict[str, Any]:
    """Train a model as `settings` says; return the final summary (paths, history, best metric).

    `resume` continues the run in its folder; settings that change the run are refused
    unless `force`. `on_epoch(epoch, val_metrics)` may raise to stop early (sweeps prune so)."""
    dist = dist_env()
    device = device_for(dist, pick_device(settings.device))
    configure_threads(settings.threads)
    check_model_settings(settings)  # before any data is loaded
    run_folder(settings)
    if settings.batch_size % dist.world:
        raise DigitformerError(
            f"batch_size {settings.batch_size} does not divide among {dist.world} processes"
        )
    if not dist.main:  # only rank 0 prints, draws and logs
        settings = replace(settings, display=False, wandb=False)
        logger = Logger(stream=open(os.devnull, "w"))  # noqa: SIM115 (one per process)
    logger = logger or Logger(
        wandb=settings.wandb,
        project=settings.wandb_project,
        run_name=settings.run,
        config=settings.to_dict(),
    )
    init_distributed(device, dist)
    try:
        task = task or build_task(settings, device)
        return _train(
            settings, task, logger, device, dist, resume=resume, force=force, on_epoch=on_epoch
        )
    except RuntimeError as exc:
        if dist.active and ("Connection" in str(exc) or "timed out" in str(exc).lower()):
            raise DigitformerError(
                f"rank {dist.rank}: another process of the run stopped ({exc}); "
                "restart the run with --resume"
            ) from None
        raise
    finally:
        logger.finish()  # a failed run must not leave its W&B run open
        if dist.active:
            torch.distributed.destroy_process_group()


def _train(
    settings: TrainSettings,
    task: Task,
    logger: Logger,
    device: torch.device,
    dist: Dist,
    *,
    resume: bool,
    force: bool,
    on_epoch: Callable[[int, dict], None] | None,
) -> dict[str, Any]:
    run_dir = run_folder(settings)
    for stale in remove_stale_temporaries(run_dir) if run_dir.is_dir() and dist.main else []:
        logger.print(f"removed {stale}, left by an interrupted save")
    if resume and not (run_dir / STATE_FILE).is_file():
        if not run_dir.is_dir() or (run_dir / "last.safetensors").exists():
            raise DigitformerError(
                f"cannot resume: no run in {run_dir} with a training state "
                "(start it without --resume)"
            )
        logger.print(f"nothing of {run_dir} was saved yet: starting it from the beginning")
        resume = False
    torch.manual_seed(settings.seed)
    try:
        model = build_model(task.model_type, settings.model)
    except ValueError as exc:
        raise DigitformerError(f"invalid model settings: {exc}") from None
    if settings.init_encoder and not resume:  # a resumed run has its own weights
        _init_encoder(model, settings.init_encoder)
    model.to(device)
    optimizer = make_optimizer(model, settings, fused=device.type == "cuda")
    averaged = weight_average(model, settings.ema)
    served = averaged.module if averaged else model  # what is validated and saved
    stepper = model
    if dist.active:  # gradients averaged over the processes; `model` stays the plain module
        stepper = DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )
    stepper = torch.compile(stepper) if settings.compile else stepper
    steps_per_epoch = task.steps_per_epoch()
    total_steps = settings.epochs * steps_per_epoch
    start_epoch, step, history, best = 0, 0, [], -1.0
    if resume:
        start_epoch, step, history, best = _resume(
            run_dir, model, optimizer, averaged, settings, force
        )
        model.to(device)
        if start_epoch >= settings.epochs:
            logger.print(f"{run_dir} already finished its {settings.epochs} epochs")
        else:
            logger.print(f"resuming {run_dir} at epoch {start_epoch + 1}/{settings.epochs}")
    elif (run_dir / STATE_FILE).exists() or (run_dir / "last.safetensors").exists():
        raise DigitformerError(
            f"{run_dir} already holds a run: pass --resume to continue it, or --name NAME"
        )
    n_params = sum(p.numel() for p in model.parameters())
    logger.print(
        f"model {task.model_type}: {n_params:,} parameters on {device}; "
        f"{task.epoch_size():,} training samples/epoch, {steps_per_epoch} steps/epoch"
        + (f"; {dist.world} processes of batch {settings.batch_size // dist.world}" * dist.active)
    )
    if settings.warmup_steps >= total_steps:
        logger.print(
            f"warning: warmup_steps {settings.warmup_steps} is not shorter than the whole run "
            f"({total_steps} steps): the learning rate never reaches lr {settings.lr:g}"
        )
    for epoch in range(start_epoch, settings.epochs):
        torch.manual_seed(settings.seed * 1_000 + epoch)  # dropout: reproducible per epoch
        t0 = time.perf_counter()
        train_stats, step = _train_epoch(
            stepper, task, optimizer, settings, device, dist, epoch, step, total_steps, averaged
        )
        seconds = time.perf_counter() - t0
        if not dist.main:  # rank 0 validates, saves and decides; the others wait for it
            if _stop_after_epoch(dist, stop=False):
                break
            continue
        val, predictions = task.evaluate(served, "val")
        score = val[task.primary_metric]
        record = {
            "epoch": epoch + 1,
            "step": step,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": train_stats["loss"],
            "train_accuracy": train_stats["accuracy"],
            "val_loss": val["loss"],
            f"val_{task.primary_metric}": score,
            "seconds": seconds,
            "samples_per_second": train_stats["samples"] / seconds,
        }
        record |= {f"val_{name}": val[name] for name in task.extra_metrics}
        record["display_predictions"] = predictions[:10].tolist()  # for `viz`'s epoch pictures
        history.append(record)
        logger.print(_epoch_line(record, settings.epochs, task.primary_metric))
        logger.log(record, step)
        meta = {
            "model_type": task.model_type,
            "model_config": served.cfg.to_dict(),
            "settings": settings.to_dict(),
            "epoch": epoch + 1,
            "step": step,
            "metrics": {"val": val},
            "history": history,
        }
        check_finite(served, record)
        # The state file first: it is the epoch's commit point (weights, optimizer, history).
        info = {"epoch": epoch + 1, "step": step, "best": max(best, score), "meta": meta}
        save_train_state(run_dir / STATE_FILE, model, optimizer, info, averaged)
        last = save_checkpoint(run_dir / "last.safetensors", served, meta)
        if score > best:
            best = score
            for suffix in (".safetensors", ".json"):
                with atomic_path(run_dir / f"best{suffix}") as tmp:
                    shutil.copyfile(last.with_suffix(suffix), tmp)
        if settings.display:
            _display(task, predictions, logger, epoch)
        try:
            if on_epoch is not None:
                on_epoch(epoch, val)
        except BaseException:
            _stop_after_epoch(dist, stop=True)  # a pruned trial stops every process
            raise
        _stop_after_epoch(dist, stop=False)
    return {"run_dir": str(run_dir), "best": best, "history": history, "steps": step}


def _stop_after_epoch(dist: Dist, stop: bool) -> bool:
    """Rank 0 tells the others, after its validation and saves, whether the run goes on."""
    if not dist.active:
        return stop
    flag = torch.tensor([int(stop)])
    torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


def _train_epoch(
    model: nn.Module,
    task: Task,
    optimizer: torch.optim.Optimizer,
    s: TrainSettings,
    device: torch.device,
    dist: Dist,
    epoch: int,
    step: int,
    total_steps: int,
    averaged: AveragedModel | None = None,
) -> tuple[dict[str, float], int]:
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = samples = 0
    steps = task.steps_per_epoch()
    t0 = time.perf_counter()
    with _progress(f"epoch {epoch + 1}/{s.epochs}", steps, dist.main) as (progress, bar):
        for i, (inputs, targets) in enumerate(task.train_batches(epoch)):
            if dist.active:
                # Every process draws the same global batch (same seed, same augmentation);
                # each trains on its own slice, and DDP averages the gradients.
                if len(targets) < dist.world:
                    continue  # a last batch too small to share: skipped by every process
                inputs = inputs.tensor_split(dist.world)[dist.rank]
                targets = targets.tensor_split(dist.world)[dist.rank]
            lr = lr_at(step, total_steps, s)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(device):
                loss, right, n = task.loss(model, inputs, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if s.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            optimizer.step()
            if averaged is not None:
                averaged.update_parameters(model)
            step += 1
            loss_sum += loss.detach() * len(targets)
            correct += right
            count += n
            samples += len(targets)
            # the bar moves every step on the CPU; on a GPU every 20 (a sync would stall it)
            if device.type == "cpu" or i % 20 == 19 or i == steps - 1:
                if not math.isfinite(loss_sum.item()):
                    raise DigitformerError(
                        f"training diverged in epoch {epoch + 1} (the loss is not finite at "
                        f"step {step}): nothing of this epoch was saved; lower the learning rate"
                    )
                rate = samples / (time.perf_counter() - t0)
                progress.update(
                    bar,
                    completed=i + 1,
                    stats=(
                        f"loss {loss_sum.item() / samples:.4f}  "
                        f"acc {100 * correct.item() / count:.2f}%"
                        f"  {rate:,.0f} samples/s"
                    ),
                )
    totals = torch.tensor([loss_sum.item(), correct.item(), count, samples], dtype=torch.float64)
    if dist.active:  # the epoch's statistics over every process
        torch.distributed.all_reduce(totals)
    loss_total, correct_total, count, samples = totals.tolist()
    return {
        "loss": loss_total / samples,
        "accuracy": correct_total / count,
        "samples": int(samples),
    }, step


@contextlib.contextmanager
def _progress(description: str, total: int, show: bool = True):
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


def _epoch_line(r: dict, epochs: int, metric: str) -> str:
    line = (
        f"epoch {r['epoch']}/{epochs} | train loss {r['train_loss']:.4f} acc "
        f"{100 * r['train_accuracy']:.2f}% | val loss {r['val_loss']:.4f} "
        f"{metric.replace('_', ' ')} {100 * r[f'val_{metric}']:.2f}%"
    )
    if "val_digit_accuracy" in r:
        line += f" digit {100 * r['val_digit_accuracy']:.2f}%"
    return line + f" | lr {r['lr']:.2e} | {r['seconds']:.1f}s {r['samples_per_second']:,.0f}/s"


def _display(task: Task, predictions, logger: Logger, epoch: int, n: int = 10) -> None:
    logger.print(f"epoch {epoch + 1}: first validation samples")
    logger.print(task.render(predictions[:n], n, color=use_color(logger.stream)))


def _init_encoder(model: nn.Module, path: str) -> None:
    """Start an encoder-decoder's encoder from the encoder-only checkpoint at `path` (a run, a
    file, or a bundled model such as pretrained:digit)."""
    if not path.startswith("pretrained:") and not Path(path).exists():
        raise DigitformerError(f"init_encoder: no run at {path}; train that encoder-only run first")
    try:
        vit, _ = load_model(path)
    except DigitformerError as exc:
        raise DigitformerError(f"init_encoder: {exc}") from None
    if not isinstance(vit, ViT):
        raise DigitformerError(f"init_encoder: {path} is not an encoder-only checkpoint")
    try:
        model.init_encoder_from(vit)
    except ValueError as exc:
        raise DigitformerError(f"init_encoder: cannot use {path}: {exc}") from None


# Settings that do not change what is trained: free to differ when a run is resumed.
RESUME_FREE = (
    "device",
    "threads",
    "display",
    "wandb",
    "wandb_project",
    "compile",
    "eval_batch_size",
    "data_dir",
    "out_dir",
    "run",
    "profile",
)


def _resume(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | Optimizers,
    averaged: AveragedModel | None,
    settings: TrainSettings,
    force: bool,
) -> tuple[int, int, list[dict], float]:
    def same_settings(info: dict) -> None:
        """Refuse, before any weight is restored, settings that would change the run."""
        saved, now = info["meta"].get("settings", {}), settings.to_dict()
        differ = sorted(
            k for k in set(saved) | set(now) if k not in RESUME_FREE and saved.get(k) != now.get(k)
        )
        if differ and not force:
            changes = ", ".join(f"{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in differ[:4])
            raise DigitformerError(
                f"cannot resume {run_dir} with other settings ({changes}): "
                "pass --force to continue it anyway, or start a new --run"
            )

    info = load_train_state(run_dir / STATE_FILE, model, optimizer, averaged, same_settings)
    meta = info["meta"]
    return info["epoch"], info["step"], meta["history"], info["best"]


def run_folder(settings: TrainSettings) -> Path:
    """OUT_DIR/RUN; a run name is one folder name, never a path out of OUT_DIR."""
    name = settings.run
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise DigitformerError(f"run name {name!r} must be a plain folder name (no / or ..)")
    return Path(settings.out_dir) / name


def check_model_settings(settings: TrainSettings) -> None:
    """The model the settings describe can be built (checked on the meta device: no memory)."""
    if settings.task not in TASKS:
        raise DigitformerError(f"unknown task {settings.task!r}; choose from {', '.join(TASKS)}")
    try:
        with torch.device("meta"):
            build_model(TASKS[settings.task].kind.model_type, settings.model)
    except (TypeError, ValueError) as exc:
        raise DigitformerError(f"invalid model settings: {exc}") from None


def check_finite(model: nn.Module, record: dict) -> None:
    """Stop, saving nothing, when training diverged: a NaN or infinite loss or weight."""
    if not math.isfinite(record["train_loss"]) or not all(
        bool(torch.isfinite(p).all()) for p in model.parameters()
    ):
        raise DigitformerError(
            f"training diverged in epoch {record['epoch']} (loss {record['train_loss']}): "
            "nothing of this epoch was saved; lower the learning rate or resume from the last epoch"
        )
