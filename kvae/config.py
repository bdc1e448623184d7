"""The flat training configuration: everything needed to rebuild and retrain a run."""

import dataclasses
import json
import re

from kvae_contract.errors import ConfigError, RunDirError

ARCHITECTURES = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "gaussian")

LR_SCHEDULES = ("constant", "cosine")
MLP_LAYERS = ("dense", "gated")  # tanh Dense, or GatedDense as in the VampPrior paper
PRIORS = ("normal", "vamp")  # as kvae.priors.PRIORS; not imported, to keep the CLI light
OBJECTIVES = ("elbo", "iwae")
COLOR_MODES = ("grayscale", "rgb", "rgba")  # as keras.utils.image_dataset_from_directory names them
DTYPE_POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")

# Documented recipes (`kvae train --preset NAME`); flags given with a preset override it.
PRESETS = {
    # The N(0, I) prior on the VampPrior paper's MLP (gated 300-300, latent 40, log-variance in [-6, 2]),
    # trained on the importance-weighted bound with k = 5 and a cosine decay; best-validation weights kept.
    "fashion-mlp": dict(
        architecture="mlp", mlp_layer="gated", mlp_hidden_units=[300, 300], latent_dim=40, log_var_bounds=[-6.0, 2.0],
        objective="iwae", iw_samples=5, likelihood="bernoulli", epochs=350, batch_size=100, learning_rate=1e-3,
        lr_schedule="cosine", warmup_epochs=20, keep_best=True,
    ),
    # The VampPrior paper's MLP (gated 300-300, latent 40, log-variance in [-6, 2], K = 500) trained on the
    # importance-weighted bound with k = 5 and a cosine decay; model.keras keeps the best-validation epoch.
    "fashion-vamp": dict(
        architecture="mlp", mlp_layer="gated", mlp_hidden_units=[300, 300], latent_dim=40, log_var_bounds=[-6.0, 2.0],
        prior="vamp", num_pseudo_inputs=500, objective="iwae", iw_samples=5, likelihood="bernoulli", epochs=350,
        batch_size=100, learning_rate=1e-3, lr_schedule="cosine", warmup_epochs=20, keep_best=True,
    ),
    # The two-level HVAE of the VampPrior paper (gated 300-300 MLPs, z1 and z2 of 40 each, log-variances in
    # [-6, 2], VampPrior over z2 with K = 500), trained exactly like fashion-vamp, so that the two differ in
    # the hierarchy alone (an epoch costs 1.6 to 1.8 times fashion-vamp's: 4.4 to 4.9 hours here); best-validation
    # weights kept.
    "fashion-hvae": dict(
        architecture="mlp", levels=2, mlp_layer="gated", mlp_hidden_units=[300, 300], latent_dim=40,
        log_var_bounds=[-6.0, 2.0], prior="vamp", num_pseudo_inputs=500, objective="iwae", iw_samples=5,
        likelihood="bernoulli", epochs=350, batch_size=100, learning_rate=1e-3, lr_schedule="cosine",
        warmup_epochs=20, keep_best=True,
    ),
    "fashion-conv": dict(
        architecture="conv", latent_dim=50, conv_dense_units=512, likelihood="bernoulli", epochs=40, batch_size=128,
        learning_rate=1e-3, lr_schedule="cosine", warmup_epochs=5,
    ),
}


