"""The command table and the entry point: parse, run, turn kvae's errors into exit codes."""

import argparse
import importlib
import os
import sys

from kvae_contract.errors import KvaeError, run_command

# name: ("module:function that registers its subparser", one-line help). The module is imported only
# when its command is the one typed; the help lines here are what `kvae --help` lists.
COMMANDS = {
    "train": ("kvae_cli.library:add_train_parser", "train a VAE; re-running resumes after the last completed epoch"),
    "evaluate": ("kvae_cli.library:add_evaluate_parser",
                 "test NLL (importance-weighted) with its errors, negative ELBO, bits/dim, active units"),
    "compare": ("kvae_cli.library:add_compare_parser",
                "paired per-image NLL difference of two evaluated runs, with its standard error"),
    "plot": ("kvae_cli.library:add_plot_parser", "redraw a run's pictures"),
    "export": ("kvae_export.cli:add_parser",
               "export a trained run as SavedModel + ONNX (encoder, decoder; prior, log_prior for a VampPrior), verified against Keras"),
    "generate": ("kvae_serving.cli:add_generate_parser",
                 "draw samples from exported artifacts with onnxruntime into a PNG grid"),
    "serve": ("kvae_serving.cli:add_serve_parser",
              "serve exported artifacts over HTTP (Open Inference Protocol v2 + /v1)"),
    "experiments": ("kvae_experiments.cli:add_parser",
                    "the measured VAE-vs-autoencoder argument: report.md with figures"),
}
QUIET_COMMANDS = {"train", "evaluate", "compare", "plot", "export", "experiments"}  # those that load TensorFlow
VERBOSE_ENV = "KVAE_VERBOSE"


def build_parser(argv):
    """The parser for `argv`: the typed command's full subparser, the others as one-line entries."""
    parser = argparse.ArgumentParser(
        prog="kvae", description="Variational autoencoders for Keras 3 that leave Python.",
        epilog=f"`kvae COMMAND --help` describes a command. TensorFlow's start-up logs are hidden; "
        f"--verbose (or {VERBOSE_ENV}=1) shows them.",
    )
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's and absl's own log lines")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    typed = typed_command(argv)
    for name, (target, help_line) in COMMANDS.items():
        if name == typed:
            getattr(_load(name, target.split(":")[0]), target.split(":")[1])(sub)
        else:
            sub.add_parser(name, help=help_line, add_help=False)
    return parser


class MissingExtra(KvaeError):
    """A command's packages are not installed (e.g. `kvae train` on a serving-only install)."""

    exit_code = 2


EXTRAS = {"tensorflow": "train", "keras": "train", "tf2onnx": "train", "onnx": "train", "matplotlib": "train",
          "onnxruntime": "serving", "PIL": "serving", "sklearn": "experiments", "scipy": "experiments"}


def _load(command, module):
    """Imports a command's module; a missing optional dependency becomes a MissingExtra naming the extra."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if top not in EXTRAS:
            raise
        raise MissingExtra(
            f"`kvae {command}` needs {top}, which this install lacks: pip install \"kvae[{EXTRAS[top]}]\"."
        ) from None


def typed_command(argv):
    """The command named on the command line (its first positional argument), or None."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    command = typed_command(argv)
    verbose = command is not None and "--verbose" in argv[: argv.index(command)]  # kvae's flag, not a command's
    if not (verbose or os.environ.get(VERBOSE_ENV, "") not in ("", "0")) and command in QUIET_COMMANDS:
        from kvae_cli.quiet import quiet_native_logs

        quiet_native_logs()  # before the command's module loads TensorFlow
    try:
        args = build_parser(argv).parse_args(argv)
    except MissingExtra as e:
        print(f"kvae {command}: error: {e}", file=sys.stderr)
        return e.exit_code
    # The one wrapper: handlers raise kvae's errors, this prints `kvae COMMAND: error: ...` and returns the
    # kind's exit code (an OSError: 1).
    return run_command(args.command, args.func, args)
