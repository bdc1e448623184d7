"""Inference: encoder and decoder in onnxruntime, the SavedModel called in TF, Keras predict, PyTorch.

    python -m benchmarks.inference --out inference.json [--quick]

A kvae model (the MLP, latent 50; and the conv model, latent 2) trained for
one short epoch is exported with kvae_export.export_vae; then each contender runs
the same inputs at batch 1 (latency) and batch 1024 (throughput), in blocks
of calls taken in turn (the order rotated every round), and the tables keep
the median call time. Decoder: z -> x_mean = sigmoid(logits); encoder:
x -> (z_mean, z_log_var). Every contender's output is checked against Keras.

Contenders:
  onnxruntime        InferenceSession on the exported model.onnx with
                     onnxruntime's default options (CPU provider, all graph
                     optimizations, one intra-op thread per core, spinning
                     threads); the goals are judged on this one.
  onnxruntime_1thread  the same with intra_op_num_threads=1.
  onnxruntime_serving  the options `kvae serve` uses (serving.Runtime: 2
                     intra-op threads, no spinning, so that idle threads do
                     not take the cores from the HTTP threads).
  tf_saved_model     tf.saved_model.load(...).signatures["serving_default"].
  keras_predict      Model.predict on a functional model of the same layers.
  torch              the PyTorch reference model with the Keras weights
                     (MLP; the conv model runs with its own weights, timing
                     only), torch.inference_mode(), default threads.
"""

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from kvae_contract import artifacts as contract  # noqa: E402

BATCHES = (1, 1024)


def train_briefly(architecture, latent_dim, run_dir, train_limit):
    from kvae.config import TrainConfig
    from kvae.train import train

    config = TrainConfig(run_dir=run_dir, architecture=architecture, latent_dim=latent_dim,
                         train_limit=train_limit, epochs=1, seed=0)
    return train(config, verbose=0).model


def onnx_session(path, threads=None, spinning=True):
    """An onnxruntime session; threads=None and spinning=True are onnxruntime's defaults."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def contenders(model, arch, artifacts, part, batch):
    """{name: callable(numpy input) -> numpy output(s)} for the encoder or the decoder."""
    import keras
    import tensorflow as tf
    import torch

    from benchmarks import torch_ref

    onnx_path = os.path.join(artifacts, contract.onnx_path(part))
    sessions = {
        "onnxruntime": onnx_session(onnx_path),
        "onnxruntime_1thread": onnx_session(onnx_path, threads=1),
        "onnxruntime_serving": onnx_session(onnx_path, threads=2, spinning=False),
    }
    loaded = tf.saved_model.load(os.path.join(artifacts, contract.saved_model_path(part)))
    signature = loaded.signatures["serving_default"]
    tmodel = torch_ref.build(arch, model.latent_dim).eval()
    if arch == "mlp":
        torch_ref.load_keras_weights(tmodel, model.encoder.get_weights(), model.decoder.get_weights())

    if part == contract.DECODER:
        z = keras.Input((model.latent_dim,))
        predictor = keras.Model(z, keras.ops.sigmoid(model.decoder(z)))

        def ort_run(session):
            return lambda z: session.run([contract.X_MEAN], {contract.Z: z})[0]

        def tf_run(z):
            return signature(**{contract.Z: tf.constant(z)})[contract.X_MEAN].numpy()

        def keras_run(z):
            return predictor.predict(z, batch_size=len(z), verbose=0)

        def torch_run(z):
            with torch.inference_mode():
                out = torch.sigmoid(tmodel.decode(torch.from_numpy(z)))
            return out.numpy().reshape(len(z), *model.encoder.inputs[0].shape[1:]) if arch == "mlp" else out.numpy()
    else:
        predictor = model.encoder

        def ort_run(session):
            return lambda x: session.run([contract.Z_MEAN, contract.Z_LOG_VAR], {contract.X: x})

        def tf_run(x):
            out = signature(**{contract.X: tf.constant(x)})
            return [out[contract.Z_MEAN].numpy(), out[contract.Z_LOG_VAR].numpy()]

        def keras_run(x):
            return predictor.predict(x, batch_size=len(x), verbose=0)

        def torch_run(x):
            t = torch.from_numpy(x)
            t = t.reshape(len(x), -1) if arch == "mlp" else t.permute(0, 3, 1, 2)
            with torch.inference_mode():
                return [o.numpy() for o in tmodel.encode(t)]

    return {**{name: ort_run(s) for name, s in sessions.items()},
            "tf_saved_model": tf_run, "keras_predict": keras_run, "torch": torch_run}


def max_diff(a, b):
    a = a if isinstance(a, (list, tuple)) else [a]
    b = b if isinstance(b, (list, tuple)) else [b]
    return max(float(np.abs(np.asarray(p) - np.asarray(q)).max()) for p, q in zip(a, b))


def time_blocks(fns, data, calls, blocks):
    """Median seconds per call of each fn: `blocks` rounds of `calls` timed calls each, fns in turn."""
    names = list(fns)
    times = {n: [] for n in names}
    for n in names:  # warm up: traces, allocations, thread pools
        for _ in range(3):
            fns[n](data)
    for k in range(blocks):
        order = names[k % len(names):] + names[: k % len(names)]
        for n in order:
            fn = fns[n]
            for _ in range(calls):
                t = time.perf_counter()
                fn(data)
                times[n].append(time.perf_counter() - t)
    return {n: {"median_s": float(np.median(v)), "p90_s": float(np.percentile(v, 90)), "calls": len(v)}
            for n, v in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--settings", default='{"calls_per_block": {"1": 300, "1024": 10}, "blocks": 7}')
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    settings = json.loads(args.settings)
    calls = {int(k): v for k, v in settings["calls_per_block"].items()}

    from kvae_export import export_vae
    from kvae.data import load_dataset, pipeline

    splits = load_dataset("fashion_mnist")
    x_test = pipeline.evaluation_views(splits.x_val, splits.x_test, True)[1][:1024]  # the published draw
    rng = np.random.default_rng(0)
    results = {}
    with tempfile.TemporaryDirectory(prefix="kvae-inference-") as tmp:
        for arch, latent in (("mlp", 50), ("conv", 2)):
            model = train_briefly(arch, latent, os.path.join(tmp, f"run-{arch}"), 2_000 if args.quick else 10_000)
            artifacts = os.path.join(tmp, f"artifacts-{arch}")
            export_vae(model, artifacts, check_images=splits.x_test[:256].astype(np.float32) / 255.0)
            for part in (contract.DECODER, contract.ENCODER):
                for batch in BATCHES:
                    fns = contenders(model, arch, artifacts, part, batch)
                    data = (rng.standard_normal((batch, latent), dtype=np.float32) if part == contract.DECODER
                            else np.ascontiguousarray(x_test[:batch]))
                    reference = fns["keras_predict"](data)
                    timing = time_blocks(fns, data, calls[batch], settings["blocks"])
                    for name in fns:
                        same_weights = not (name == "torch" and arch == "conv")
                        timing[name]["max_abs_diff_vs_keras"] = max_diff(fns[name](data), reference) if same_weights else None
                        timing[name]["samples_per_s"] = batch / timing[name]["median_s"]
                    results[f"{arch}/{part}/{batch}"] = timing
                    line = ", ".join(f"{n} {t['median_s'] * 1e6:,.0f} us" for n, t in timing.items())
                    print(f"  {arch} {part} batch {batch}: {line}", flush=True)
    with open(args.out, "w") as f:
        json.dump({"results": results, "settings": settings}, f, indent=1)


if __name__ == "__main__":
    main()
