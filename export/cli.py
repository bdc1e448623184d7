"""`kvae export RUN_DIR --out ARTIFACTS [--force]`.

Cheap to import: export.api loads TensorFlow, tf2onnx and Keras only when
the command runs.
"""

import argparse
import os
import sys

from kvae_contract.errors import run_command

from .api import export_run


def add_parser(subparsers):
    """Registers the `export` subcommand on an argparse subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "export",
        help="export a trained run as SavedModel + ONNX (encoder, decoder; prior, log_prior for a VampPrior "
        "or a two-level HVAE), verified against Keras",
        description="Writes the artifacts folder described in ARTIFACTS.md, after checking that the "
        "SavedModel and ONNX outputs equal the Keras outputs within 1e-5.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a `kvae train` run directory (model.keras, config.json)")
    p.add_argument("--out", required=True, metavar="ARTIFACTS", help="the artifacts folder to write")
    p.add_argument("--force", action="store_true", help="replace ARTIFACTS if it exists")
    p.set_defaults(func=run)
    return p


def run(args):
    """Runs the export for parsed arguments and returns 0; errors are raised (kvae_contract.errors.run_command
    prints them and returns their exit code)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out
    result = export_run(args.run_dir, args.out, force=args.force)
    print(summary(result))
    return 0


def summary(result):
    """A few lines: where each model went and the largest difference from Keras per backend (export.verify.compare)."""
    from .verify import RELATIVE_OUTPUTS, TOLERANCE

    measured = {output for backends in result.max_abs_diff.values() for diffs in backends.values() for output in diffs}
    scaled = [name for name in RELATIVE_OUTPUTS if name in measured]  # log_pz, log_qz, x_logits: relative to their size
    relative = ""
    if scaled:
        names = scaled[0] if len(scaled) == 1 else f"{', '.join(scaled[:-1])} and {scaled[-1]}"
        relative = f", {names} relative to {'its' if len(scaled) == 1 else 'their'} size"
    lines = [f"exported to {result.out} (manifest.json; all outputs within {TOLERANCE:g} of Keras{relative})"]
    for name, entry in result.manifest["models"].items():
        diffs = result.max_abs_diff[name]
        worst = ", ".join(f"{backend} {max(d.values()):.2g}" for backend, d in diffs.items())
        lines.append(f"  {name}: {entry['onnx']}, {entry['saved_model']} (max |diff| vs Keras: {worst})")
    return "\n".join(lines)


def main(argv=None):
    """Stand-alone entry point: python -m kvae_export.cli RUN_DIR --out ARTIFACTS [--force]."""
    parser = argparse.ArgumentParser(prog="kvae")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["export", *(sys.argv[1:] if argv is None else argv)])
    return run_command("export", args.func, args)


if __name__ == "__main__":
    sys.exit(main())