@dataclasses.dataclass
class TrainConfig:
    run_dir: str = "runs/fashion-mlp"
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    train_limit: int | None = None  # use only the first N training images (quick runs, tests)
    eval_limit: int | None = None  # validate and test on the first N images of each evaluation split (quick runs, tests)
    architecture: str = "mlp"
    latent_dim: int = 16  # per level: a two-level model has z1 and z2 of this size each
    levels: int = 1  # stochastic levels: 1 (VAE) or 2 (HVAE: q(z2|x) q(z1|x, z2), p(z2) p(z1|z2) p(x|z1, z2); MLP only)
    conv_dense_units: int = 16  # the conv encoder's dense layer (16 as in the keras.io example)
    mlp_hidden_units: list = dataclasses.field(default_factory=lambda: [200, 200])  # decoder mirrors encoder
    mlp_layer: str = "dense"  # or "gated"
    log_var_bounds: list | None = None  # [low, high]: clip the encoder's z_log_var (the VampPrior paper: [-6, 2])
    prior: str = "normal"  # or "vamp"
    num_pseudo_inputs: int = 500  # the VampPrior's K
    objective: str = "elbo"  # or "iwae"
    iw_samples: int = 1  # k of the IWAE objective
    likelihood: str = "bernoulli"
    gaussian_variance: str | float = "learned"
    beta: float = 1.0
    warmup_epochs: int = 0
    free_bits: float = 0.0
    epochs: int = 10
    batch_size: int = 100
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"  # or "cosine": decays to 0 over all epochs
    seed: int = 0
    # Early stopping on the validation bound (negative ELBO, or IW bound under "iwae"); None: never stop early.
    early_stopping_patience: int | None = None
    keep_best: bool = False  # model.keras holds the best-validation epoch's weights, not the last
    strategy: str = "default"  # tf.distribute: default, mirrored, multi-worker
    # Other data: dataset "folder:PATH" (images, one subfolder per class) or a tfds name.
    image_size: list | None = None  # [height, width] to resize to; None: folders use the size of most images
    color_mode: str | None = None  # folders: grayscale, rgb or rgba; None: the mode (grey or colour) of most images
    skip_bad_images: bool = False  # folders: leave unreadable image files out with a warning, instead of failing
    num_classes: int | None = None  # conditional VAE on the dataset's labels 0..C-1
    dtype_policy: str | None = None  # Keras dtype policy of the layers, e.g. mixed_bfloat16
    # Written by train(), never typed: what the data turned out to be (image_size, color_mode, input_shape, image
    # counts, skipped_files; kvae.data.splits.describe_data). Not compared when a run resumes.
    resolved_data: dict | None = None

    def __post_init__(self):
        # JSON and argparse give lists; tuples would compare unequal to a saved config.
        if self.image_size is not None:
            self.image_size = list(self.image_size)
        self.mlp_hidden_units = list(self.mlp_hidden_units)
        if self.log_var_bounds is not None:
            self.log_var_bounds = [float(v) for v in self.log_var_bounds]
        checks = [
            (self.architecture in ARCHITECTURES, f"architecture must be one of {ARCHITECTURES}"),
            (self.likelihood in LIKELIHOODS, f"likelihood must be one of {LIKELIHOODS}"),
            (self.latent_dim >= 1, "latent_dim must be >= 1"),
            (len(self.mlp_hidden_units) >= 1 and min(self.mlp_hidden_units) >= 1,
             "mlp_hidden_units must list one or more layer sizes >= 1"),
            (self.mlp_layer in MLP_LAYERS, f"mlp_layer must be one of {MLP_LAYERS}"),
            (self.levels in (1, 2), "levels must be 1 or 2"),
            (self.levels == 1 or self.architecture == "mlp", "levels 2 (the HVAE) needs architecture mlp"),
            (self.levels == 1 or self.num_classes is None, "levels 2 (the HVAE) is unconditional: no num_classes"),
            (self.log_var_bounds is None or (len(self.log_var_bounds) == 2 and self.log_var_bounds[0] < self.log_var_bounds[1]),
             "log_var_bounds must be [low, high] with low < high"),
            (self.prior in PRIORS, f"prior must be one of {PRIORS}"),
            (self.num_pseudo_inputs >= 1, "num_pseudo_inputs must be >= 1"),
            (self.objective in OBJECTIVES, f"objective must be one of {OBJECTIVES}"),
            (self.iw_samples >= 1, "iw_samples must be >= 1"),
            (self.objective == "iwae" or self.iw_samples == 1, "iw_samples > 1 needs objective iwae"),
            (self.early_stopping_patience is None or self.early_stopping_patience >= 1,
             "early_stopping_patience must be >= 1"),
            (self.strategy != "multi-worker" or (self.early_stopping_patience is None and not self.keep_best),
             "early_stopping_patience and keep_best are not supported with the multi-worker strategy"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}"),
            (self.beta >= 0, "beta must be >= 0"),
            (self.warmup_epochs >= 0, "warmup_epochs must be >= 0"),
            (self.free_bits >= 0, "free_bits must be >= 0"),
            (self.strategy in ("default", "mirrored", "multi-worker"), "strategy must be default, mirrored or multi-worker"),
            (self.train_limit is None or self.train_limit >= 1, "train_limit must be >= 1"),
            (self.eval_limit is None or self.eval_limit >= 1, "eval_limit must be >= 1"),
            (self.image_size is None or (len(self.image_size) == 2 and min(self.image_size) >= 1),
             "image_size must be [height, width] with both >= 1"),
            (self.color_mode in (None, *COLOR_MODES), f"color_mode must be one of {COLOR_MODES}"),
            (self.num_classes is None or self.num_classes >= 2, "num_classes must be >= 2"),
            (self.dtype_policy in (None, *DTYPE_POLICIES), f"dtype_policy must be one of {DTYPE_POLICIES}"),
            (isinstance(self.skip_bad_images, bool), "skip_bad_images must be true or false"),
            (self.resolved_data is None or isinstance(self.resolved_data, dict), "resolved_data must be a dict"),
        ]
        for ok, message in checks:
            if not ok:
                # Received: the settings the message names (as Keras layers do), not the whole config.
                named = [f.name for f in dataclasses.fields(self) if re.search(rf"\b{f.name}\b", message)]
                received = ", ".join(f"{name}={getattr(self, name)!r}" for name in named)
                raise ConfigError(f"Invalid training config: {message}. Received: {received}")

    @property
    def binarize(self):
        """Bernoulli models train on binarized pixels."""
        return self.likelihood == "bernoulli"

    def to_dict(self):
        return dataclasses.asdict(self)

    def save(self, path):
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    @classmethod
    def load(cls, path):
        try:
            with open(path) as f:
                data = json.load(f)
        except ValueError as e:
            raise RunDirError(f"{path} is not valid JSON ({e}): the run directory is damaged; train it again.") from None
        if not isinstance(data, dict):
            raise RunDirError(
                f"{path} must hold a JSON object of training settings: the run directory is damaged. "
                f"Received: {type(data).__name__}"
            )
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise RunDirError(
                f"{path} has unknown keys {sorted(unknown)}; it was not written by this kvae version. "
                "Use the kvae that wrote it, or a new --run-dir."
            )
        return cls(**data)
