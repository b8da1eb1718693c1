"""Make every picture for one checkpoint: the `digitformer viz` command's library half.

paths = visualize(".data/models/encoder-only-default", out_dir=".data/visualizations")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from digitformer.checkpoint import load_model, read_checkpoint, resolve_path
from digitformer.defaults import VIZ_DIR
from digitformer.errors import DigitformerError
from digitformer.metrics import number_strings
from digitformer.models import reader_kind
from digitformer.runtime import pick_device
from digitformer.tasks import Task, task_for_checkpoint
from digitformer.tensors import to_float
from digitformer.viz import PICTURES, attention, embeddings, training

DEFAULT_SAMPLES = {"encoder-only": 1000, "encoder-decoder": 500}  # the original's NUM_SAMPLES
NUMBER_STEPS = ("attention", "training curves")  # what a numbers model's pictures are


@dataclass
class VizOptions:
    samples: int | None = None  # images (digits or grids) to embed; None: per model type
    layer: int | None = None  # embeddings after this block (0: patch embedding; None: last)
    attention_layer: int = 1
    attention_samples: int = 6
    heads: bool = False  # per-head attention panels too
    rollout: bool = False  # attention rollout row too
    cluster: str = "hdbscan"
    max_points: int = 5000
    split: str = "test"
    pictures: tuple[str, ...] = PICTURES
    seed: int = 0


def visualize(
    checkpoint: str | Path,
    out_dir: str | Path = VIZ_DIR,
    options: VizOptions | None = None,
    *,
    data_dir: str | None = None,
    device: str = "auto",
    say=print,
) -> list[Path]:
    """Write the chosen pictures for `checkpoint` into `out_dir`; return their paths."""
    o = options or VizOptions()
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise DigitformerError(f"--out {out_dir} is a file: give a folder for the pictures")
    unknown = set(o.pictures) - set(PICTURES)
    if unknown:
        raise DigitformerError(f"unknown pictures {sorted(unknown)}: choose from {PICTURES}")
    if o.split not in ("val", "test"):
        raise DigitformerError(f"split must be val or test, got {o.split!r}")
    dev = pick_device(device)
    model, meta = load_model(checkpoint, dev)
    model_type = meta["model_type"]
    numbers = reader_kind(model) == "number"
    depth = len(model.blocks if model_type == "encoder-only" else model.encoder)
    embeddings.check_layer(o.layer, depth)  # before any slow step
    attention.check_layer(o.attention_layer, depth)
    meta["history"] = _run_history(checkpoint, meta)
    task = task_for_checkpoint(meta, dev, split=o.split, data_dir=data_dir)
    settings = task.settings
    data = task.eval_sets[o.split]
    samples = o.samples if o.samples is not None else DEFAULT_SAMPLES[model_type]
    if samples < 2:
        raise DigitformerError(f"--samples must be at least 2, got {samples}")
    images, labels = data.images[:samples], data.labels[:samples]
    prefix = Path(out_dir) / ("numbers" if numbers else model_type.replace("-", "_"))
    run = f"{settings.run} (epoch {meta.get('epoch')})"
    written: list[Path] = []

    def out(name: str) -> Path:
        path = Path(f"{prefix}_{name}.png")
        written.append(path)
        return path

    steps = _steps(o, meta)
    if numbers:  # a number has no one digit to embed, and no confusion matrix: say so
        skipped = [s for s in steps if s not in NUMBER_STEPS]
        if skipped:
            say(f"numbers models: {', '.join(skipped)} not drawn (attention and curves are)")
        steps = [s for s in steps if s in NUMBER_STEPS]
    with _progress() as progress:
        bar = progress.add_task("viz", total=len(steps))
        for step in steps:
            progress.update(bar, description=step)
            if step == "embeddings":
                emb = embeddings.collect(
                    model,
                    model_type,
                    images,
                    labels,
                    layer=o.layer,
                    max_points=o.max_points,
                    seed=o.seed,
                )
            elif step == "t-SNE":
                coords = embeddings.tsne(emb.points, o.seed)
                embeddings.plot_map(coords, emb, f"t-SNE of {run}", out("tsne"))
            elif step == "clustering":
                written += _clusters(emb, o, run, prefix, say)
            elif step == "attention":
                written += _attention(model, model_type, data, o, prefix)
            elif step == "Braille epochs":
                written += _braille_epochs(task, model, meta, prefix)
            elif step == "training curves":
                training.training_curves(
                    meta["history"],
                    task.primary_metric,
                    f"training curves of {run}",
                    out("training_curves"),
                )
            elif step == "confusion":
                metrics, _ = task.evaluate(model, o.split)
                training.confusion_heatmap(
                    metrics["confusion"],
                    f"{run}: {o.split} confusion, {metrics['count']:,} samples",
                    out("confusion"),
                )
            progress.advance(bar)
    return written


def from_env(
    checkpoint: str | None, samples: int | None, env_file: str | Path | None
) -> tuple[str, int | None]:
    """The checkpoint and sample count to draw, the flags filled in from the original's
    MODEL_PATH, MODEL_TYPE and NUM_SAMPLES (environment, else .env). MODEL_TYPE, when set,
    must match the checkpoint that MODEL_PATH names."""
    from dotenv import dotenv_values

    file_values = dotenv_values(env_file) if env_file and Path(env_file).is_file() else {}
    env = {**file_values, **os.environ}
    path = checkpoint or env.get("MODEL_PATH")
    if not path:
        raise DigitformerError("give a checkpoint (or set MODEL_PATH)")
    if samples is None and env.get("NUM_SAMPLES"):
        try:
            samples = int(env["NUM_SAMPLES"])
        except ValueError:
            raise DigitformerError(
                f"NUM_SAMPLES must be a number, got {env['NUM_SAMPLES']!r}"
            ) from None
    wanted_type = env.get("MODEL_TYPE")
    if wanted_type and not checkpoint:
        actual = read_checkpoint(path)[1]["model_type"]
        if wanted_type.replace("_", "-") != actual:
            raise DigitformerError(f"MODEL_TYPE is {wanted_type} but {path} is {actual}")
    return path, samples


def _run_history(checkpoint, meta: dict) -> list[dict]:
    """The whole run's history: a best checkpoint only knows the epochs up to itself, so the
    run's last checkpoint beside it is read when there is one."""
    last = resolve_path(checkpoint).with_name("last.safetensors")
    history = meta.get("history", [])
    if last.is_file():
        history = max(history, read_checkpoint(last)[1].get("history", []), key=len)
    return history


