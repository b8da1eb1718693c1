"""MNIST in the Hugging Face `ylecun/mnist` parquet layout: write, read, decode once, cache.

from digitformer.data.mnist import load_split
train = load_split(".data", "train")   # Digits(images uint8 (60000, 28, 28), labels uint8)
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from digitformer.utils.errors import DigitformerError
from digitformer.utils.fileio import atomic_path

SPLITS = ("train", "test")
DATASET_SUBDIR = Path("ylecun") / "mnist"
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
SCHEMA = pa.schema([("image", IMAGE_TYPE), ("label", pa.int64())])
# The `datasets` library reads these features back from the schema metadata, as it does for the hub.
HF_FEATURES = {
    "info": {
        "features": {
            "image": {"_type": "Image"},
            "label": {"names": [str(d) for d in range(10)], "_type": "ClassLabel"},
        }
    }
}


@dataclass(frozen=True)
class Digits:
    """Single MNIST digits: images uint8 (N, 28, 28), labels uint8 (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def dataset_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / DATASET_SUBDIR


def split_files(data_dir: str | Path, split: str) -> list[Path]:
    return sorted(dataset_dir(data_dir).glob(f"{split}-*.parquet"))


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def write_parquet(digits: Digits, path: str | Path) -> None:
    """Write digits as an HF-layout parquet file (PNG bytes + int64 label), atomically."""
    images = pa.array(
        [{"bytes": encode_png(img), "path": None} for img in digits.images], type=IMAGE_TYPE
    )
    labels = pa.array(digits.labels.astype(np.int64), type=pa.int64())
    table = pa.Table.from_arrays([images, labels], schema=SCHEMA)
    table = table.replace_schema_metadata({"huggingface": json.dumps(HF_FEATURES)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet(path: str | Path) -> Digits:
    """Read one HF-layout parquet file and decode its PNGs to uint8 arrays."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DigitformerError(f"{path}: not a readable parquet file ({exc})") from None
    names = table.schema.names
    if "image" not in names or "label" not in names:
        raise DigitformerError(f"{path}: expected columns 'image' and 'label', found {names}")
    image_type = table.schema.field("image").type
    if not (pa.types.is_struct(image_type) and image_type.get_field_index("bytes") >= 0):
        raise DigitformerError(
            f"{path}: column 'image' must be a struct with 'bytes', got {image_type}"
        )
    if not pa.types.is_integer(table.schema.field("label").type):
        raise DigitformerError(f"{path}: column 'label' must be an integer column")
    pngs = table.column("image").combine_chunks().field("bytes").to_pylist()
    labels = table.column("label").to_numpy()
    images = np.empty((len(pngs), 28, 28), dtype=np.uint8)
    for row, png in enumerate(pngs):
        images[row] = decode_digit(png, where=f"{path} row {row}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DigitformerError(f"{path}: labels must be digits 0-9")
    return Digits(images, labels.astype(np.uint8))


def decode_digit(png: bytes | None, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(png or b"")) as img:
            pixels = np.asarray(img.convert("L"))
    except Exception as exc:  # Pillow raises many types for bad bytes
        raise DigitformerError(f"{where}: image bytes do not decode ({exc})") from None
    if pixels.shape != (28, 28):
        raise DigitformerError(f"{where}: image is {pixels.shape}, expected 28x28")
    return pixels


def read_split(data_dir: str | Path, split: str) -> Digits:
    """Read and decode every parquet file of a split (no cache)."""
    files = split_files(data_dir, split)
    if not files:
        raise DigitformerError(
            f"no MNIST {split} files in {dataset_dir(data_dir)}: run `digitformer data fetch` first"
        )
    return read_files(files)


def read_files(files: list[Path]) -> Digits:
    parts = [read_parquet(f) for f in files]
    return Digits(
        np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts])
    )


def _cache_key(files: list[Path]) -> str:
    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]


def load_split(data_dir: str | Path, split: str) -> Digits:
    """Decoded digits of a split, from the uint8 cache when the parquet files are unchanged."""
    if split not in SPLITS:
        raise DigitformerError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    files = split_files(data_dir, split)
    if not files:
        raise DigitformerError(
            f"no MNIST {split} files in {dataset_dir(data_dir)}: run `digitformer data fetch` first"
        )
    cache = Path(data_dir) / "cache" / f"mnist-{split}-{_cache_key(files)}.npz"
    if cache.exists():
        try:
            with np.load(cache, allow_pickle=False) as npz:
                digits = Digits(npz["images"], npz["labels"])
            if digits.images.shape[1:] != (28, 28) or len(digits.images) != len(digits.labels):
                raise ValueError(f"images of shape {digits.images.shape}")
            return digits
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            # a damaged cache (a truncated write, a bad disk) is rebuilt, never trusted
            print(
                f"digitformer: the cache {cache} is unreadable ({exc}); rebuilding it from the "
                "parquet files",
                file=sys.stderr,
            )
            cache.unlink(missing_ok=True)
    digits = read_split(data_dir, split)
    for stale in cache.parent.glob(f"mnist-{split}-*.npz"):
        stale.unlink()
    with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, images=digits.images, labels=digits.labels)
    return digits
