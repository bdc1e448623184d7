"""Images of any size and channel count: folders of PNG files, RGB data through training, pictures and
export, tensorflow-datasets sources (CIFAR-10, CelebA) through tfds' offline mock data."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from kvae.data import DataError, load_dataset, load_image_folder

CLASSES = {0: "t-shirt", 1: "trouser", 7: "sneaker"}  # Fashion-MNIST label -> subfolder
PER_CLASS = 40


def _write_folder(root, images, labels, tint=None):
    """Writes one PNG per image into root/<class name>/; tint (n, 3) colours grey images into RGB."""
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / CLASSES[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = image[..., 0]
        if tint is not None:
            pixels = np.round(pixels[..., None] * tint[i]).astype(np.uint8)  # (28, 28, 3)
        Image.fromarray(pixels).save(folder / f"{i:04d}.png")


def _pick(splits):
    keep = np.flatnonzero(np.isin(splits.y_test, list(CLASSES)))
    keep = np.concatenate([keep[splits.y_test[keep] == c][:PER_CLASS] for c in CLASSES])
    return splits.x_test[keep], splits.y_test[keep]


@pytest.fixture(scope="module")
def grey_folder(tmp_path_factory, splits):
    """120 real Fashion-MNIST test images as PNG files, 40 in each of 3 class folders: (root, images, labels)."""
    root = tmp_path_factory.mktemp("grey")
    x, y = _pick(splits)
    _write_folder(root, x, y)
    return root, x, y


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory, splits):
    """The same images tinted with a random colour each, saved as RGB PNG files."""
    root = tmp_path_factory.mktemp("rgb")
    x, y = _pick(splits)
    tint = np.random.default_rng(0).uniform(0.3, 1.0, (len(x), 3))
    _write_folder(root, x, y, tint)
    return root


def test_folder_gives_the_images_and_their_class_labels(grey_folder):
    root, x, y = grey_folder
    splits = load_image_folder(root)
    assert splits.class_names == ("sneaker", "t-shirt", "trouser")  # sorted subfolder names
    assert splits.input_shape == (28, 28, 1)  # the first image's size and colour mode
    images = np.concatenate([splits.x_train, splits.x_val, splits.x_test])
    labels = np.concatenate([splits.y_train, splits.y_val, splits.y_test])
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (96, 12, 12)
    assert images.dtype == np.uint8 and sorted(np.bincount(labels)) == [PER_CLASS] * 3
    # PNG is lossless: every file comes back bit for bit, under its class's label.
    original = {(splits.class_names.index(CLASSES[int(label)]), image.tobytes()) for image, label in zip(x, y)}
    assert {(int(label), image.tobytes()) for image, label in zip(images, labels)} == original
    again = load_image_folder(root)
    np.testing.assert_array_equal(again.x_test, splits.x_test)  # the split is fixed


def test_folder_resizes_and_converts_colour(grey_folder, tmp_path):
    root, _, _ = grey_folder
    splits = load_image_folder(root, image_size=(32, 24), color_mode="rgb")
    assert splits.input_shape == (32, 24, 3)
    assert np.array_equal(splits.x_train[..., 0], splits.x_train[..., 2])  # grey in three channels
    assert load_dataset(f"folder:{root}", image_size=(20, 20)).input_shape == (20, 20, 1)

    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(5):
        Image.fromarray(np.full((10, 12, 3), 40 * i, np.uint8)).save(flat / f"{i}.jpg")
    unlabelled = load_image_folder(flat)
    assert unlabelled.class_names is None and unlabelled.input_shape == (10, 12, 3)
    assert not np.concatenate([unlabelled.y_train, unlabelled.y_test]).any()


def test_folder_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(DataError, match="does not exist. Received: path="):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "a" / "notes.txt").write_text("no images")
    with pytest.raises(DataError, match=r"No image files \(.bmp, .gif"):
        load_image_folder(tmp_path / "empty")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "empty" / "a" / "one.png")
    with pytest.raises(DataError, match="holds 1 images; it needs at least 3"):
        load_image_folder(tmp_path / "empty")
    with pytest.raises(DataError, match="Received: color_mode='cmyk'"):
        load_image_folder(tmp_path / "empty", color_mode="cmyk")


def test_rgb_folder_trains_draws_and_exports_through_the_cli(rgb_folder, tmp_path):
    from kvae_export import export_run
    from kvae_cli import main
    from kvae_serving import Runtime, images

    run_dir = tmp_path / "run"
    argv = ["train", "--image-folder", str(rgb_folder), "--image-size", "32", "32", "--architecture", "conv",
            "--likelihood", "gaussian", "--num-classes", "3", "--latent-dim", "4", "--epochs", "2",
            "--batch-size", "32", "--run-dir", str(run_dir)]
    assert main(argv) == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["dataset"] == f"folder:{rgb_folder}" and config["image_size"] == [32, 32]
    for name in ("samples.png", "class_samples.png", "reconstructions.png", "interpolation.png"):
        assert Image.open(run_dir / name).mode in ("RGB", "RGBA"), name  # colour pictures
    result = export_run(run_dir, tmp_path / "artifacts")
    assert result.manifest["input_shape"] == [32, 32, 3] and result.manifest["num_classes"] == 3
    runtime = Runtime(tmp_path / "artifacts")
    samples = runtime.sample(6, seed=0, labels=[0, 1, 2, 0, 1, 2])
    assert samples.shape == (6, 32, 32, 3)
    assert Image.open(io.BytesIO(images.grid_png(samples))).mode == "RGB"


def test_rgb_arrays_train_and_export_in_python(splits, tmp_path):
    import keras

    from kvae_export import export_vae
    from kvae import VAE, architectures
    from kvae.data import from_arrays, pipeline

    tint = np.random.default_rng(1).uniform(0.3, 1.0, (700, 1, 1, 3))
    rgb = np.round(splits.x_test[:700] * tint).astype(np.uint8)  # (700, 28, 28, 3)
    data = from_arrays(rgb[:600], rgb[600:], validation_size=100)
    encoder, decoder = architectures.build("conv", data.input_shape, 4, output_activation="sigmoid")
    model = VAE(encoder, decoder, likelihood="gaussian", seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(pipeline.train_dataset(data.x_train, 100, binarize=False, seed=0), epochs=1, verbose=0)
    assert model.sample(3, seed=0).shape == (3, 28, 28, 3)
    check = data.x_test[:32].astype(np.float32) / 255.0
    result = export_vae(model, tmp_path / "artifacts", check_images=check)
    assert result.manifest["models"]["encoder"]["inputs"][0]["shape"] == [-1, 28, 28, 3]


def test_tfds_cifar10_and_celeba_load_with_their_channels(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    # mock_data generates random examples from each dataset's feature spec, offline; its download_and_prepare does
    # nothing, so kvae may call it without first asking the (unreachable) download host.
    monkeypatch.setenv("KVAE_TFDS_DOWNLOAD", "1")
    with tfds.testing.mock_data(num_examples=12, data_dir=str(tmp_path)):
        cifar = load_dataset("cifar10")
        assert cifar.input_shape == (32, 32, 3) and cifar.x_train.dtype == np.uint8
        assert cifar.y_train.max() < 10
        celeba = load_dataset("celeb_a", image_size=(64, 64))  # no labels: all 0; resized
        assert celeba.input_shape == (64, 64, 3) and not celeba.y_train.any()
        grey = load_dataset("cifar10", color_mode="grayscale")
        assert grey.input_shape == (32, 32, 1)
