"""One contender in its own process, driven epoch by epoch by benchmarks.harness.

    python -m benchmarks.worker '{"kind": "kvae", ...}'

Each contender trains in its own process, so no two thread pools share the
cores and PyTorch never imports TensorFlow. At every epoch boundary the worker
says {"event": "ready"} and waits: {"cmd": "go"} runs one epoch, timed, and
answers {"event": "epoch", ...}; {"cmd": "stop"} exits. The orchestrator runs
one contender at a time, so the others sit idle on a blocking read.

Kinds:
  kvae           kvae.train.train(config) itself, the function `kvae train`
                 runs; a callback passed through its `callbacks` hook waits and times.
  keras_example  benchmarks.keras_example fitted on kvae's tf.data pipeline.
  torch          benchmarks.torch_ref.Trainer.
  torch_vamp     benchmarks.torch_vamp.Trainer: the fashion-vamp recipe, read
                 from the spec's "config" (the same dict as kvae's TrainConfig);
                 with a "checkpoint" path it saves its state there after every
                 epoch and starts from it, as kvae train does from its run directory.
  evaluator      {"cmd": "eval", "path": weights.npz, "k": k} -> IWAE NLL with
                 kvae.evaluate.evaluate on a kvae model holding those weights,
                 on the first `num_images` test images of the published draw
                 (kvae.data.protocol.evaluation_views); the model is the spec's
                 "config" (a TrainConfig dict) or its architecture/latent_dim.

The "ready" message names the epoch the worker will run next: 0, or where a
resumed run continues. Beside each dump lies that epoch's report (NAME-E.json),
written before the "epoch" message, so an orchestrator stopped in between
can still record the epoch.

Weight dumps (the spec's "dump", a path with {epoch}): Keras layouts, either
lists of encoder/decoder weights (save_weights, the plain MLP) or arrays by
name, "encoder/LAYER/kernel" ... and "pseudo_inputs" (save_named_weights, any
kvae VAE; what benchmarks.torch_vamp.keras_weights writes).

Messages are JSON lines on the original stdout; anything the libraries print
goes to stderr (the orchestrator keeps it in a log file).
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class Channel:
    def __init__(self):
        self.out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)  # stray prints from libraries go to stderr, not into the protocol

    def send(self, **msg):
        self.out.write(json.dumps(msg) + "\n")
        self.out.flush()

    def recv(self):
        line = sys.stdin.readline()
        if not line:  # the orchestrator is gone
            os._exit(0)
        return json.loads(line)

    def wait_for_go(self, epoch):
        """Says ready and blocks; exits on stop. Returns the go message."""
        self.send(event="ready", epoch=epoch)
        msg = self.recv()
        if msg.get("cmd") == "stop":
            self.send(event="bye")
            self.out.flush()
            os._exit(0)
        return msg


def machine_jiffies():
    """(busy, total) CPU jiffies of the whole machine since boot, from /proc/stat (None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def _rusage():
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"major_faults": r.ru_majflt, "voluntary_switches": r.ru_nvcsw, "involuntary_switches": r.ru_nivcsw,
            "blocks_in": r.ru_inblock, "blocks_out": r.ru_oublock}


class Clock:
    def start(self):
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        self.j0 = machine_jiffies()
        self.r0 = _rusage()
        self.train = None

    def lap(self):
        """Marks the end of the training part of the epoch (before validation)."""
        if self.train is None:
            self.train = (time.perf_counter() - self.t0, time.process_time() - self.c0)

    def stop(self):
        self.lap()
        epoch_s, epoch_cpu_s = time.perf_counter() - self.t0, time.process_time() - self.c0
        j1 = machine_jiffies()
        # Cores busy with anything, this process included, during the epoch.
        busy = (j1[0] - self.j0[0]) / (j1[1] - self.j0[1]) * (os.cpu_count() or 1) if j1 and self.j0 and j1[1] > self.j0[1] else None
        return {
            "train_s": self.train[0], "train_cpu_s": self.train[1], "epoch_s": epoch_s, "epoch_cpu_s": epoch_cpu_s,
            "loadavg": os.getloadavg()[0], "machine_busy_cores": busy,
            "others_cores": None if busy is None else max(0.0, busy - epoch_cpu_s / epoch_s),
            **{k: v - self.r0[k] for k, v in _rusage().items()},
        }


