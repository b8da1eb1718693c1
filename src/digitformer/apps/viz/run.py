"""Make every picture for one checkpoint: the `digitformer viz` command's library half.

paths = visualize(".data/models/encoder-only-default", out_dir=".data/visualizations")
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from digitformer.apps.viz import PICTURES, attention, embeddings, training
from digitformer.inference import attention as attention_maps
from digitformer.inference.checkpoint import load_model, read_checkpoint, resolve_path
from digitformer.inference.readers import kind_of, token_strings
from digitformer.training.tasks import EvalSet, Task, task_for_checkpoint
from digitformer.utils.defaults import VIZ_DIR
from digitformer.utils.errors import DigitformerError
from digitformer.utils.runtime import pick_device
from digitformer.utils.tensors import to_float

# Per kind of reader: the images embedded by default (the original's NUM_SAMPLES: 1000 digits,
# 500 grids) and the pictures' file prefix.
DEFAULT_SAMPLES = {"digit": 1000, "grid": 500, "number": 500}
PREFIX = {"digit": "encoder_only", "grid": "encoder_decoder", "number": "numbers"}
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


@dataclass
class Drawing:
    """What the steps of one `visualize` call share."""

    model: nn.Module
    kind: str  # the reader's kind: digit, grid or number
    meta: dict
    task: Task
    data: EvalSet
    options: VizOptions
    prefix: Path
    run: str
    say: Callable[[str], None]
    embedded: embeddings.Embeddings | None = None

    def path(self, name: str) -> Path:
        return Path(f"{self.prefix}_{name}.png")


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
    _check_options(o, out_dir)
    dev = pick_device(device)
    model, meta = load_model(checkpoint, dev)
    kind = kind_of(model).name
    embeddings.check_layer(o.layer, len(model.encoder))  # before any slow step
    attention_maps.check_layer(o.attention_layer, len(model.encoder))
    meta["history"] = _run_history(checkpoint, meta)
    task = task_for_checkpoint(meta, dev, split=o.split, data_dir=data_dir)
    samples = o.samples if o.samples is not None else DEFAULT_SAMPLES[kind]
    if samples < 2:
        raise DigitformerError(f"--samples must be at least 2, got {samples}")
    prefix = Path(out_dir) / PREFIX[kind]
    run = f"{task.settings.run} (epoch {meta.get('epoch')})"
    drawing = Drawing(model, kind, meta, task, task.eval_sets[o.split], o, prefix, run, say)
    steps = _steps(o, meta)
    if kind == "number":  # a number has no one digit to embed, and no confusion matrix: say so
        skipped = [s for s in steps if s not in NUMBER_STEPS]
        if skipped:
            say(f"numbers models: {', '.join(skipped)} not drawn (attention and curves are)")
        steps = [s for s in steps if s in NUMBER_STEPS]
    written: list[Path] = []
    with _progress() as progress:
        bar = progress.add_task("viz", total=len(steps))
        for step in steps:
            progress.update(bar, description=step)
            written += STEP_FUNCTIONS[step](drawing)
            progress.advance(bar)
    return written


def _check_options(o: VizOptions, out_dir: str | Path) -> None:
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise DigitformerError(f"--out {out_dir} is a file: give a folder for the pictures")
    unknown = set(o.pictures) - set(PICTURES)
    if unknown:
        raise DigitformerError(f"unknown pictures {sorted(unknown)}: choose from {PICTURES}")
    if o.split not in ("val", "test"):
        raise DigitformerError(f"split must be val or test, got {o.split!r}")


def _embed(d: Drawing) -> list[Path]:
    o = d.options
    samples = o.samples if o.samples is not None else DEFAULT_SAMPLES[d.kind]
    d.embedded = embeddings.collect(
        d.model,
        d.data.images[:samples],
        d.data.labels[:samples],
        layer=o.layer,
        max_points=o.max_points,
        seed=o.seed,
    )
    return []


def _tsne(d: Drawing) -> list[Path]:
    coords = embeddings.tsne(d.embedded.points, d.options.seed)
    path = d.path("tsne")
    embeddings.plot_map(coords, d.embedded, f"t-SNE of {d.run}", path)
    return [path]


def _curves(d: Drawing) -> list[Path]:
    path = d.path("training_curves")
    title = f"training curves of {d.run}"
    training.training_curves(d.meta["history"], d.task.primary_metric, title, path)
    return [path]


def _confusion(d: Drawing) -> list[Path]:
    metrics, _ = d.task.evaluate(d.model, d.options.split)
    path = d.path("confusion")
    title = f"{d.run}: {d.options.split} confusion, {metrics['count']:,} samples"
    training.confusion_heatmap(metrics["confusion"], title, path)
    return [path]


def from_env(
    checkpoint: str | None, samples: int | None, env_file: str | Path | None
) -> tuple[str, int | None]:
    """The checkpoint and sample count to draw, the flags filled in from the original's
    MODEL_PATH, MODEL_TYPE and NUM_SAMPLES (environment, else .env). MODEL_TYPE, when set,
    must match the checkpoint that MODEL_PATH names. With neither a checkpoint nor MODEL_PATH,
    the bundled model of MODEL_TYPE (the digit ViT when that is unset too)."""
    from dotenv import dotenv_values

    file_values = dotenv_values(env_file) if env_file and Path(env_file).is_file() else {}
    env = {**file_values, **os.environ}
    wanted_type = env.get("MODEL_TYPE")
    bundled = "pretrained:grid" if wanted_type in ("encoder-decoder", "encoder_decoder") else None
    path = checkpoint or env.get("MODEL_PATH") or bundled or "pretrained:digit"
    if samples is None and env.get("NUM_SAMPLES"):
        try:
            samples = int(env["NUM_SAMPLES"])
        except ValueError:
            raise DigitformerError(
                f"NUM_SAMPLES must be a number, got {env['NUM_SAMPLES']!r}"
            ) from None
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


def _clusters(d: Drawing) -> list[Path]:
    emb, o, run, prefix, say = d.embedded, d.options, d.run, d.prefix, d.say
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


def _attention(d: Drawing) -> list[Path]:
    model, data, o, prefix = d.model, d.data, d.options, d.prefix
    n = min(o.attention_samples, len(data.labels))
    images, labels = data.images[:n], data.labels[:n]
    device = next(model.parameters()).device
    paths = [Path(f"{prefix}_attention_maps.png")]
    if d.kind == "number":
        n = min(n, 4)  # wide pictures: four numbers side by side
        maps = attention_maps.number_maps(model, images[:n].to(device), o.attention_layer)
        expected = token_strings(labels[:n].numpy())
        attention.plot_numbers(images[:n].numpy(), expected, maps, o.attention_layer, paths[0])
        return paths  # per-head maps of numbers: not drawn
    if d.kind == "digit":
        maps = attention_maps.vit_maps(model, images.to(device), o.attention_layer)
        attention.plot_vit(
            images.numpy(), labels.numpy(), maps, o.attention_layer, o.rollout, paths[0]
        )
        heads, what = maps["cls"], "CLS attention"
    else:
        maps = attention_maps.seq2seq_maps(model, images.to(device), o.attention_layer)
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


def _braille_epochs(d: Drawing) -> list[Path]:
    """One picture per epoch whose display the run recorded; the checkpoint's own epoch is
    drawn from the model when the run did not record it."""
    task, model, meta, prefix = d.task, d.model, d.meta, d.prefix
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


STEP_FUNCTIONS: dict[str, Callable[[Drawing], list[Path]]] = {
    "embeddings": _embed,
    "t-SNE": _tsne,
    "clustering": _clusters,
    "attention": _attention,
    "Braille epochs": _braille_epochs,
    "training curves": _curves,
    "confusion": _confusion,
}


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<16}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