# (picture, step) in the order they run; the embeddings feed both t-SNE and clustering
STEPS = (
    ("tsne", "embeddings"),
    ("clusters", "embeddings"),
    ("tsne", "t-SNE"),
    ("clusters", "clustering"),
    ("attention", "attention"),
    ("braille", "Braille epochs"),
    ("confusion", "confusion"),
    ("curves", "training curves"),
)


def _steps(o: VizOptions, meta: dict) -> list[str]:
    steps = [step for picture, step in STEPS if picture in o.pictures]
    if not meta.get("history"):  # nothing to draw curves from
        steps = [step for step in steps if step != "training curves"]
    return list(dict.fromkeys(steps))


def _clusters(emb, o: VizOptions, run: str, prefix: Path, say) -> list[Path]:
    clusters, method = embeddings.cluster(emb.points, o.cluster, o.seed)
    scores = embeddings.cluster_scores(clusters, emb.digits)
    say(
        f"{method} on {emb.what}: {scores['clusters']} clusters, purity {scores['purity']:.3f}, "
        f"adjusted Rand index {scores['ari']:.3f}, noise {100 * scores['noise']:.1f}%"
    )
    key = "hdbscan" if method == "HDBSCAN" else "kmeans"
    paths = [Path(f"{prefix}_pca_{key}.png")]
    embeddings.plot_clusters(
        embeddings.pca(emb.points, 2), emb, clusters, method, scores, f"PCA of {run}", paths[0]
    )
    if embeddings.umap_available():
        paths.append(Path(f"{prefix}_umap_{key}.png"))
        coords = embeddings.umap_2d(emb.points, o.seed)
        embeddings.plot_clusters(coords, emb, clusters, method, scores, f"UMAP of {run}", paths[1])
    return paths


def _attention(model: nn.Module, model_type: str, data, o: VizOptions, prefix: Path) -> list[Path]:
    n = min(o.attention_samples, len(data.labels))
    images, labels = data.images[:n], data.labels[:n]
    device = next(model.parameters()).device
    paths = [Path(f"{prefix}_attention_maps.png")]
    if reader_kind(model) == "number":
        n = min(n, 4)  # wide pictures: four numbers side by side
        maps = attention.number_maps(model, images[:n].to(device), o.attention_layer)
        expected = number_strings(labels[:n].numpy())
        attention.plot_numbers(images[:n].numpy(), expected, maps, o.attention_layer, paths[0])
        return paths  # per-head maps of numbers: not drawn
    if model_type == "encoder-only":
        maps = attention.vit_maps(model, images.to(device), o.attention_layer)
        attention.plot_vit(
            images.numpy(), labels.numpy(), maps, o.attention_layer, o.rollout, paths[0]
        )
        heads, what = maps["cls"], "CLS attention"
    else:
        maps = attention.seq2seq_maps(model, images.to(device), o.attention_layer)
        attention.plot_seq2seq(
            images.numpy(), labels.numpy(), maps, o.attention_layer, o.rollout, paths[0]
        )
        heads, what = maps["received"], "encoder attention received"
    if o.heads:
        paths.append(Path(f"{prefix}_attention_heads.png"))
        attention.plot_heads(
            images.numpy(), heads, f"block {o.attention_layer}: {what} per head", paths[1]
        )
    return paths


def _braille_epochs(task: Task, model: nn.Module, meta: dict, prefix: Path) -> list[Path]:
    """One picture per epoch whose display the run recorded; the checkpoint's own epoch is
    drawn from the model when the run did not record it."""
    val = task.eval_sets["val"]
    shown = {
        r["epoch"]: np.asarray(r["display_predictions"])
        for r in meta.get("history", [])
        if "display_predictions" in r
    }
    epoch = meta.get("epoch") or 0
    if epoch not in shown:
        device = next(model.parameters()).device
        with torch.inference_mode():
            _, preds = task.eval_batch(
                model, to_float(val.images[:10].to(device)), val.labels[:10].to(device)
            )
        shown[epoch] = preds.cpu().numpy()
    paths = []
    for e, preds in sorted(shown.items()):
        n = len(preds)
        path = Path(f"{prefix}_epoch{e}.png")
        training.braille_picture(
            val.images[:n].numpy(),
            val.labels[:n].numpy(),
            preds,
            f"epoch {e}: first {n} validation samples (expected top-left, predicted bottom-right)",
            path,
        )
        paths.append(path)
    return paths


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<16}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
