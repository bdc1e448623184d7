"""Importance-weighted test NLL of exported kvae artifacts, from the artifact contract alone.

Uses only numpy, onnxruntime, the manifest (ARTIFACTS.md) and the original
Fashion-MNIST IDX files: no kvae, keras or tensorflow. It is the outside check
that the exported graphs are the model kvae evaluates.

    python examples/onnx_iwae_nll.py ARTIFACTS --k 1000 --limit 1000

- Test images (ARTIFACTS.md, "Test-set protocol"): for a Bernoulli likelihood
  the published draw, numpy.random.seed(777), then binomial draws of the
  10,000 validation images (rows 50000..59999 of train-images-idx3-ubyte.gz)
  and of the t10k images, in that order; for a Gaussian one the t10k pixels / 255.
- log p(z): the closed form of N(0, I), or, when manifest["prior"]["type"] is
  "vamp", the `log_prior` ONNX model (format_version 1 manifests have no
  "prior" key: N(0, I)).
- A two-level HVAE (format_version 3, the "hierarchy" key): z = [z1 | z2] and
  log q(z|x) come from the encoder model, fed x and the noise eps; log p(z) =
  log p(z1|z2) + log p(z2) from the log_prior model, whatever the prior.
- Noise: rng = numpy.random.default_rng(--seed); for each batch of --batch
  images, eps = rng.standard_normal((batch, k, latent_dim), dtype=float32).
  Consecutive draws continue one stream, so image i gets the i-th (k, latent_dim)
  block whatever --batch is. kvae's `evaluate(model, x, k=k, seed=0)` draws
  the same blocks when its chunk holds all k samples of an image (chunk_size
  >= k: an MLP's default chunk holds 1,000, a conv model's about 100, see
  kvae.evaluate.default_chunk_size). Then the two estimates differ only by the
  computation (ONNX graphs vs Keras), not by Monte Carlo noise.
"""

import argparse
import gzip
import json
import math
import os

import numpy as np
import onnxruntime as ort

LOG_2PI = math.log(2.0 * math.pi)
VALIDATION_ROWS = slice(50000, 60000)  # the last 10,000 images of the training file
PUBLISHED_DRAW_SEED = 777


def read_idx_images(path):
    """uint8 images (n, h, w, 1) from a gzipped IDX3 file."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    n, h, w = (int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(3))
    return np.frombuffer(raw, np.uint8, offset=16).reshape(n, h, w, 1)


def test_images(data_dir, likelihood):
    """The evaluated test images, float32 (10000, 28, 28, 1): the published draw (Bernoulli) or grey levels."""
    test = read_idx_images(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz"))
    if likelihood != "bernoulli":
        return test.astype(np.float32) / 255.0
    train = read_idx_images(os.path.join(data_dir, "train-images-idx3-ubyte.gz"))
    if len(train) != 60000:
        raise SystemExit(
            f"train-images-idx3-ubyte.gz holds {len(train)} images; the protocol needs Fashion-MNIST's 60000"
        )
    validation = train[VALIDATION_ROWS]
    state = np.random.RandomState(PUBLISHED_DRAW_SEED)  # the stream of numpy.random.seed(777)
    state.binomial(1, validation.reshape(len(validation), -1).astype(np.float64) / 255)  # drawn first, then unused
    x = state.binomial(1, test.reshape(len(test), -1).astype(np.float64) / 255)
    return x.astype(np.float32).reshape(test.shape)


def session(artifacts, manifest, name):
    path = os.path.join(artifacts, manifest["models"][name]["onnx"])
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def log_prior_function(artifacts, manifest, max_floats=2**24):
    """z (m, d) -> float64 log p(z) (m,): the closed form of N(0, I), or the log_prior model.

    A VampPrior's log_prior graph holds (rows, K, d) floats per call, so z
    goes in chunks of max_floats / (K * d) rows (64 MB by default). An HVAE
    always has a log_prior model (p(z1|z2) is learned).
    """
    prior = manifest.get("prior", {"type": "normal"})
    if prior["type"] == "normal" and "hierarchy" not in manifest:
        return lambda z: -0.5 * (z.astype(np.float64) ** 2 + LOG_2PI).sum(-1)
    log_prior = session(artifacts, manifest, "log_prior")
    rows = max(1, max_floats // (prior.get("num_components", 1) * manifest["latent_dim"]))

    def log_pz(z):
        chunks = [log_prior.run(["log_pz"], {"z": z[i : i + rows]})[0] for i in range(0, len(z), rows)]
        return np.concatenate(chunks).astype(np.float64)

    return log_pz


def log_likelihood(manifest, x, decoded):
    """log p(x|z) summed over pixels; x (b, c, *shape), decoded {name: (b * c, *shape)}."""
    b, c = x.shape[:2]
    if manifest["likelihood"] == "bernoulli":
        logits = decoded["x_logits"].reshape(b, c, -1).astype(np.float64)
        xf = x.reshape(b, c, -1)
        return (xf * logits - np.logaddexp(0.0, logits)).sum(-1)
    mean = decoded["x_mean"].reshape(b, c, -1).astype(np.float64)
    log_var = manifest["observation_log_var"]
    return -0.5 * (((x.reshape(b, c, -1) - mean) ** 2) / math.exp(log_var) + log_var + LOG_2PI).sum(-1)


def decode(decoder, names, z, rows):
    """The decoder's outputs {name: (m, *shape)} for z (m, d), run on at most `rows` rows at a time."""
    parts = [decoder.run(names, {"z": z[i : i + rows]}) for i in range(0, len(z), rows)]
    return {name: np.concatenate([p[j] for p in parts]) for j, name in enumerate(names)}


