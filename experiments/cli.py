"""The command line of the experiments: `python -m kvae_experiments --out DIR [--quick]`, or `kvae experiments`.

Cheap to import: TensorFlow, Keras and scikit-learn load only when the command runs.
"""

import argparse
import os


def add_arguments(p):
    p.add_argument("--out", required=True, metavar="DIR", help="where report.md, results.json and the figures go")
    p.add_argument("--quick", action="store_true", help="toy sizes (seconds, for tests), not the measured run")
    p.add_argument("--seed", type=int, default=0, help="base seed; every model and sampler derives its own from it")
    p.add_argument("--data-dir", default=None, help="folder of the Fashion-MNIST IDX files (else $KVAE_DATA_DIR, else Debian's)")
    p.add_argument("--verbose", action="store_true", help="Keras progress lines while training")
    return p


def run(args):
    """Runs the experiments for parsed arguments; returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from .run import run_all
    from kvae.data import load_dataset

    splits = load_dataset("fashion_mnist", data_dir=args.data_dir)
    run_all(splits, args.out, args.quick, args.seed, verbose=2 if args.verbose else 0)
    print(f"report: {os.path.join(args.out, 'report.md')}")
    return 0


def add_parser(subparsers):
    """Registers `experiments` on an argparse subparsers object (e.g. kvae's CLI); returns its parser."""
    p = subparsers.add_parser(
        "experiments", help="autoencoder vs VAE generation, a ring from N(0, I), an RBM baseline; writes DIR/report.md"
    )
    add_arguments(p).set_defaults(func=run)
    return p


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kvae_experiments", description="The VAE argument as measured experiments.")
    return run(add_arguments(parser).parse_args(argv))
