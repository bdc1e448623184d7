"""The `kvae` command: it sits above the packages it wires together.

    kvae train | evaluate | compare | plot     the library (kvae)
    kvae export                                kvae_export
    kvae generate | serve                      kvae_serving (onnxruntime only)
    kvae experiments                           kvae_experiments

Installed as `kvae_cli`. Nothing here is imported by the library, and this
package imports only the standard library at start-up: each subcommand's
module (and with it Keras, TensorFlow or onnxruntime) loads only when that
subcommand runs, so `kvae --help` answers at once and a serving-only install
(no TensorFlow) runs `kvae generate` and `kvae serve`.
"""

from kvae_cli.main import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
