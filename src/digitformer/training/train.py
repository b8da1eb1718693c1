"""One training loop for every task: AdamW (or Muon + AdamW), warm-up + cosine, clipping, an
optional moving average of the weights, checkpoints, resume.

digitformer train encoder-only --config default --epochs 3
"""

from __future__ import annotations

import fcntl
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel

from digitformer.inference.checkpoint import (
    load_model,
    load_train_state,
    save_checkpoint,
    save_train_state,
)
from digitformer.models import ViT, build_model
from digitformer.training.logger import Logger
from digitformer.training.optim import Optimizers, lr_at, make_optimizer, weight_average
from digitformer.training.progress import epoch_line, progress_bar, show_samples
from digitformer.training.settings import TrainSettings
from digitformer.training.tasks import TASKS, Task, build_task
from digitformer.utils.errors import DigitformerError
from digitformer.utils.fileio import atomic_path, plain_name, remove_stale_temporaries
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
        started = time.perf_counter()  # `elapsed`: from here, the data loaded
        run = _start(settings, task, logger, device, dist, resume=resume, force=force)
        run.started = started
        try:
            return _train(run, on_epoch)
        finally:
            if run.claim is not None:
                run.claim.close()  # the run folder is free for the next training
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


@dataclass
class Run:
    """One training run as the loop steps it: the task, the model (plain, as the loop wraps it
    for the step, and as validated and saved), the optimizer, where it stands, its history."""

    settings: TrainSettings
    task: Task
    logger: Logger
    device: torch.device
    dist: Dist
    folder: Path
    model: nn.Module
    optimizer: torch.optim.Optimizer | Optimizers
    averaged: AveragedModel | None
    stepper: nn.Module  # what a step runs: the model, under DDP and torch.compile when asked
    epoch: int = 0  # epochs done
    step: int = 0
    history: list[dict] = field(default_factory=list)
    best: float = -1.0
    claim: IO | None = None  # the locked claim on the folder while this process trains in it
    started: float = 0.0  # perf_counter() when this process's data was loaded (or resumed)

    @property
    def served(self) -> nn.Module:
        """What is validated and saved: the weights' average when the run keeps one."""
        return self.averaged.module if self.averaged is not None else self.model

    @property
    def total_steps(self) -> int:
        return self.settings.epochs * self.task.steps_per_epoch()


def _train(run: Run, on_epoch: Callable[[int, dict], None] | None) -> dict[str, Any]:
    """The epochs left: train, then (rank 0) validate and save, then ask `on_epoch`."""
    settings, dist = run.settings, run.dist
    for epoch in range(run.epoch, settings.epochs):
        torch.manual_seed(settings.seed * 1_000 + epoch)  # dropout: reproducible per epoch
        t0 = time.perf_counter()
        train_stats = _train_epoch(run, epoch)
        seconds = time.perf_counter() - t0
        if not dist.main:  # rank 0 validates, saves and decides; the others wait for it
            if _stop_after_epoch(dist, stop=False):
                break
            continue
        val = _validate_and_save(run, epoch, train_stats, seconds)
        try:
            if on_epoch is not None:
                on_epoch(epoch, val)
        except BaseException:
            _stop_after_epoch(dist, stop=True)  # a pruned trial stops every process
            raise
        _stop_after_epoch(dist, stop=False)
    return {"run_dir": str(run.folder), "best": run.best, "history": run.history, "steps": run.step}


def _start(
    settings: TrainSettings,
    task: Task,
    logger: Logger,
    device: torch.device,
    dist: Dist,
    *,
    resume: bool,
    force: bool,
) -> Run:
    """The run's model and optimizer, fresh or resumed from its folder, ready for its next
    epoch; refuses a folder that already holds another run."""
    folder = run_folder(settings)
    for stale in remove_stale_temporaries(folder) if folder.is_dir() and dist.main else []:
        logger.print(f"removed {stale}, left by an interrupted save")
    if resume and not (folder / STATE_FILE).is_file():
        if not folder.is_dir() or (folder / "last.safetensors").exists():
            raise DigitformerError(
                f"cannot resume: no run in {folder} with a training state "
                "(start it without --resume)"
            )
        logger.print(f"nothing of {folder} was saved yet: starting it from the beginning")
        resume = False
    if not resume and ((folder / STATE_FILE).exists() or (folder / "last.safetensors").exists()):
        raise DigitformerError(
            f"{folder} already holds a run: pass --resume to continue it, or --name NAME"
        )
    claim = _claim(folder) if dist.main else None
    model = _build(settings, task, init=not resume).to(device)
    averaged = weight_average(model, settings.ema)
    stepper = model
    if dist.active:  # gradients averaged over the processes; `model` stays the plain module
        stepper = DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )
    stepper = torch.compile(stepper) if settings.compile else stepper
    optimizer = make_optimizer(model, settings, fused=device.type == "cuda")
    run = Run(settings, task, logger, device, dist, folder, model, optimizer, averaged, stepper)
    run.claim = claim
    if resume:
        _resume(run, force)
    _introduce(run)
    return run