def keras_sync_callback(chan, samples, dump=None):
    """A Keras callback: wait for go at each epoch start, time the epoch, report it."""
    import keras

    class Sync(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.clock = Clock()

        def on_epoch_begin(self, epoch, logs=None):
            chan.wait_for_go(epoch)
            self.clock.start()

        def on_test_begin(self, logs=None):
            self.clock.lap()

        def on_epoch_end(self, epoch, logs=None):
            times = self.clock.stop()
            loss = float((logs or {}).get("loss", float("nan")))
            report = dict(event="epoch", epoch=epoch, samples=samples, loss=loss, **times)
            if dump and getattr(self.model, "prior", "normal") != "normal":
                save_named_weights(dump.format(epoch=epoch), keras_named_weights(self.model))
            elif dump:
                save_weights(dump.format(epoch=epoch), self.model.encoder.get_weights(), self.model.decoder.get_weights())
            if dump:
                save_report(dump.format(epoch=epoch), report)
            chan.send(**report)

    return Sync()


def save_weights(path, encoder_weights, decoder_weights):
    """Keras-layout weight lists to one .npz, read back by load_npz_weights."""
    import numpy as np

    np.savez(path, *encoder_weights, *decoder_weights, n_encoder=len(encoder_weights))


def load_npz_weights(path):
    import numpy as np

    with np.load(path) as f:
        n = int(f["n_encoder"])
        arrays = [f[f"arr_{i}"] for i in range(len(f.files) - 1)]
    return arrays[:n], arrays[n:]


def save_named_weights(path, weights):
    """{name: array} to one .npz (names may hold slashes), whole or not at all."""
    import numpy as np

    with open(path + ".part", "wb") as f:
        np.savez(f, **weights)
    os.replace(path + ".part", path)


def dump_template(dump_dir, name):
    """The spec's "dump" of worker `name`: DIR/NAME-{epoch}.npz, one file per epoch (from 0)."""
    return os.path.join(dump_dir, f"{name}-{{epoch}}.npz")


def report_path(dump_path):
    """Where an epoch's report lies beside its weight dump: NAME-E.npz -> NAME-E.json."""
    return os.path.splitext(dump_path)[0] + ".json"


def save_report(dump_path, report):
    """An epoch's report beside its dump, so a race stopped before it recorded the epoch can still do so."""
    path = report_path(dump_path)
    with open(path + ".part", "w") as f:
        json.dump(report, f)
    os.replace(path + ".part", path)


def load_named_weights(path):
    import numpy as np

    with np.load(path) as f:
        return {name: f[name] for name in f.files}


def _named_variables(vae):
    """[(name, variable)]: "encoder/LAYER/VAR", "decoder/LAYER/VAR", and "pseudo_inputs" for a VampPrior."""
    out = [(f"{part}/{layer.name}/{w.name}", w) for part in ("encoder", "decoder")
           for layer in getattr(vae, part).layers for w in layer.weights]
    if vae.prior == "vamp":
        out.append(("pseudo_inputs", vae.pseudo_inputs))
    return out


def keras_named_weights(vae):
    """A kvae VAE's encoder, decoder and prior weights by name, NumPy (the layout of torch_vamp.keras_weights)."""
    from keras import ops

    return {name: ops.convert_to_numpy(w) for name, w in _named_variables(vae)}


def set_named_weights(vae, weights):
    """The inverse of keras_named_weights; the names must match exactly."""
    named = _named_variables(vae)
    if sorted(n for n, _ in named) != sorted(weights):
        raise ValueError(f"Weights by name do not fit the model: model {sorted(n for n, _ in named)}, "
                         f"given {sorted(weights)}")
    for name, w in named:
        if tuple(w.shape) != tuple(weights[name].shape):
            raise ValueError(f"{name}: shape {tuple(weights[name].shape)} given, {tuple(w.shape)} in the model")
        w.assign(weights[name])


def run_kvae(chan, spec):
    import importlib

    import keras

    from kvae.config import TrainConfig
    from kvae.data import load_dataset
    from kvae.train import learning_rate, train
    from kvae.vae import VAE

    config = TrainConfig(**spec["config"])
    splits = load_dataset(config.dataset, config.data_dir)
    if spec.get("val_limit"):  # smoke runs only: validate on fewer images
        import dataclasses

        n = spec["val_limit"]
        splits = dataclasses.replace(splits, x_val=splits.x_val[:n], y_val=splits.y_val[:n])
    samples = len(splits.x_train[: config.train_limit])
    # The only addition to kvae train: one callback, after kvae's own, that waits
    # for its turn and times the epoch as every other callback sees it.
    sync = keras_sync_callback(chan, samples, spec.get("dump"))

    def imported(ref):
        module, name = ref.split(":")
        return getattr(importlib.import_module(module), name)

    hooks = {}
    if spec.get("optimizer"):  # tuning experiments only: another optimizer class, same learning rate
        hooks["optimizer"] = imported(spec["optimizer"])(learning_rate(config, samples))
    if spec.get("pipeline"):  # tuning experiments only: another train_dataset, same signature
        make = imported(spec["pipeline"])
        hooks["train_data"] = lambda x, c: make(x, c.batch_size, c.binarize, seed=c.seed)
    # Tuning experiments only: other arguments to kvae train's compile and fit calls.
    compile_overrides = spec.get("compile_overrides") or {}
    fit_overrides = spec.get("fit_overrides") or {}
    original_fit, original_compile = keras.Model.fit, keras.Model.compile
    if fit_overrides:
        VAE.fit = lambda self, *args, **kwargs: original_fit(self, *args, **{**kwargs, **fit_overrides})
    if compile_overrides:
        VAE.compile = lambda self, *args, **kwargs: original_compile(self, *args, **{**kwargs, **compile_overrides})
    train(config, splits=splits, verbose=spec.get("verbose", 2), callbacks=[sync], **hooks)
    chan.wait_for_go(config.epochs)  # ran out of epochs: idle until stopped


def run_keras_example(chan, spec):
    import keras

    from benchmarks import keras_example
    from kvae.data import load_dataset, pipeline

    keras.utils.set_random_seed(spec.get("seed", 0))
    splits = load_dataset("fashion_mnist")
    x = splits.x_train[: spec.get("train_limit")]
    model = keras_example.build(spec["architecture"], spec["latent_dim"])
    ds = pipeline.train_dataset(x, spec["batch_size"], True, seed=spec.get("seed", 0))
    sync = keras_sync_callback(chan, len(x), spec.get("dump"))
    model.fit(ds, epochs=spec.get("epochs", 10_000), callbacks=[sync], verbose=0)


def run_torch(chan, spec):
    import torch

    from benchmarks import fmnist, torch_ref

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    x_train, _ = fmnist.load()
    x = x_train[: spec.get("train_limit")]
    trainer = torch_ref.Trainer(spec["architecture"], spec["latent_dim"], x, spec["batch_size"], seed=spec.get("seed", 0))
    clock = Clock()
    for epoch in range(spec.get("epochs", 10_000)):
        chan.wait_for_go(epoch)
        clock.start()
        loss = trainer.epoch()
        times = clock.stop()
        report = dict(event="epoch", epoch=epoch, samples=len(x), loss=loss, threads=torch.get_num_threads(), **times)
        if spec.get("dump"):
            save_weights(spec["dump"].format(epoch=epoch), *torch_ref.keras_weights(trainer.model))
            save_report(spec["dump"].format(epoch=epoch), report)
        chan.send(**report)
    chan.wait_for_go(spec.get("epochs", 10_000))


def run_torch_vamp(chan, spec):
    import torch

    from benchmarks import fmnist, torch_vamp

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    recipe = spec["config"]
    x_train, _ = fmnist.load()
    x = x_train[: recipe.get("train_limit")]
    trainer = torch_vamp.Trainer(recipe, x, seed=recipe.get("seed", 0))
    checkpoint = spec.get("checkpoint")  # where the trainer's state goes after every epoch, and resumes from
    if checkpoint and os.path.exists(checkpoint):
        trainer.restore(torch.load(checkpoint, weights_only=False))
    clock = Clock()
    epochs = spec.get("epochs", recipe["epochs"])
    for epoch in range(trainer.epochs_done, epochs):
        chan.wait_for_go(epoch)
        clock.start()
        loss = trainer.epoch()
        times = clock.stop()
        report = dict(event="epoch", epoch=epoch, samples=len(x), loss=loss, threads=torch.get_num_threads(), **times)
        if spec.get("dump"):  # the dump and report first: a checkpoint never runs ahead of them
            save_named_weights(spec["dump"].format(epoch=epoch), torch_vamp.keras_weights(trainer.model))
            save_report(spec["dump"].format(epoch=epoch), report)
        if checkpoint:
            torch.save(trainer.state(), checkpoint + ".part")
            os.replace(checkpoint + ".part", checkpoint)
        chan.send(**report)
    chan.wait_for_go(epochs)


def run_evaluator(chan, spec):
    import numpy as np

    from kvae.config import TrainConfig
    from kvae.data import load_dataset
    from kvae.data.protocol import evaluation_views
    from kvae.evaluate import evaluate
    from kvae.train import build_model

    splits = load_dataset("fashion_mnist")
    _, x_test = evaluation_views(splits.x_val, splits.x_test, True)  # the published draw, then cut
    x = x_test[: spec["num_images"]]
    config = TrainConfig(**spec["config"]) if spec.get("config") else TrainConfig(
        architecture=spec["architecture"], latent_dim=spec["latent_dim"])
    model = build_model(config, splits.input_shape)
    chan.send(event="ready", epoch=None)
    while True:
        msg = chan.recv()
        if msg.get("cmd") == "stop":
            chan.send(event="bye")
            os._exit(0)
        with np.load(msg["path"]) as f:
            named = "n_encoder" not in f.files
        if named:
            set_named_weights(model, load_named_weights(msg["path"]))
        else:
            enc, dec = load_npz_weights(msg["path"])
            model.encoder.set_weights(enc)
            model.decoder.set_weights(dec)
        t = time.perf_counter()
        result = evaluate(model, x, k=int(msg["k"]), seed=0, verbose=0)
        chan.send(event="eval", nll=result["nll"], nll_stderr=result["nll_stderr"],
                  nll_mc_stderr=result.get("nll_mc_stderr"), negative_elbo=result["negative_elbo"],
                  eval_s=time.perf_counter() - t)


KINDS = {"kvae": run_kvae, "keras_example": run_keras_example, "torch": run_torch, "torch_vamp": run_torch_vamp,
         "evaluator": run_evaluator}


def main():
    spec = json.loads(sys.argv[1])
    chan = Channel()
    try:
        KINDS[spec["kind"]](chan, spec)
    except BaseException as e:  # report, then die: the orchestrator shows the log
        import traceback

        traceback.print_exc()
        chan.send(event="error", message=f"{type(e).__name__}: {e}")
        sys.stderr.flush()
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":
    main()
