"""Importance-weighted test NLL of exported kvae artifacts, from the artifact contract alone.

Uses only numpy, onnxruntime, the manifest (ARTIFACTS.md) and the original
Fashion-MNIST IDX file: no kvae, keras or tensorflow. It is the outside check
that the exported graphs are the model kvae evaluates.

    python examples/onnx_iwae_nll.py ARTIFACTS --k 1000 --limit 1000
"""

import argparse
import gzip
import json
import math
import os

import numpy as np
import onnxruntime as ort


def read_test_images(data_dir):
    with gzip.open(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz"), "rb") as f:
        raw = f.read()
    n, h, w = (int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(3))
    return np.frombuffer(raw, np.uint8, offset=16).reshape(n, h, w, 1)


def log_likelihood(manifest, x, decoded):
    """log p(x|z) summed over pixels; x (b, c, *shape), decoded {name: (b * c, *shape)}."""
    b, c = x.shape[:2]
    if manifest["likelihood"] == "bernoulli":
        logits = decoded["x_logits"].reshape(b, c, -1).astype(np.float64)
        xf = x.reshape(b, c, -1)
        return (xf * logits - np.logaddexp(0.0, logits)).sum(-1)
    mean = decoded["x_mean"].reshape(b, c, -1).astype(np.float64)
    log_var = manifest["observation_log_var"]
    return -0.5 * (((x.reshape(b, c, -1) - mean) ** 2) / math.exp(log_var) + log_var + math.log(2 * math.pi)).sum(-1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("artifacts")
    p.add_argument("--data-dir", default=os.environ.get("KVAE_DATA_DIR", "/usr/share/datasets/fashion-mnist"))
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--batch", type=int, default=20)
    args = p.parse_args()

    manifest = json.load(open(os.path.join(args.artifacts, "manifest.json")))
    enc = ort.InferenceSession(os.path.join(args.artifacts, manifest["models"]["encoder"]["onnx"]), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(os.path.join(args.artifacts, manifest["models"]["decoder"]["onnx"]), providers=["CPUExecutionProvider"])
    pixels = read_test_images(args.data_dir)
    if manifest["likelihood"] == "bernoulli":  # the test-set protocol in the manifest
        x_all = (np.random.default_rng(0).random(pixels.shape, dtype=np.float32) < pixels / 255.0).astype(np.float32)
    else:
        x_all = pixels.astype(np.float32) / 255.0
    x_all = x_all[: args.limit]

    rng = np.random.default_rng(args.seed)
    nll = []
    for i in range(0, len(x_all), args.batch):
        x = x_all[i : i + args.batch]
        z_mean, z_log_var = enc.run(["z_mean", "z_log_var"], {"x": x})
        b, d = z_mean.shape
        eps = rng.standard_normal((b, args.k, d)).astype(np.float32)
        z = z_mean[:, None] + np.exp(0.5 * z_log_var)[:, None] * eps
        names = [o["name"] for o in manifest["models"]["decoder"]["outputs"]]
        decoded = dict(zip(names, dec.run(names, {"z": z.reshape(b * args.k, d)})))
        x_rep = np.broadcast_to(x[:, None], (b, args.k) + x.shape[1:])
        log_w = (
            log_likelihood(manifest, x_rep, decoded)
            - 0.5 * (z.astype(np.float64) ** 2).sum(-1)  # log p(z), constants cancel with q
            + 0.5 * (eps.astype(np.float64) ** 2 + z_log_var[:, None]).sum(-1)  # - log q(z|x)
        )
        m = log_w.max(axis=1)
        nll.extend(-(m + np.log(np.exp(log_w - m[:, None]).mean(axis=1))))
    print(json.dumps({"nll": float(np.mean(nll)), "k": args.k, "num_examples": len(nll)}))


if __name__ == "__main__":
    main()
