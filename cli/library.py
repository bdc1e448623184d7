"""`kvae train`, `kvae evaluate`, `kvae compare` and `kvae plot`: the library's commands.

Loaded only when one of them runs (it imports kvae, and with it Keras). The handlers raise kvae's
errors; kvae_cli.main prints them and returns their exit codes.
"""

import argparse
import dataclasses
import sys

from kvae.config import COLOR_MODES, DTYPE_POLICIES, MLP_LAYERS, OBJECTIVES, PRESETS, PRIORS, TrainConfig
from kvae.data.sources import FOLDER_PREFIX
from kvae_contract.errors import ConfigError

DEFAULTS = TrainConfig()


def add_train_parser(sub):
    # Defaults are SUPPRESSed: only typed flags reach the namespace, so they win over a preset
    # even when typed with the default's value; _train fills in the rest from the preset and TrainConfig.
    p = sub.add_parser("train", help="train a VAE; re-running resumes after the last completed epoch",
                       argument_default=argparse.SUPPRESS)
    p.add_argument("--preset", choices=sorted(PRESETS), help="a documented recipe; other flags override it")
    p.add_argument("--run-dir", help="where config, model, history and pictures go")
    p.add_argument("--dataset",
                   help="fashion_mnist (local IDX files), folder:PATH (image files), or a tfds name (cifar10, celeb_a, ...)")
    p.add_argument("--data-dir", help="folder of the Fashion-MNIST IDX files (else $KVAE_DATA_DIR, else Debian's)")
    p.add_argument("--train-limit", type=int, help="train on the first N images only")
    p.add_argument("--eval-limit", type=int,
                   help="validate and test on the first N images of the validation and test sets (quick runs)")
    p.add_argument("--architecture", choices=["mlp", "conv"])
    p.add_argument("--latent-dim", type=int, help="latent size (per level, with --levels 2)")
    p.add_argument("--levels", type=int, choices=[1, 2],
                   help="stochastic levels: 1 (VAE) or 2 (the hierarchical VAE, MLP only)")
    p.add_argument("--conv-dense-units", type=int, help="size of the conv encoder's dense layer")
    p.add_argument("--mlp-hidden-units", type=int, nargs="+", metavar="UNITS",
                   help="the MLP encoder's hidden layer sizes; the decoder mirrors them")
    p.add_argument("--mlp-layer", choices=list(MLP_LAYERS),
                   help="the MLP's hidden layers: tanh dense, or gated dense (VampPrior paper)")
    p.add_argument("--log-var-bounds", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="clip the encoder's log-variance to [LOW, HIGH] (the VampPrior paper: -6 2)")
    p.add_argument("--prior", choices=list(PRIORS), help="N(0, I), or the VampPrior")
    p.add_argument("--num-pseudo-inputs", type=int, help="the VampPrior's K")
    p.add_argument("--objective", choices=list(OBJECTIVES),
                   help="the ELBO, or the importance-weighted bound (IWAE) with --iw-samples")
    p.add_argument("--iw-samples", type=int, help="k of the IWAE objective")
    p.add_argument("--early-stopping-patience", type=int,
                   help="stop after N epochs without a better validation bound")
    p.add_argument("--keep-best", action=argparse.BooleanOptionalAction,
                   help="model.keras keeps the best-validation epoch (as the published recipes do)")
    p.add_argument("--likelihood", choices=["bernoulli", "gaussian"])
    p.add_argument("--gaussian-variance", help="'learned' or a fixed pixel variance")
    p.add_argument("--beta", type=float, help="weight of the KL term")
    p.add_argument("--warmup-epochs", type=int, help="ramp the KL weight linearly over N epochs")
    p.add_argument("--free-bits", type=float, help="KL floor per latent dimension, nats")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--lr-schedule", choices=["constant", "cosine"])
    p.add_argument("--seed", type=int)
    p.add_argument("--strategy", choices=["default", "mirrored", "multi-worker"],
                   help="tf.distribute strategy; --batch-size stays the global batch (see README)")
    p.add_argument("--image-folder", metavar="PATH",
                   help="train on the images under PATH, one subfolder per class (= --dataset folder:PATH)")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"),
                   help="resize every image (default: folders use the size of most images, with a warning if sizes "
                        "differ; others stay as stored)")
    p.add_argument("--color-mode", choices=list(COLOR_MODES),
                   help="convert every image (default: folders use the mode of most images, with a warning if modes "
                        "differ; others stay as stored)")
    p.add_argument("--skip-bad-images", action=argparse.BooleanOptionalAction,
                   help="image folders: leave unreadable files out with a warning that names them (default: an "
                        "error that names them all, before training starts)")
    p.add_argument("--num-classes", type=int,
                   help="a conditional VAE on the dataset's labels 0..C-1 (encoder and decoder see the label)")
    p.add_argument("--dtype-policy", choices=list(DTYPE_POLICIES),
                   help="Keras dtype policy of the layers (mixed_bfloat16: 16-bit compute; loss terms stay float32)")
    p.set_defaults(func=_train)


