"""Data sources and pipelines: real files, and each bad case with its clear error."""

import gzip
import os
import shutil

import numpy as np
import pytest

from kvae.data import DataError, from_arrays, load_dataset, read_idx
from kvae.data import pipeline
from kvae_contract.idx import DEFAULT_DATA_DIR, IDX_FILES


def test_fashion_mnist_splits_are_50k_10k_10k(splits):
    assert splits.x_train.shape == (50_000, 28, 28, 1) and splits.x_train.dtype == np.uint8
    assert splits.x_val.shape == (10_000, 28, 28, 1)
    assert splits.x_test.shape == (10_000, 28, 28, 1)
    assert set(np.unique(splits.y_test)) == set(range(10))


@pytest.fixture
def data_copy(tmp_path):
    """A writable copy of the four IDX files."""
    for name in IDX_FILES.values():
        shutil.copy(os.path.join(DEFAULT_DATA_DIR, name), tmp_path / name)
    return tmp_path


def test_data_dir_and_environment_override(data_copy, monkeypatch):
    assert load_dataset(data_dir=str(data_copy)).x_test.shape == (10_000, 28, 28, 1)
    monkeypatch.setenv("KVAE_DATA_DIR", str(data_copy))
    os.remove(data_copy / IDX_FILES["test_labels"])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        load_dataset()  # the env folder is used, and a missing file is named


def test_missing_file_names_it_and_says_how_to_get_it(data_copy):
    os.remove(data_copy / IDX_FILES["train_images"])
    with pytest.raises(DataError) as e:
        load_dataset(data_dir=str(data_copy))
    assert "train-images-idx3-ubyte.gz" in str(e.value)
    assert "apt-get install -y dataset-fashion-mnist" in str(e.value) and "--data-dir" in str(e.value)


def test_empty_explicit_folder_is_an_error_not_a_download(tmp_path):
    with pytest.raises(DataError, match="No Fashion-MNIST IDX files"):
        load_dataset(data_dir=str(tmp_path))


def test_truncated_gzip_is_reported(data_copy):
    path = data_copy / IDX_FILES["test_images"]
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_dataset(data_dir=str(data_copy))


def test_not_gzip_at_all_is_reported(data_copy):
    (data_copy / IDX_FILES["test_images"]).write_bytes(b"this is not a gzip file")
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset(data_dir=str(data_copy))


def test_truncated_payload_and_bad_magic_are_reported(tmp_path):
    good = read_idx(os.path.join(DEFAULT_DATA_DIR, IDX_FILES["test_labels"]))
    header = b"\x00\x00\x08\x01" + len(good).to_bytes(4, "big")
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(header + good[:-10].tobytes()))
    with pytest.raises(DataError, match="truncated or padded"):
        read_idx(str(short))
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x01\x02\x08\x01" + good.tobytes()))
    with pytest.raises(DataError, match="bad magic number"):
        read_idx(str(bad))


def test_images_and_labels_that_do_not_match_are_reported(data_copy):
    labels = read_idx(str(data_copy / IDX_FILES["test_labels"]))[:500]
    header = b"\x00\x00\x08\x01" + len(labels).to_bytes(4, "big")
    (data_copy / IDX_FILES["test_labels"]).write_bytes(gzip.compress(header + labels.tobytes()))
    with pytest.raises(DataError, match="do not match"):
        load_dataset(data_dir=str(data_copy))


def test_arrays_are_accepted_and_bad_arrays_rejected_with_the_expected_shape(splits):
    s = from_arrays(splits.x_test[:300, ..., 0], splits.x_test[300:400] / 255.0, validation_size=100)
    assert s.x_train.shape == (200, 28, 28, 1) and s.x_test.dtype == np.uint8
    with pytest.raises(DataError, match=r"e.g. \(n, 28, 28, 1\). Received: x_train.shape=\(10, 784\)"):
        from_arrays(np.zeros((10, 784), np.uint8), splits.x_test[:5])
    with pytest.raises(DataError, match="finite pixel values in \\[0, 1\\]"):
        from_arrays(splits.x_test[:10].astype(np.float32), splits.x_test[:5])  # 0..255 floats
    with pytest.raises(DataError, match="dtype=int64"):
        from_arrays(np.zeros((10, 28, 28), np.int64), splits.x_test[:5])
    with pytest.raises(DataError, match="same image shape"):
        from_arrays(np.zeros((10, 28, 28), np.uint8), np.zeros((10, 32, 32), np.uint8), validation_size=2)


def test_dynamic_binarization_changes_each_epoch_but_repeats_across_runs(splits):
    x = splits.x_train[:64]

    def two_epochs():
        ds = pipeline.train_dataset(x, 64, binarize=True, seed=5, shuffle=False)
        return [next(iter(ds)).numpy() for _ in range(2)]

    first, second = two_epochs()
    assert set(np.unique(first)) == {0.0, 1.0}
    assert not np.array_equal(first, second)  # resampled every epoch
    np.testing.assert_array_equal(two_epochs()[0], first)  # same seed, same pixels
    # Binary pixels are unbiased: their mean is the grey level's.
    assert abs(first.mean() - x.mean() / 255.0) < 0.01


def test_test_set_is_binarized_once_with_a_fixed_seed(splits):
    a = pipeline.prepare_eval(splits.x_test[:100], binarize=True)
    np.testing.assert_array_equal(a, pipeline.prepare_eval(splits.x_test[:100], binarize=True))
    assert set(np.unique(a)) == {0.0, 1.0}
    grey = pipeline.prepare_eval(splits.x_test[:100], binarize=False)
    assert grey.max() <= 1.0 and len(np.unique(grey)) > 2
