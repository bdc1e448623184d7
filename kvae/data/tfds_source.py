"""Datasets through tensorflow-datasets (CIFAR-10, CelebA, ...), from the copy prepared in tfds' data_dir.

tfds retries an unreachable download host for minutes, so a dataset that is
not prepared is downloaded only when its host answers within a few seconds
($KVAE_TFDS_DOWNLOAD overrides that); otherwise a DataError says where tfds
looked and how to provide the files.
"""

import difflib
import os
import urllib.parse

import numpy as np

from kvae.data.idx import DataError
from kvae.data.splits import from_arrays
from kvae_contract.errors import ConfigError
from kvae_contract.idx import VALIDATION_SIZE

TFDS_DOWNLOAD_ENV = "KVAE_TFDS_DOWNLOAD"  # "1": download without asking the host first; "0": never download
TFDS_PROBE_URL = "https://storage.googleapis.com/"  # asked when a dataset names no download URLs
TFDS_PROBE_TIMEOUT_S = 3.0  # how long the download host has to answer before kvae gives up


def load_tfds(name, data_dir=None):
    """Loads an image dataset through tensorflow-datasets, from its prepared copy in tfds' data_dir.

    Supervised datasets (CIFAR-10, MNIST, ...) give (image, label) pairs;
    others (CelebA) give their "image" feature, with all labels 0. A dataset
    not prepared yet is downloaded only when its download host answers within
    a few seconds ($KVAE_TFDS_DOWNLOAD: "1" downloads without asking the host
    first, "0" never downloads); otherwise a DataError says where tfds looked
    and how to provide the files. An unknown name is a ConfigError with the
    closest names tfds knows.
    """
    tfds = _import_tfds()
    builder = _tfds_builder(tfds, name, data_dir)
    if not (builder.data_path.exists() and builder.is_prepared()):  # is_prepared() warns if missing
        _download_and_prepare(builder, name)
    else:
        print(f"Loading {name!r} through tensorflow-datasets from {builder.data_path}.")
    splits = set(builder.info.splits)  # empty under tfds.testing.mock_data
    if splits and not {"train", "test"} <= splits:
        raise DataError(
            f"kvae trains on a dataset's 'train' split and tests on its 'test' split; tensorflow-datasets' {name!r} "
            f"has {sorted(splits)}. Received: dataset={name!r}"
        )
    supervised = builder.info.supervised_keys is not None
    try:
        train, test = builder.as_dataset(split=["train", "test"], as_supervised=supervised)
        (x_train, y_train), (x_test, y_test) = (_tfds_arrays(split, supervised) for split in (train, test))
    except Exception as e:  # TensorFlow's OpErrors (a damaged record file), tfds' own errors
        raise DataError(
            f"tensorflow-datasets cannot read {name!r} from {builder.data_path}: {_first_line(e)}. Delete that folder "
            f"and prepare the dataset again."
        ) from None
    # 10,000 validation images as for Fashion-MNIST, fewer for small datasets.
    return from_arrays(x_train, x_test, y_train, y_test, validation_size=min(VALIDATION_SIZE, len(x_train) // 6))


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ModuleNotFoundError:
        raise ConfigError(
            "Datasets other than fashion_mnist and folder:PATH come from tensorflow-datasets, which is not "
            "installed: pip install tensorflow-datasets."
        ) from None
    return tfds


def _tfds_builder(tfds, name, data_dir):
    """tfds.builder(name); a ConfigError with the closest names if tfds does not know `name`."""
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        pass  # its message lists every dataset tfds has: say it shorter, below
    except Exception as e:  # a bad version or config, an unreadable data_dir
        raise ConfigError(
            f"tensorflow-datasets cannot make a builder for {name!r}: {_first_line(e)}. Received: dataset={name!r}"
        ) from None
    known = _tfds_names(tfds)
    base = name.split("/")[0].split(":")[0]  # "mnist" of "mnist/config:3.0.1"
    close = difflib.get_close_matches(base, [*known, "fashion_mnist"], n=4, cutoff=0.6)
    where = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    folder = f" {name} is a folder: use folder:{name} (--image-folder {name})." if os.path.isdir(name) else ""
    raise ConfigError(
        f"`dataset` must be fashion_mnist, folder:PATH or one of the {len(known)} tensorflow-datasets names "
        f"(tfds.list_builders()).{where}{folder} Received: dataset={name!r}"
    )


def _tfds_names(tfds):
    """The dataset names tfds knows (tfds.list_builders() without community datasets); () if it cannot say."""
    try:
        return tuple(tfds.list_builders(with_community_datasets=False))
    except Exception:  # an odd tfds build: no suggestions then
        return ()


def _download_and_prepare(builder, name):
    """Downloads and prepares a dataset, if the download can work; else a DataError that says how to provide it."""
    policy = os.environ.get(TFDS_DOWNLOAD_ENV, "")
    manual = builder.MANUAL_DOWNLOAD_INSTRUCTIONS is not None  # no host to ask: the files come from manual_dir
    urls = sorted(type(builder).url_infos or ()) or [TFDS_PROBE_URL]
    unreachable = None if manual or policy == "1" else _unreachable(urls)
    if policy == "0" or unreachable:
        why = f"{TFDS_DOWNLOAD_ENV}=0 forbids downloading" if policy == "0" else unreachable
        raise DataError(_not_prepared_message(builder, name, why))
    print(f"Downloading {name!r} with tensorflow-datasets into {builder.data_dir_root} (once).")
    try:
        builder.download_and_prepare()
    except Exception as e:  # requests' errors after tfds' retries, tfds' checksum and manual-download errors
        raise DataError(_not_prepared_message(builder, name, f"the download failed: {_first_line(e)}")) from None


def _unreachable(urls, timeout_s=TFDS_PROBE_TIMEOUT_S):
    """None if the host of every URL answers an HTTP request within timeout_s (all together), else why not.

    Runs in a thread so that a hanging DNS lookup cannot hold training up either.
    """
    import threading

    hosts = {}
    for url in urls:
        hosts.setdefault(urllib.parse.urlsplit(url).netloc, url)
    answers = {}

    def ask():
        import requests

        for host, url in list(hosts.items())[:3]:
            try:
                requests.head(url, timeout=timeout_s, allow_redirects=False)
            except requests.RequestException as e:
                answers[host] = f"{type(e).__name__}"
                return
        answers[None] = "ok"

    thread = threading.Thread(target=ask, name="kvae-tfds-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if answers.get(None) == "ok":
        return None
    failed = [h for h in answers if h is not None]
    host = failed[0] if failed else next(iter(hosts))
    reason = answers.get(host, f"no answer within {timeout_s:g} s")
    return f"its download host {host} cannot be reached from this machine ({reason})"


def _not_prepared_message(builder, name, why):
    root = os.fspath(builder.data_dir_root)
    folder = os.path.join(root, builder.name)
    found = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    there = f"{folder} holds only {found}" if found else f"{folder} does not exist"
    hint = (f"Its files must be downloaded by hand: see `tfds.builder({builder.name!r}).MANUAL_DOWNLOAD_INSTRUCTIONS`, "
            f"put them in {os.path.join(root, 'downloads', 'manual')} and run again."
            if builder.MANUAL_DOWNLOAD_INSTRUCTIONS is not None else
            f"Provide the prepared dataset: on a machine with network run `tfds build {builder.name}` (or "
            f"`kvae train --dataset {name}` there) and copy its {builder.name}/ folder from ~/tensorflow_datasets "
            f"into {root}, or set TFDS_DATA_DIR to a folder that holds it; {TFDS_DOWNLOAD_ENV}=1 tries the download "
            "anyway.")
    return (
        f"tensorflow-datasets dataset {name!r} is not prepared on this machine (looked for {builder.data_path} in "
        f"tfds' data_dir {root}: {there}), and {why}. {hint}"
    )


def _first_line(error):
    text = str(error).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {line[:200]}" if line else type(error).__name__


def _tfds_arrays(dataset, supervised):
    """A tfds split -> uint8 images (n, h, w, c) and int64 labels (n,), read in batches."""
    images, labels = [], []
    for element in dataset.batch(1024).as_numpy_iterator():
        x, y = element if supervised else (element["image"], np.zeros(len(element["image"]), np.int64))
        images.append(x)
        labels.append(np.asarray(y, np.int64))
    return np.concatenate(images), np.concatenate(labels)


