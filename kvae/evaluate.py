"""Test-set evaluation of a trained VAE: negative ELBO, importance-weighted NLL, latent usage.

The NLL is the importance-weighted bound of Burda et al. (2015),
log p(x) ~ log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x), which tightens
toward log p(x) as k grows; papers report it with k = 5000. Samples come from
NumPy's PCG64(seed), not from the model's training-time random state, so an
evaluation repeats exactly. Memory stays bounded: images go in batches and
their k samples in chunks.

Two errors are reported, because they answer different questions:
- `nll_stderr`: the spread of the per-image NLL over the test images, std/sqrt(n).
  It says how much the number would move on another test set.
- `nll_mc_stderr`: the Monte Carlo error of the estimate on *these* images,
  from a jackknife over 10 groups of the k samples (each image's log p(x)
  estimate is recomputed leaving one group out). It says how much the number
  would move with another evaluation seed; comparing two models on the same
  images, the paired difference (`compare`) removes the first error.
"""

import math
import time

import keras
import numpy as np

from kvae.evaluate_progress import EvaluationProgress, fingerprint
from kvae_contract.errors import ConfigError, RunDirError

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al.: Cov_x(E_q[z_d]) above 1e-2
JACKKNIFE_GROUPS = 10  # groups of the k samples for the Monte Carlo error
SAMPLES_PER_CALL = 100_000  # latent samples decoded at once, at most: batch_size * chunk_size
# Numbers in one layer's output for one call, at most (1 GiB of float32). A conv decoder's
# 28x28x32 layer over 100,000 samples would hold 2.5e9, more than an int32 counts: TensorFlow segfaulted on it.
MAX_ACTIVATION = 2**28


