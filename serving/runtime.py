"""The VAE on onnxruntime: encode, decode, sample, reconstruct, interpolate, log_prior. NumPy + onnxruntime only.

One-level VAEs (format_version 1 and 2) and two-level HVAEs (format_version 3,
the flat code z = [z1 | z2]) have the same methods; an HVAE's go through its
four models (ARTIFACTS.md, "The hierarchical VAE").
"""

import math
import operator
import os

import numpy as np
import onnxruntime as ort

from kvae_contract import artifacts

from . import manifest as mf
from .errors import ArtifactError, InputError, NotFoundError

DTYPES = artifacts.DTYPES  # Open Inference Protocol datatype -> NumPy; the contract uses FP32 only
ORT_TYPES = {artifacts.FP32: "tensor(float)"}
LOG_2PI = math.log(2.0 * math.pi)
# Limits on what a caller may ask for (InputError beyond them, naming the argument):
MAX_BATCH_SIZE = 65536  # rows per call by default: 65536 28x28 images are 205 MB of float32 out
MAX_TEMPERATURE = 1000.0  # scales the prior's noise (1: the prior itself); keeps temperature * eps far inside float32
MAX_SEED = 2**63 - 1  # NumPy takes any int >= 0; this one fits an int64 (JSON clients, X-Seed, Triton)
PIXEL_RANGE = (0.0, 1.0)  # what the encoder was trained on: uint8 / 255 (ARTIFACTS.md, value_range)


