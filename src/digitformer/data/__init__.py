"""Data: fetch MNIST (HF parquet layout), decode it once, build 2x2 grids."""

from digitformer.data.grids import Grids, make_grids, tile_2x2
from digitformer.data.mnist import Digits, load_split

__all__ = ["Digits", "Grids", "load_split", "make_grids", "tile_2x2"]