def evaluate(model, x, y=None, k=5000, seed=0, batch_size=100, chunk_size=None, verbose=1, progress_path=None):
    """Evaluates `model` on x (n, *input_shape), already prepared (binarized if Bernoulli).

    Returns a dict of floats (nats per image unless named otherwise).
    `chunk_size` caps the number of latent samples decoded at once, per
    image; by default batch_size * chunk_size is about 100,000, less where a
    layer's output would pass MAX_ACTIVATION numbers (default_chunk_size). The
    noise is rng.standard_normal((images, chunk, latent_dim)) per call, so with
    chunk_size >= k image i gets the i-th (k, latent_dim) block of the seed's
    stream whatever batch_size is (as examples/onnx_iwae_nll.py draws). A
    conditional model needs the labels y and gives -log p(x|y).
    verbose: 0 silent, 1 a progress bar, 2 one line per batch (for logs).
    `progress_path`: a file where the batches done so far are kept, so that a
    stopped evaluation continues there with the same numbers (kvae.evaluate_progress).
    """
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"`k` must be a positive int. Received: k={k!r}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}")
    x = np.asarray(x, np.float32)
    if len(x) == 0:
        raise ConfigError(f"Evaluation needs at least one image (--limit >= 1). Received: x.shape={x.shape}")
    y_one_hot = model.labels_for(y if model.num_classes is not None else None, len(x))  # (n, C) or None
    chunk_size = chunk_size or default_chunk_size(model, k, batch_size)
    n, dims = len(x), math.prod(x.shape[1:])
    settings = {"k": k, "seed": seed, "batch_size": int(batch_size), "chunk_size": chunk_size, "images": n}
    if progress_path is not None:  # hashing costs a pass over the data and weights: only when it is kept
        settings["images_sha256"] = fingerprint(x, y_one_hot)
        settings["weights_sha256"] = fingerprint(*(keras.ops.convert_to_numpy(w) for w in model.weights))
    progress = EvaluationProgress.open(progress_path, settings)
    rng = np.random.default_rng(seed)
    if progress.done:
        rng.bit_generator.state = progress.rng_state
        if verbose:
            print(f"Continuing the evaluation in {progress_path} after {progress.done} of {n} images", flush=True)
    elif verbose == 2:
        print(f"Evaluating {n} images, k = {k} samples each: {batch_size} images at a time, "
              f"{chunk_size} samples per image per call", flush=True)
    log_prior = model.numpy_log_prior()
    bar = keras.utils.Progbar(n, unit_name="image") if verbose == 1 else None
    if bar and progress.done:
        bar.update(progress.done)
    started, first = time.monotonic(), progress.done
    for start in range(progress.done, n, batch_size):
        xb = x[start : start + batch_size]
        yb = None if y_one_hot is None else y_one_hot[start : start + batch_size]
        log_px_z, ratios = _log_weights(model, xb, yb, k, chunk_size, rng, log_prior)
        log_w = log_px_z + sum(ratios.values())  # (b, k)
        means, kl_per_dim = model.posterior_summary(xb, yb)
        progress.add({
            "nll": -(_log_mean_exp(log_w)),
            "mc_var": _jackknife_variance(log_w),
            "recon": -log_px_z.mean(axis=1),
            **{f"kl.{level}": -r.mean(axis=1) for level, r in ratios.items()},  # Monte Carlo KL over the k samples
            "kl_dim": kl_per_dim,
            "z_mean": means,
        }, rng.bit_generator.state)
        if bar:
            bar.add(len(xb))
        elif verbose:
            elapsed = time.monotonic() - started
            left = elapsed / (progress.done - first) * (n - progress.done)  # at this sitting's rate
            print(f"{progress.done}/{n} images, {elapsed:.0f} s, about {left:.0f} s left", flush=True)
    columns = progress.arrays()
    nll, mc_var, recon = columns["nll"], columns["mc_var"], columns["recon"]
    kl = {name[len("kl."):]: v for name, v in columns.items() if name.startswith("kl.")}
    kl_dim, z_means = columns["kl_dim"], columns["z_mean"]
    if model.prior == "normal" and list(kl) == ["z"]:
        kl = {"z": kl_dim.sum(axis=1)}  # the closed form, exact
    kl_total = sum(kl.values())
    activity = z_means.var(axis=0)
    active = activity > ACTIVE_UNIT_THRESHOLD
    result = {
        "num_examples": n,
        "k": k,
        "seed": seed,
        "prior": model.prior,
        "nll": float(nll.mean()),
        "nll_stderr": float(nll.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
        "nll_mc_stderr": float(math.sqrt(mc_var.sum()) / n),
        "bits_per_dim": float(nll.mean() / (dims * math.log(2))),
        "negative_elbo": float((recon + kl_total).mean()),
        "reconstruction_loss": float(recon.mean()),
        "kl_loss": float(kl_total.mean()),
        "active_units": int(active.sum()),
        "latent_dim": int(z_means.shape[1]),
        # Per dimension, against N(0, I) (an HVAE's z1: against p(z1|z2)): the usage of each latent.
        "kl_per_dim": [float(v) for v in kl_dim.mean(axis=0)],
        "activity_per_dim": [float(v) for v in activity],
        "nll_per_image": [float(v) for v in nll],  # for paired comparisons (kvae compare)
    }
    if len(kl) > 1:  # a hierarchical model: each level's KL and active units; the flat code is the levels in order
        bounds = np.cumsum([0, *model.latent_dims])
        result["levels"] = [
            {"name": level, "latent_dim": int(hi - lo), "kl": float(kl[level].mean()), "active_units": int(active[lo:hi].sum())}
            for level, lo, hi in zip(kl, bounds[:-1], bounds[1:])
        ]
    if y is not None:
        result["labels_seen"] = int(len(np.unique(y)))
    return result


def default_chunk_size(model, k, batch_size):
    """Samples per image per call: batch_size * chunk is at most SAMPLES_PER_CALL, and no layer's output more
    than MAX_ACTIVATION numbers. (The chunk decides the order of the draws, so a default that changed would
    change every evaluation's numbers: MLPs keep 100,000 // batch_size.)"""
    widest = max(widest_layer(sub) for sub in model.layers)  # numbers per sample in the biggest layer output
    return max(1, min(k, SAMPLES_PER_CALL // batch_size, MAX_ACTIVATION // (batch_size * widest)))


def widest_layer(model):
    """The most numbers any layer of a functional `model` outputs per example (1 for a model without layers)."""
    widest = 1
    for layer in getattr(model, "layers", []):
        try:
            outputs = keras.tree.flatten(layer.output)
        except (AttributeError, ValueError):  # a layer called more than once, or never: no single output
            continue
        for t in outputs:
            widest = max(widest, math.prod(d for d in t.shape[1:] if d is not None))
    return widest


def _log_weights(model, x, y, k, chunk_size, rng, log_prior):
    """k importance samples per image, drawn in chunks: log p(x|z_i) (b, k) and {level: log p - log q} (b, k), float64."""
    log_px_z, ratios = [], []
    for done in range(0, k, chunk_size):
        c = min(chunk_size, k - done)
        eps = rng.standard_normal((len(x), c, model.latent_dim), dtype=np.float32)
        log_px, ratio = model.importance_terms(x, y, eps, log_prior)
        log_px_z.append(log_px)
        ratios.append(ratio)
    return np.concatenate(log_px_z, axis=1), {level: np.concatenate([r[level] for r in ratios], axis=1) for level in ratios[0]}


def _log_mean_exp(log_w):
    """log (1/k) sum_i exp(log_w[:, i]), stable: (b,)."""
    m = log_w.max(axis=1)
    return m + np.log(np.exp(log_w - m[:, None]).mean(axis=1))


def _jackknife_variance(log_w, groups=JACKKNIFE_GROUPS):
    """Jackknife variance of each row's log-mean-exp over `groups` contiguous groups of samples: (b,).

    With k < 2 samples there is nothing to resample; the variance is then NaN.
    """
    k = log_w.shape[1]
    groups = min(groups, k)
    if groups < 2:
        return np.full(len(log_w), np.nan)
    bounds = np.linspace(0, k, groups + 1).astype(int)
    leave_out = np.stack(
        [_log_mean_exp(np.concatenate([log_w[:, : bounds[g]], log_w[:, bounds[g + 1] :]], axis=1)) for g in range(groups)],
        axis=1,
    )  # (b, groups)
    return (groups - 1) / groups * ((leave_out - leave_out.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)


def compare(a, b):
    """Paired comparison of two evaluations on the same test images: dict of nats per image.

    difference = mean(nll_a - nll_b) (negative: a is better); its standard
    error over images comes from the paired per-image differences, and the
    Monte Carlo error combines both evaluations' jackknife errors.
    """
    for name, result in (("a", a), ("b", b)):
        if "nll_per_image" not in result:
            raise RunDirError(f"Evaluation {name} has no per-image NLL; re-run `kvae evaluate` with this kvae version.")
    na, nb = np.asarray(a["nll_per_image"]), np.asarray(b["nll_per_image"])
    if len(na) != len(nb) or a.get("test_draw") != b.get("test_draw"):
        raise ConfigError(
            "The two evaluations must cover the same test images: evaluate both with the same --limit. "
            f"Received: {len(na)} images ({a.get('test_draw')}) and {len(nb)} images ({b.get('test_draw')})"
        )
    diff = na - nb
    n = len(diff)
    return {
        "num_examples": n,
        "k": [a["k"], b["k"]],
        "nll": [a["nll"], b["nll"]],
        "difference": float(diff.mean()),
        "difference_stderr": float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
        "difference_mc_stderr": float(math.hypot(a["nll_mc_stderr"], b["nll_mc_stderr"])),
        "a_better_on": float((diff < 0).mean()),  # share of images where a has the lower NLL
    }


def format_comparison(c, name_a="A", name_b="B"):
    """One sentence a reader can check, then the numbers."""
    d, s, m = c["difference"], c["difference_stderr"], c["difference_mc_stderr"]
    better, worse = (name_a, name_b) if d < 0 else (name_b, name_a)
    return "\n".join([
        f"{better} beats {worse} by {abs(d):.3f} ± {s:.3f} nats (paired standard error over {c['num_examples']} test images; "
        f"Monte Carlo error ± {m:.3f})",
        f"NLL {name_a}: {c['nll'][0]:.3f} (k={c['k'][0]}), {name_b}: {c['nll'][1]:.3f} (k={c['k'][1]})",
        f"{name_a} has the lower NLL on {100 * c['a_better_on']:.1f}% of the images",
    ])


def format_table(result):
    """A short human-readable table of an evaluation result."""
    rows = [
        ("test images", f"{result['num_examples']}"),
        (f"NLL (IWAE, k={result['k']})", f"{result['nll']:.3f} nats"),
        ("  spread over images", f"± {result['nll_stderr']:.3f} (standard error of the mean)"),
        ("  Monte Carlo error", f"± {result['nll_mc_stderr']:.3f} (jackknife over {JACKKNIFE_GROUPS} sample groups)"),
        ("bits per dimension", f"{result['bits_per_dim']:.4f}"),
        ("negative ELBO", f"{result['negative_elbo']:.2f} nats"),
        ("  reconstruction", f"{result['reconstruction_loss']:.2f} nats"),
        ("  KL", f"{result['kl_loss']:.2f} nats"),
        ("active units", f"{result['active_units']} of {result['latent_dim']}"),
    ]
    for level in result.get("levels", []):
        rows.append((f"  level {level['name']}", f"KL {level['kl']:.2f} nats, {level['active_units']} of "
                                                  f"{level['latent_dim']} units active"))
    width = max(len(r[0]) for r in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    top = np.argsort(result["kl_per_dim"])[::-1][:8]
    lines.append(f"{'KL of top dims':<{width}}  " + ", ".join(f"z{i}: {result['kl_per_dim'][i]:.2f}" for i in top))
    return "\n".join(lines)