def config_from_args(args):
    """The TrainConfig of a parsed `kvae train` command line: typed flags, then the preset, then defaults."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    typed = {k: v for k, v in vars(args).items() if k in fields}  # defaults are SUPPRESSed: typed flags only
    if getattr(args, "image_folder", None) is not None:
        typed["dataset"] = FOLDER_PREFIX + args.image_folder
    # Precedence: flags typed on the command line, then the preset, then defaults.
    values = {**DEFAULTS.to_dict(), **PRESETS.get(getattr(args, "preset", None), {}), **typed}
    if values["gaussian_variance"] != "learned":
        try:
            values["gaussian_variance"] = float(values["gaussian_variance"])
        except ValueError:
            raise ConfigError(
                "--gaussian-variance must be 'learned' or a number > 0. "
                f"Received: gaussian_variance={values['gaussian_variance']!r}"
            ) from None
    return TrainConfig(**values)


def _train(args):
    from kvae.train import train

    config = config_from_args(args)
    # A progress bar on a terminal; one line per epoch in logs and CI.
    result = train(config, verbose=1 if sys.stdout.isatty() else 2)
    m = result.test_metrics
    print(
        f"test negative ELBO {m['negative_elbo']:.2f} nats "
        f"(reconstruction {m['reconstruction_loss']:.2f} + KL {m['kl_loss']:.2f}) on {m['num_examples']} images; "
        f"run in {config.run_dir}"
    )
    return 0


def add_evaluate_parser(sub):
    p = sub.add_parser("evaluate", help="test NLL (importance-weighted), negative ELBO, bits/dim, active units",
                       description="Test NLL (importance-weighted), negative ELBO, bits/dim and active units of a run, "
                                   "written to RUN_DIR/evaluation.json. A stopped evaluation continues where it stopped "
                                   "when the same command is run again.")
    p.add_argument("run_dir")
    p.add_argument("--k", type=int, default=5000, help="importance samples per image (papers report k=5000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation's own samples")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N test images only")
    p.add_argument("--batch-size", type=int, default=100)
    p.set_defaults(func=_evaluate)


def _evaluate(args):
    from kvae.evaluate import format_table
    from kvae.rundir import RunDir
    from kvae.runs import evaluate_run

    result = evaluate_run(args.run_dir, k=args.k, seed=args.seed, limit=args.limit, batch_size=args.batch_size,
                          verbose=1 if sys.stdout.isatty() else 2)  # a log gets a line per batch
    print(format_table(result))
    print(f"written to {RunDir(args.run_dir).evaluation}")
    return 0


def add_compare_parser(sub):
    p = sub.add_parser("compare", help="paired per-image NLL difference of two evaluated runs, with its standard error")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.set_defaults(func=_compare)


def _compare(args):
    from kvae.evaluate import format_comparison
    from kvae.runs import compare_runs

    comparison = compare_runs(args.run_a, args.run_b)
    print(format_comparison(comparison, args.run_a, args.run_b))
    return 0


def add_plot_parser(sub):
    p = sub.add_parser("plot", help="redraw a run's pictures (samples, reconstructions, latent space, curves; class_samples.png of conditional runs)")
    p.add_argument("run_dir")
    p.set_defaults(func=_plot)


def _plot(args):
    from kvae.runs import plot_run

    paths = plot_run(args.run_dir)
    print("\n".join(paths.values()))
    return 0