def _claim(folder: Path) -> IO:
    """Claim the run folder for this training: a second training into it, while this one runs,
    is refused (both would save, and only the last to finish would survive). The claim is an
    advisory lock the system drops when the process ends, however it ends."""
    folder.mkdir(parents=True, exist_ok=True)
    claim = open(folder / ".training.lock", "w")  # noqa: SIM115 (held for the whole run)
    try:
        fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        claim.close()
        raise DigitformerError(
            f"another training is running in {folder}: wait for it to end, or use --name NAME"
        ) from None
    return claim


def _build(settings: TrainSettings, task: Task, init: bool) -> nn.Module:
    torch.manual_seed(settings.seed)
    try:
        model = build_model(task.model_type, settings.model)
    except ValueError as exc:
        raise DigitformerError(f"invalid model settings: {exc}") from None
    if settings.init_encoder and init:  # a resumed run has its own weights
        _init_encoder(model, settings.init_encoder)
    return model


def _introduce(run: Run) -> None:
    s, task, dist = run.settings, run.task, run.dist
    n_params = sum(p.numel() for p in run.model.parameters())
    run.logger.print(
        f"model {task.model_type}: {n_params:,} parameters on {run.device}; "
        f"{task.epoch_size():,} training samples/epoch, {task.steps_per_epoch()} steps/epoch"
        + (f"; {dist.world} processes of batch {s.batch_size // dist.world}" * dist.active)
    )
    if s.warmup_steps >= run.total_steps:
        run.logger.print(
            f"warning: warmup_steps {s.warmup_steps} is not shorter than the whole run "
            f"({run.total_steps} steps): the learning rate never reaches lr {s.lr:g}"
        )


def _validate_and_save(run: Run, epoch: int, train_stats: dict, seconds: float) -> dict:
    """Validate the epoch's model, record it, save the state, last and (if better) best: -> val."""
    task, served = run.task, run.served
    val, predictions = task.evaluate(served, "val")
    score = val[task.primary_metric]
    record = {
        "epoch": epoch + 1,
        "step": run.step,
        "lr": run.optimizer.param_groups[0]["lr"],
        "train_loss": train_stats["loss"],
        "train_accuracy": train_stats["accuracy"],
        "val_loss": val["loss"],
        f"val_{task.primary_metric}": score,
        "seconds": seconds,
        "samples_per_second": train_stats["samples"] / seconds,
        "elapsed": time.perf_counter() - run.started,  # since the data was loaded, validation too
    }
    record |= {f"val_{name}": val[name] for name in task.extra_metrics}
    record["display_predictions"] = predictions[:10].tolist()  # for `viz`'s epoch pictures
    run.history.append(record)
    run.logger.print(epoch_line(record, run.settings.epochs, task.primary_metric))
    run.logger.log(record, run.step)
    meta = {
        "model_type": task.model_type,
        "model_config": served.cfg.to_dict(),
        "settings": run.settings.to_dict(),
        "epoch": epoch + 1,
        "step": run.step,
        "metrics": {"val": val},
        "history": run.history,
    }
    check_finite(served, record)
    # The state file first: it is the epoch's commit point (weights, optimizer, history).
    info = {"epoch": epoch + 1, "step": run.step, "best": max(run.best, score), "meta": meta}
    save_train_state(run.folder / STATE_FILE, run.model, run.optimizer, info, run.averaged)
    last = save_checkpoint(run.folder / "last.safetensors", served, meta)
    if score > run.best:
        run.best = score
        for suffix in (".safetensors", ".json"):
            with atomic_path(run.folder / f"best{suffix}") as tmp:
                shutil.copyfile(last.with_suffix(suffix), tmp)
    if run.settings.display:
        show_samples(task, predictions, run.logger, epoch)
    return val


