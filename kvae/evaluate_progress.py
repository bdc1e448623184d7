"""An evaluation that survives being stopped: what `kvae evaluate` has computed so far, in one file.

A k = 5000 evaluation of a convolutional model takes hours on a CPU. After every batch of
images, the per-image results so far and the state of the sample generator are written to
one .npz file (with kvae.rundir.atomic_write, so a kill leaves the old record or the new
one). Run again with the same settings, the evaluation continues after the last recorded
batch and gives the same numbers, bit for bit, as one that never stopped: the samples come
from the same PCG64 stream, drawn in the same order.

A record made under other settings (k, seed, batch size, sample chunk, the images, the
model's weights) is refused with the differences named, never mixed in.
"""

import hashlib
import io
import json
import os

import numpy as np

from kvae.rundir import atomic_write
from kvae_contract.errors import ConfigError, RunDirError


def fingerprint(*arrays):
    """sha256 of the arrays' bytes, shapes and dtypes, in order (None entries skipped): a hex str."""
    h = hashlib.sha256()
    for a in arrays:
        if a is not None:
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()


class EvaluationProgress:
    """Per-image result columns of the batches done so far, and the generator state after them.

    `settings` is a dict of JSON values that must match for a saved record to be continued;
    `path` None keeps everything in memory (nothing to resume from).
    """

    def __init__(self, path, settings):
        self.path = None if path is None else os.fspath(path)
        self.settings = dict(settings)
        self.columns = {}  # name -> list of arrays, one per batch, each (b, ...)
        self.rng_state = None  # numpy bit_generator.state after the last recorded batch
        self.done = 0  # images recorded

    @classmethod
    def open(cls, path, settings):
        """The record at `path` if there is one (checked against `settings`), else an empty one."""
        progress = cls(path, settings)
        if path is not None and os.path.exists(progress.path):
            progress._load()
        return progress

    def add(self, rows, rng_state):
        """Records one batch: `rows` maps column name -> (b, ...) array; saves if there is a path."""
        for name, value in rows.items():
            self.columns.setdefault(name, []).append(np.asarray(value))
        self.done += len(next(iter(rows.values())))
        self.rng_state = rng_state
        if self.path is not None:
            self._save()

    def arrays(self):
        """Every column, its batches concatenated: name -> (done, ...) array."""
        return {name: np.concatenate(parts) for name, parts in self.columns.items()}

    # === The file ===

    def _save(self):
        meta = {"settings": self.settings, "rng_state": self.rng_state, "columns": list(self.columns)}
        buffer = io.BytesIO()
        # Columns by position (c0, c1, ...): names stay in `meta`, free of the zip's naming rules.
        np.savez(buffer, meta=np.array(json.dumps(meta)), **{f"c{i}": a for i, a in enumerate(self.arrays().values())})
        atomic_write(self.path, buffer.getvalue())

    def _load(self):
        fix = f"Delete {self.path} to start the evaluation over."
        try:
            with np.load(self.path, allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                saved = meta["settings"]
                columns = {name: f[f"c{i}"] for i, name in enumerate(meta["columns"])}
                rng_state = meta["rng_state"]
        except Exception as e:  # a zip error, a missing key, bad JSON: the file is not what this module writes
            raise RunDirError(f"{self.path} is not a readable evaluation record ({type(e).__name__}: {e}). {fix}") from None
        differences = [
            f"{name}: {_short(saved.get(name))} in the file, {_short(value)} now"
            for name, value in self.settings.items() if saved.get(name) != value
        ]
        if differences:
            raise ConfigError(
                f"{self.path} holds an unfinished evaluation made with other settings ({'; '.join(differences)}). "
                f"Run the evaluation again with the file's settings to finish it, or delete the file to start over "
                f"with these."
            )
        lengths = {len(a) for a in columns.values()}
        if len(lengths) != 1 or not isinstance(rng_state, dict):
            raise RunDirError(f"{self.path} is damaged: its columns have lengths {sorted(lengths)}. {fix}")
        self.columns = {name: [a] for name, a in columns.items()}
        self.done = lengths.pop()
        self.rng_state = rng_state


def _short(value):
    """A setting as the error message shows it: hashes cut to 12 characters."""
    return value[:12] if isinstance(value, str) and len(value) == 64 else repr(value)
