"""Token embeddings, their 2-D maps (t-SNE, PCA, UMAP) and clusters (HDBSCAN, K-Means).

For the encoder-only model a point is an image's CLS token; for the encoder-decoder a point is
one patch token, coloured by the digit of its own quadrant (the original coloured every patch
by the first digit of its grid, which mixes four digits under one colour).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from digitformer.apps.viz.plots import figure, save
from digitformer.models import ViT
from digitformer.utils.errors import DigitformerError
from digitformer.utils.tensors import to_float

DIGIT_COLORS = "tab10"


@dataclass
class Embeddings:
    points: np.ndarray  # (N, D)
    digits: np.ndarray  # (N,) the digit each point belongs to
    what: str  # e.g. "CLS token after block 4 of 4", for titles


def patch_quadrants(side: int) -> np.ndarray:
    """(side*side,) quadrant index (0 TL, 1 TR, 2 BL, 3 BR) of each row-major patch."""
    rows, cols = np.divmod(np.arange(side * side), side)
    return (rows >= side // 2) * 2 + (cols >= side // 2)


def layer_name(layer: int | None, depth: int) -> str:
    if layer == 0:
        return "after the patch embedding"
    return f"after block {depth if layer is None else layer} of {depth}"


def check_layer(layer: int | None, depth: int) -> None:
    if layer is not None and not 0 <= layer <= depth:
        raise DigitformerError(f"--layer must be between 0 and {depth} for this model, got {layer}")


@torch.inference_mode()
def collect(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    layer: int | None = None,
    max_points: int = 5000,
    seed: int = 0,
    batch_size: int = 256,
) -> Embeddings:
    """Embeddings of uint8 `images` (N, H, W) after `layer` blocks (None: all, 0: none)."""
    depth, cls = len(model.encoder), isinstance(model, ViT)  # a ViT embeds its CLS token
    check_layer(layer, depth)
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = to_float(images[start : start + batch_size].to(device))
        tokens, _ = model.forward_features(batch, layers=layer)
        if cls:
            # the CLS token is one learned vector before any block: use the patches' mean there
            tokens = tokens[:, 1:].mean(1) if layer == 0 else tokens[:, 0]
        chunks.append(tokens.float().cpu().numpy())
    points = np.concatenate(chunks)
    labels = labels.numpy()
    if cls:
        token = "mean patch embedding" if layer == 0 else "CLS token"
        return Embeddings(points, labels, f"{token} {layer_name(layer, depth)}")
    side = model.cfg.patch_side
    digits = labels[:, patch_quadrants(side)]  # (N, T): each patch's own quadrant's digit
    points, digits = points.reshape(-1, points.shape[-1]), digits.reshape(-1)
    if len(points) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(points), max_points, replace=False))
        points, digits = points[keep], digits[keep]
    return Embeddings(points, digits, f"patch tokens {layer_name(layer, depth)}")


def tsne(points: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(points) - 1) / 3)
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)


def pca(points: np.ndarray, dims: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    return PCA(min(dims, *points.shape)).fit_transform(points)


def umap_available() -> bool:
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def umap_2d(points: np.ndarray, seed: int = 0) -> np.ndarray:
    import umap

    return umap.UMAP(n_components=2, random_state=seed).fit_transform(points)


def cluster(points: np.ndarray, method: str = "hdbscan", seed: int = 0) -> tuple[np.ndarray, str]:
    """Cluster labels (-1: noise) and the method that made them. HDBSCAN runs on a 50-D PCA of
    the points; when it finds fewer than two clusters, K-Means with k=10 takes over."""
    from sklearn.cluster import HDBSCAN, KMeans

    reduced = pca(points, 50)
    if method == "hdbscan":
        labels = HDBSCAN(min_cluster_size=max(5, len(points) // 100), copy=True).fit_predict(
            reduced
        )
        if len(set(labels) - {-1}) >= 2:
            return labels, "HDBSCAN"
        method = "kmeans"
    if method != "kmeans":
        raise DigitformerError(f"--cluster must be hdbscan or kmeans, got {method!r}")
    k = min(10, len(points))
    return KMeans(k, n_init=10, random_state=seed).fit_predict(reduced), "K-Means (k=10)"


def cluster_scores(clusters: np.ndarray, digits: np.ndarray) -> dict[str, float]:
    """Purity (share of clustered points in their cluster's majority digit), adjusted Rand
    index against the digits (noise counted as one cluster), cluster count, noise share."""
    from sklearn.metrics import adjusted_rand_score

    clustered = clusters != -1
    majority = sum(np.bincount(digits[clusters == c]).max() for c in np.unique(clusters[clustered]))
    return {
        "purity": float(majority / max(1, clustered.sum())),
        "ari": float(adjusted_rand_score(digits, clusters)),
        "clusters": int(len(np.unique(clusters[clustered]))),
        "noise": float(1 - clustered.mean()),
    }


def _scatter_digits(ax, coords: np.ndarray, digits: np.ndarray) -> None:
    ax.scatter(coords[:, 0], coords[:, 1], c=digits, cmap=DIGIT_COLORS, vmin=-0.5, vmax=9.5, s=4)
    for d in range(10):  # legend handles, one per digit
        ax.scatter([], [], color=ax.collections[0].cmap((d + 0.5) / 10), s=12, label=str(d))
    ax.legend(title="digit", fontsize=7, title_fontsize=7, markerscale=1.5, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_map(coords: np.ndarray, emb: Embeddings, title: str, path) -> None:
    """One 2-D map coloured by digit (8 x 7 inches)."""
    fig = figure(8, 7)
    ax = fig.add_subplot()
    _scatter_digits(ax, coords, emb.digits)
    ax.set_title(f"{title}\n{emb.what}, {len(emb.points):,} points", fontsize=10)
    save(fig, path)


def plot_clusters(
    coords: np.ndarray, emb: Embeddings, clusters: np.ndarray, method: str, scores, projection, path
) -> None:
    """Two panels (16 x 7 inches): true digits, then the discovered clusters (noise grey)."""
    fig = figure(16, 7)
    left, right = fig.subplots(1, 2)
    _scatter_digits(left, coords, emb.digits)
    left.set_title(f"{projection} coloured by true digit", fontsize=10)
    noise = clusters == -1
    right.scatter(coords[noise, 0], coords[noise, 1], c="lightgrey", s=3)
    right.scatter(
        coords[~noise, 0], coords[~noise, 1], c=clusters[~noise], cmap="nipy_spectral", s=4
    )
    right.set_title(
        f"{method}: {scores['clusters']} clusters, {100 * scores['noise']:.0f}% noise", fontsize=10
    )
    right.set_xticks([])
    right.set_yticks([])
    fig.suptitle(
        f"{emb.what}, {len(emb.points):,} points: purity {scores['purity']:.3f}, "
        f"adjusted Rand index {scores['ari']:.3f}",
        fontsize=11,
    )
    save(fig, path)