def _stop_after_epoch(dist: Dist, stop: bool) -> bool:
    """Rank 0 tells the others, after its validation and saves, whether the run goes on."""
    if not dist.active:
        return stop
    flag = torch.tensor([int(stop)])
    torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


def _train_epoch(run: Run, epoch: int) -> dict[str, float]:
    """One epoch of steps; -> its loss, accuracy and samples over every process."""
    s, dist, device = run.settings, run.dist, run.device
    run.stepper.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = samples = 0
    steps = run.task.steps_per_epoch()
    t0 = time.perf_counter()
    with progress_bar(f"epoch {epoch + 1}/{s.epochs}", steps, dist.main) as (progress, bar):
        for i, (inputs, targets) in enumerate(run.task.train_batches(epoch)):
            if dist.active:
                # Every process draws the same global batch (same seed, same augmentation);
                # each trains on its own slice, and DDP averages the gradients.
                if len(targets) < dist.world:
                    continue  # a last batch too small to share: skipped by every process
                inputs = inputs.tensor_split(dist.world)[dist.rank]
                targets = targets.tensor_split(dist.world)[dist.rank]
            loss, right, n = _step(run, inputs, targets)
            loss_sum += loss.detach() * len(targets)
            correct += right
            count += n
            samples += len(targets)
            # the bar moves every step on the CPU; on a GPU every 20 (a sync would stall it)
            if device.type == "cpu" or i % 20 == 19 or i == steps - 1:
                if not math.isfinite(loss_sum.item()):
                    raise DigitformerError(
                        f"training diverged in epoch {epoch + 1} (the loss is not finite at "
                        f"step {run.step}): nothing of this epoch was saved; lower the "
                        "learning rate"
                    )
                rate = samples / (time.perf_counter() - t0)
                stats = (
                    f"loss {loss_sum.item() / samples:.4f}  "
                    f"acc {100 * correct.item() / count:.2f}%  {rate:,.0f} samples/s"
                )
                progress.update(bar, completed=i + 1, stats=stats)
    totals = torch.tensor([loss_sum.item(), correct.item(), count, samples], dtype=torch.float64)
    if dist.active:  # the epoch's statistics over every process
        torch.distributed.all_reduce(totals)
    loss_total, correct_total, count, samples = totals.tolist()
    return {"loss": loss_total / samples, "accuracy": correct_total / count, "samples": samples}


def _step(run: Run, inputs: torch.Tensor, targets: torch.Tensor):
    """One optimizer step at the schedule's rate; -> (loss, correct, predictions)."""
    for group in run.optimizer.param_groups:
        group["lr"] = lr_at(run.step, run.total_steps, run.settings)
    with autocast(run.device, run.settings.precision):
        loss, right, n = run.task.loss(run.stepper, inputs, targets)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if run.settings.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(run.stepper.parameters(), run.settings.grad_clip)
    run.optimizer.step()
    if run.averaged is not None:
        run.averaged.update_parameters(run.model)
    run.step += 1
    return loss, right, n


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
    "precision",
    "eval_batch_size",
    "data_dir",
    "out_dir",
    "run",
    "profile",
)


def _resume(run: Run, force: bool) -> None:
    """Restore the run's weights, optimizer and place from its training state; settings that
    would change the run are refused (before anything is restored) unless `force`."""
    now = run.settings.to_dict()

    def same_settings(info: dict) -> None:
        saved = info["meta"].get("settings", {})
        differ = sorted(
            k for k in set(saved) | set(now) if k not in RESUME_FREE and saved.get(k) != now.get(k)
        )
        if differ and not force:
            changes = ", ".join(f"{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in differ[:4])
            raise DigitformerError(
                f"cannot resume {run.folder} with other settings ({changes}): "
                "pass --force to continue it anyway, or start a new --run"
            )

    state = run.folder / STATE_FILE
    info = load_train_state(state, run.model, run.optimizer, run.averaged, same_settings)
    run.model.to(run.device)
    run.epoch, run.step, run.best = info["epoch"], info["step"], info["best"]
    run.history = info["meta"]["history"]
    if run.epoch >= run.settings.epochs:
        run.logger.print(f"{run.folder} already finished its {run.settings.epochs} epochs")
    else:
        run.logger.print(f"resuming {run.folder} at epoch {run.epoch + 1}/{run.settings.epochs}")


def run_folder(settings: TrainSettings) -> Path:
    """OUT_DIR/RUN; a run name is one folder name, never a path out of OUT_DIR."""
    return Path(settings.out_dir) / plain_name(settings.run, "run name")


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
