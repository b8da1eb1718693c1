"""Rebuild the small real-MNIST subset the tests use (needs the full dataset in .data).

python tests/data/make_subset.py
"""

from pathlib import Path

from digitformer.data.mnist import Digits, load_split, write_parquet

HERE = Path(__file__).parent
SIZES = {"train": 3000, "test": 1000}

for split, n in SIZES.items():
    digits = load_split(".data", split)
    write_parquet(
        Digits(digits.images[:n], digits.labels[:n]),
        HERE / "mnist-subset" / "ylecun" / "mnist" / f"{split}-00000-of-00001.parquet",
    )