class Runtime:
    """One onnxruntime session per model of an artifacts directory, loaded once.

    Args:
        artifacts_dir: what `kvae export` wrote (manifest.json, onnx/...).
        intra_op_num_threads: threads per session.run; small, so that a server
            answering several requests at once does not oversubscribe the cores.
        allow_spinning: let idle threads spin. Off by default: a spinning pool
            burns CPU between requests, which a server should not.
        max_batch_size: the most rows one call takes (and `sample` draws); more is an
            InputError that says so, instead of an out-of-memory failure inside onnxruntime.
            `kvae serve --max-batch-size` passes its limit through.
    """

    def __init__(self, artifacts_dir, intra_op_num_threads=2, allow_spinning=False, max_batch_size=MAX_BATCH_SIZE):
        self.max_batch_size = _positive_int(max_batch_size, "max_batch_size")
        self.artifacts_dir = os.fspath(artifacts_dir)
        self.manifest = mf.load(self.artifacts_dir)
        self.latent_dim = self.manifest["latent_dim"]
        self.input_shape = tuple(self.manifest["input_shape"])
        self.likelihood = self.manifest.get("likelihood")
        self.num_classes = self.manifest.get("num_classes")  # None: unconditional
        prior = mf.prior_of(self.manifest)
        self.prior = prior["type"]  # "normal" (N(0, I); also every format_version 1 artifact) or "vamp"; HVAE: of z2
        self.num_components = prior.get("num_components")  # K of a VampPrior, else None
        self.latent_dims = mf.latent_dims(self.manifest)  # an HVAE's (d1, d2), z = [z1 | z2]; None for one level
        self.hierarchical = self.latent_dims is not None
        # model -> {"inputs"/"outputs": {tensor name: manifest entry {name, datatype, shape}}}
        self.models = {
            name: {kind: {t["name"]: t for t in self.manifest["models"][name][kind]} for kind in ("inputs", "outputs")}
            for name in mf.model_names(self.manifest)
        }
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(intra_op_num_threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        self.sessions = {name: self._open(name, options) for name in self.models}

    @classmethod
    def load(cls, artifacts_dir, **kwargs):
        return cls(artifacts_dir, **kwargs)

    def _open(self, name, options):
        relpath = self.manifest["models"][name]["onnx"]
        data = mf.read_verified(self.artifacts_dir, self.manifest, relpath)  # hash the bytes we load
        redo = f"Re-export the model into {self.artifacts_dir}."
        try:
            session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise ArtifactError(f"onnxruntime cannot load {relpath}: {e}. {redo}") from None
        spec = self.models[name]
        actual = {
            "inputs": {t.name: t.type for t in session.get_inputs()},
            "outputs": {t.name: t.type for t in session.get_outputs()},
        }
        for kind in ("inputs", "outputs"):
            for t in spec[kind].values():
                if t["datatype"] not in DTYPES:
                    raise ArtifactError(
                        f"{name} {kind[:-1]} {t['name']!r} has datatype {t['datatype']}; serving reads {list(DTYPES)}."
                    )
                if actual[kind].get(t["name"]) != ORT_TYPES[t["datatype"]]:
                    raise ArtifactError(
                        f"{relpath} does not match manifest.json: {kind} {sorted(actual[kind])} in the graph, "
                        f"{kind[:-1]} {t['name']!r} ({t['datatype']}) in the manifest. {redo}"
                    )
        if set(actual["inputs"]) != set(spec["inputs"]):
            raise ArtifactError(
                f"{relpath} takes inputs {sorted(actual['inputs'])}, "
                f"manifest.json says {sorted(spec['inputs'])}. {redo}"
            )
        return session

    # The generic entry point, shared by the Python API and the inference server.

    def check_input(self, model, name, value):
        """`value` as a float32 array that fits input `name` of `model`, or InputError saying why not."""
        spec = self.models[model]["inputs"].get(name)
        if spec is None:
            raise InputError(
                f"model {model!r} has no input {name!r}; its inputs are {list(self.models[model]['inputs'])}."
            )
        a = np.asarray(value)
        if a.dtype.kind != "f":
            hint = " (divide uint8 pixels by 255)" if a.dtype == np.uint8 else ""
            raise InputError(f"{model} input {name!r} expects float32 values, received dtype {a.dtype}{hint}.")
        expected = spec["shape"]
        fits = a.ndim == len(expected) and all(e == -1 or e == d for e, d in zip(expected, a.shape, strict=True))
        if not fits:
            raise InputError(
                f"{model} input {name!r} expects shape {expected} (-1: any batch size), received {list(a.shape)}."
            )
        if a.shape[0] == 0:
            raise InputError(
                f"{model} input {name!r} received an empty batch (shape {list(a.shape)}); send at least one item."
            )
        if a.shape[0] > self.max_batch_size:
            raise InputError(
                f"{model} input {name!r}: batch size {a.shape[0]} is over this runtime's max_batch_size of "
                f"{self.max_batch_size}; send smaller batches, or raise Runtime(..., max_batch_size=...) "
                f"(kvae serve --max-batch-size). Received: batch size {a.shape[0]}"
            )
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, caught below
            a = np.ascontiguousarray(a, dtype=DTYPES[spec["datatype"]])
        if not np.isfinite(a).all():
            raise InputError(f"{model} input {name!r} contains NaN or Inf (or values beyond float32's range).")
        return a

    def run(self, model, inputs, outputs=None):
        """inputs {name: array} -> {output name: array} for `outputs` (default: all the manifest lists)."""
        if model not in self.models:
            raise NotFoundError(f"unknown model {model!r}; models are {list(self.models)}.")
        spec = self.models[model]
        missing = [n for n in spec["inputs"] if n not in inputs]
        if missing:
            raise InputError(f"model {model!r} needs inputs {list(spec['inputs'])}; missing {missing}.")
        feed = {name: self.check_input(model, name, value) for name, value in inputs.items()}
        batches = {a.shape[0] for a in feed.values()}
        if len(batches) > 1:
            raise InputError(f"model {model!r} inputs have different batch sizes {sorted(batches)}.")
        outputs = list(spec["outputs"]) if outputs is None else list(outputs)
        unknown = [n for n in outputs if n not in spec["outputs"]]
        if unknown:
            raise InputError(f"model {model!r} has no outputs {unknown}; its outputs are {list(spec['outputs'])}.")
        return dict(zip(outputs, self.sessions[model].run(outputs, feed), strict=True))

    # The VAE operations, on NumPy arrays. `labels` (conditional models only,
    # required there): an int for every row, n class ids, or (n, C) one-hot rows.

    def encode(self, x, labels=None):
        """x (n, *input_shape) float pixels in [0, 1] -> (z_mean, z_log_var), each (n, latent_dim).

        An HVAE returns (z, None): z is its deterministic code [z1 | z2], the
        encoder model run with eps = 0 (z2's posterior mean, then z1's given
        it; HVAE.encode's z_mean), used where a one-level z_mean is (reconstruct,
        interpolate). There is no z_log_var to return: the variance of z1
        depends on the z2 drawn. For draws from the posterior run the encoder
        itself, run("encoder", {"x": x, "eps": eps}) -> z, log_qz.
        """
        x = self.check_pixels(x)
        if self.hierarchical:
            eps = np.zeros((len(x), self.latent_dim), np.float32)  # the deterministic code
            inputs = self._with_labels({mf.X: x, mf.EPS: eps}, labels, np.shape(x)[:1])  # labels refused: unconditional
            return self.run(mf.ENCODER, inputs, [mf.Z])[mf.Z], None
        inputs = self._with_labels({mf.X: x}, labels, np.shape(x)[:1])
        out = self.run(mf.ENCODER, inputs, [mf.Z_MEAN, mf.Z_LOG_VAR])
        return out[mf.Z_MEAN], out[mf.Z_LOG_VAR]

    def check_pixels(self, x, what="x"):
        """`x` as the encoder's float32 input (check_input), with every pixel finite and in [0, 1], or InputError."""
        x = self.check_input(mf.ENCODER, mf.X, x)
        low, high = PIXEL_RANGE
        x_min, x_max = float(x.min()), float(x.max())
        if x_min < low or x_max > high:
            raise InputError(
                f"`{what}` pixels must be in [{low:g}, {high:g}] (float images: uint8 values / 255). "
                f"Received: {what} with values from {x_min:g} to {x_max:g}"
            )
        return x

    def decode(self, z, labels=None):
        """z (n, latent_dim) -> x_mean (n, *input_shape), the mean of p(x|z[, y])."""
        inputs = self._with_labels({mf.Z: z}, labels, np.shape(z)[:1])
        return self.run(mf.DECODER, inputs, [mf.X_MEAN])[mf.X_MEAN]

    def one_hot(self, labels, n):
        """Labels -> float32 one-hot (n, num_classes): an int, n class ids in [0, C), or (n, C) rows."""
        c = self.num_classes
        if c is None:
            raise InputError(f"this model is not conditional (no num_classes in its manifest); received labels {labels!r}.")
        try:
            a = np.asarray(labels)
        except (ValueError, TypeError):
            raise InputError("labels are ragged or not numbers.") from None
        if a.ndim == 0:
            a = np.full((n,), a)
        if a.ndim == 2 and a.shape == (n, c) and a.dtype.kind in "iuf":
            return a.astype(np.float32)
        if a.ndim != 1 or a.dtype.kind not in "iu" or len(a) != n:
            raise InputError(
                f"labels must be an int, {n} class ids (ints in [0, {c})) or [{n}, {c}] one-hot rows; "
                f"received shape {list(a.shape)} of {a.dtype}."
            )
        if len(a) and (a.min() < 0 or a.max() >= c):
            raise InputError(f"class ids must be in [0, {c}), received {a.min()} to {a.max()}.")
        return artifacts.one_hot(a, c)

    def _with_labels(self, inputs, labels, batch):
        """Adds the one-hot "y" input for a conditional model (required there; refused otherwise)."""
        if self.num_classes is None and labels is None:
            return inputs
        if labels is None:
            raise InputError(f"this model is conditional on {self.num_classes} classes: pass labels.")
        n = batch[0] if batch else 0
        return {**inputs, mf.LABELS: self.one_hot(labels, n)}

    def sample_z(self, n, seed=None, temperature=1.0):
        """z (n, latent_dim) from the prior, drawn exactly as ARTIFACTS.md (and kvae's sample_prior) say.

        (eps, component) = kvae_contract.artifacts.draw_prior_noise(n, latent_dim, seed, K).
        N(0, I) prior: z = temperature * eps. VampPrior: the prior model maps
        (temperature * eps, one-hot component) to z = mu_c + exp(log_var_c / 2) * temperature * eps.
        HVAE (either prior over z2): always the prior model, which maps the same
        inputs to z = [z1 | z2] through p(z2) and p(z1|z2) (HVAE.sample_prior).
        """
        n, seed, temperature = _check_sampling(n, seed, temperature, self.max_batch_size)
        eps, component = artifacts.draw_prior_noise(n, self.latent_dim, seed, self.num_components)
        if self.prior == mf.NORMAL and not self.hierarchical:
            return temperature * eps
        inputs = {mf.EPS: np.float32(temperature) * eps}
        if component is not None:
            inputs[mf.COMPONENT] = artifacts.one_hot(component, self.num_components)  # (n, K)
        return self.run(mf.PRIOR, inputs, [mf.Z])[mf.Z]

    def log_prior(self, z):
        """log p(z) in nats, z (n, latent_dim) -> (n,) float32, under the artifacts' prior.

        VampPrior: the log_prior model, log (1/K) sum_k N(z | mu_k, diag exp(log_var_k)).
        HVAE: the log_prior model, log p(z1|z2) + log p(z2).
        N(0, I): the closed form -0.5 * sum_d (z_d^2 + log 2 pi), in float64 then rounded.
        """
        if mf.LOG_PRIOR in self.models:
            return self.run(mf.LOG_PRIOR, {mf.Z: z}, [mf.LOG_PZ])[mf.LOG_PZ]
        z = self.check_input(mf.DECODER, mf.Z, z).astype(np.float64)  # the same (n, latent_dim) checks
        return (-0.5 * (z**2 + LOG_2PI).sum(axis=-1)).astype(np.float32)

    def sample(self, n, seed=None, temperature=1.0, labels=None):
        """n images (n, *input_shape) decoded from seeded prior samples (sample_z); the same seed gives the same images.

        The prior is the artifacts' own: N(0, I), or the learned VampPrior (or an HVAE's p(z2) p(z1|z2))
        through the prior model.

        Conditional models decode with `labels`: an int (one class), n labels,
        or by default 0, 1, ..., C-1, 0, ... (every class in turn), as kvae's VAE.sample.
        """
        z = self.sample_z(n, seed, temperature)
        if self.num_classes is not None and labels is None:
            labels = artifacts.default_labels(len(z), self.num_classes)
        return self.decode(z, labels)

    def reconstruct(self, x, labels=None):
        """Decodes the posterior mean: x (n, *input_shape) -> x_mean (n, *input_shape), deterministic."""
        return self.decode(self.encode(x, labels)[0], labels)

    def interpolate(self, x_a, x_b, steps=8, labels=None):
        """Images (steps, *input_shape) decoded along the straight line between the posterior means of x_a and x_b.

        x_a, x_b: one image each, shaped input_shape or (1, *input_shape). The ends are included.
        Conditional models: `labels` are the two images' classes; the one-hot label moves along the line too.
        """
        steps = _int(steps, "steps", 1, maximum=self.max_batch_size, why=" (the runtime's max_batch_size)")
        if steps < 2:
            raise InputError(f"`steps` must be >= 2 to include both ends, received {steps}.")
        pair = [np.asarray(x) for x in (x_a, x_b)]
        pair = [x[None] if x.shape == self.input_shape else x for x in pair]  # one image -> a batch of one
        for x in pair:
            if x.shape != (1, *self.input_shape):
                raise InputError(
                    f"interpolate expects one image of shape {list(self.input_shape)} each, "
                    f"received shape {list(x.shape)}."
                )
        y = None if labels is None else self.one_hot(labels, 2)  # (2, C); a conditional model without labels fails in encode
        z_a, z_b = self.encode(np.concatenate(pair), y)[0]
        t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
        return self.decode((1 - t) * z_a + t * z_b, None if y is None else (1 - t) * y[0] + t * y[1])


def _int(v, what, minimum, kind="an int", why="", maximum=None):
    """`v` as a Python int in [minimum, maximum] (bools refused), or InputError naming `what`."""
    try:
        if isinstance(v, (bool, np.bool_)):
            raise TypeError
        v = operator.index(v)
    except TypeError:
        raise InputError(f"`{what}` must be {kind}, received {_short(v)}.") from None
    if v < minimum or (maximum is not None and v > maximum):
        bounds = f">= {minimum}" if maximum is None else f">= {minimum} and <= {maximum}"
        raise InputError(f"`{what}` must be {bounds}{why}. Received: {what}={_short(v)}")
    return v


def _positive_int(v, what):
    return _int(v, what, 1)


def _short(v, limit=40):
    """repr(v), cut to `limit` characters (a 400-digit int stays readable in an error)."""
    text = repr(v)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _check_sampling(n, seed, temperature, max_batch_size=MAX_BATCH_SIZE):
    """(n, seed, temperature) after range checks; each failure an InputError naming the argument and its value."""
    n = _int(n, "n", 1, maximum=max_batch_size, why=" (images per call; the runtime's max_batch_size)")
    if seed is not None:
        seed = _int(seed, "seed", 0, kind="an int >= 0 or None", why=" (NumPy's seeding rule, within int64)",
                    maximum=MAX_SEED)
    if isinstance(temperature, (bool, np.bool_)) or not isinstance(temperature, (int, float, np.integer, np.floating)):
        raise InputError(f"`temperature` must be a number, received {_short(temperature)}.")
    try:
        value = float(temperature)
    except OverflowError:  # an int beyond float's range (10**400): math.isfinite itself would raise
        value = math.inf
    if not (math.isfinite(value) and 0 <= value <= MAX_TEMPERATURE):
        raise InputError(
            f"`temperature` must be finite and in [0, {MAX_TEMPERATURE:g}] (it scales the prior's noise; 1 samples "
            f"the prior itself). Received: temperature={_short(temperature)}"
        )
    return n, seed, temperature
