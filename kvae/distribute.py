"""tf.distribute strategies for `kvae train --strategy`.

The batch size in the config is the global batch: each step consumes
`batch_size` images in total, split evenly over all replicas of all
workers, so a run means the same thing under every strategy. Keras scales the
`add_loss` terms by 1 / num_replicas, so the summed gradients and the logged
loss equal those of one device.
"""

import json
import os

from kvae_contract.errors import ConfigError

STRATEGIES = ("default", "mirrored", "multi-worker")


def make_strategy(name):
    """A tf.distribute strategy by name (TensorFlow backend only)."""
    import keras

    if name not in STRATEGIES:
        raise ConfigError(f"`strategy` must be one of {STRATEGIES}. Received: strategy={name!r}")
    if name != "default" and keras.backend.backend() != "tensorflow":
        raise ConfigError(
            f"--strategy {name} uses tf.distribute and needs KERAS_BACKEND=tensorflow. "
            f"Received backend: {keras.backend.backend()}"
        )
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()  # every local GPU, else the CPU
    if name == "multi-worker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError(
                "--strategy multi-worker needs TF_CONFIG describing the cluster and this worker, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief():
    """True unless TF_CONFIG names this process a non-chief worker: only the chief writes files."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task", {})
    kind, index = task.get("type"), task.get("index", 0)
    if kind in (None, "chief"):
        return True
    has_chief = "chief" in config.get("cluster", {})
    return kind == "worker" and index == 0 and not has_chief


def needs_vector_logs():
    """True inside a MultiWorkerMirroredStrategy scope on TensorFlow: then metric results need a length-1 axis.

    Keras 3 reduces each step's logs with strategy.reduce("MEAN", v, axis=0),
    which fails on scalar logs under a multi-worker strategy
    (tensorflow/tensorflow#72388). Metric results are already synchronised
    across workers, so giving them a length-1 axis makes that reduction
    correct: the mean of equal values. VAE.get_metrics_result asks this at
    trace time; `scalar_logs_callback` turns the logs back into floats.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy)


def is_multi_worker(strategy):
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def scalar_logs_callback():
    """A callback that turns the length-1 logs of `prepare_model` back into floats.

    Keras hands one logs dict to the callbacks in order, so placed first it
    gives every later callback (TensorBoard, History, the progress bar) scalars.
    """
    import keras
    import numpy as np

    def squeeze(logs):
        for key, value in (logs or {}).items():
            if np.ndim(value) > 0:
                logs[key] = float(np.mean(value))

    class ScalarLogs(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            squeeze(logs)

        def on_test_batch_end(self, batch, logs=None):
            squeeze(logs)

        def on_test_end(self, logs=None):
            squeeze(logs)

        def on_epoch_end(self, epoch, logs=None):
            squeeze(logs)

        def on_train_end(self, logs=None):
            squeeze(logs)

    return ScalarLogs()