def one_level_draws(encoder, x, eps):
    """z (b * k, d) and log q(z|x) (b, k) for x (b, ...) and eps (b, k, d): z = z_mean + exp(z_log_var / 2) * eps."""
    z_mean, z_log_var = encoder.run(["z_mean", "z_log_var"], {"x": x})
    z = z_mean[:, None] + np.exp(0.5 * z_log_var)[:, None] * eps  # (b, k, d)
    log_qz = -0.5 * (eps.astype(np.float64) ** 2 + z_log_var[:, None] + LOG_2PI).sum(-1)
    return z.reshape(-1, eps.shape[-1]), log_qz


def hierarchical_draws(encoder, x, eps, rows):
    """The same from an HVAE's encoder model, which draws z = [z1 | z2] itself from x and eps: x repeated k times.

    eps[..., :d1] makes z1 and eps[..., d1:] makes z2, as in kvae's evaluate; at most `rows` rows per call.
    """
    b, k, d = eps.shape
    x_rep = np.repeat(x, k, axis=0)  # (b * k, *input_shape), image-major like eps.reshape(b * k, d)
    eps = eps.reshape(b * k, d)
    parts = [
        encoder.run(["z", "log_qz"], {"x": x_rep[i : i + rows], "eps": eps[i : i + rows]}) for i in range(0, b * k, rows)
    ]
    z = np.concatenate([p[0] for p in parts])
    log_qz = np.concatenate([p[1] for p in parts]).astype(np.float64).reshape(b, k)
    return z, log_qz


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifacts")
    p.add_argument("--data-dir", default=os.environ.get("KVAE_DATA_DIR", "/usr/share/datasets/fashion-mnist"))
    p.add_argument("--k", type=int, default=1000, help="importance samples per image")
    p.add_argument("--limit", type=int, default=1000, help="the first N test images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=20, help="images per encoder call and noise draw")
    p.add_argument("--rows", type=int, default=10000, help="latent rows per decoder (and HVAE encoder) call (memory)")
    args = p.parse_args()

    with open(os.path.join(args.artifacts, "manifest.json")) as f:
        manifest = json.load(f)
    enc, dec = session(args.artifacts, manifest, "encoder"), session(args.artifacts, manifest, "decoder")
    log_prior = log_prior_function(args.artifacts, manifest)
    names = [o["name"] for o in manifest["models"]["decoder"]["outputs"]]
    x_all = test_images(args.data_dir, manifest["likelihood"])[: args.limit]

    hierarchical = "hierarchy" in manifest  # format_version 3
    rng = np.random.default_rng(args.seed)
    nll = []
    for i in range(0, len(x_all), args.batch):
        x = x_all[i : i + args.batch]
        b, d = len(x), manifest["latent_dim"]
        eps = rng.standard_normal((b, args.k, d), dtype=np.float32)
        if hierarchical:
            z, log_qz = hierarchical_draws(enc, x, eps, args.rows)  # (b * k, d), (b, k)
        else:
            z, log_qz = one_level_draws(enc, x, eps)
        decoded = decode(dec, names, z, args.rows)
        x_rep = np.broadcast_to(x[:, None], (b, args.k) + x.shape[1:])
        log_w = (
            log_likelihood(manifest, x_rep, decoded)  # log p(x|z)
            + log_prior(z).reshape(b, args.k)  # log p(z)
            - log_qz  # log q(z|x)
        )
        m = log_w.max(axis=1)
        nll.extend(-(m + np.log(np.exp(log_w - m[:, None]).mean(axis=1))))
    print(json.dumps({"nll": float(np.mean(nll)), "k": args.k, "num_examples": len(nll)}))


if __name__ == "__main__":
    main()
