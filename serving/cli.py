"""`kvae generate` and `kvae serve` (also `python -m kvae_serving`): argument parsers and their commands.

Only argparse at import time: onnxruntime loads when a command runs, so `kvae --help` stays fast.
The commands raise kvae's errors; kvae_contract.errors.run_command (used by `kvae` and by main below)
prints `kvae COMMAND: error: ...` and returns the kind's exit code.
"""

import argparse
import sys

from kvae_contract.errors import run_command


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, received {value}")
    return value


def add_generate_parser(subparsers):
    p = subparsers.add_parser("generate", help="draw samples from exported artifacts with onnxruntime into a PNG grid")
    p.add_argument("artifacts", help="directory written by `kvae export` (manifest.json, onnx/...)")
    p.add_argument("--n", type=_positive_int, default=64, help="number of images")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the prior draw (N(0, temperature^2 I), or the learned VampPrior); the same seed gives the same images"
    )
    p.add_argument("--temperature", type=float, default=1.0, help="scale of the prior samples")
    p.add_argument("--label", type=int, default=None,
                   help="conditional models: the class to generate (default: every class in turn)")
    p.add_argument("--out", default="samples.png", help="PNG file to write")
    p.add_argument("--columns", type=_positive_int, default=None, help="grid columns (default: about sqrt(n))")
    p.add_argument("--threads", type=_positive_int, default=2, help="onnxruntime intra-op threads")
    p.set_defaults(func=generate)
    return p


def add_serve_parser(subparsers):
    p = subparsers.add_parser("serve", help="serve exported artifacts over HTTP (Open Inference Protocol v2 + /v1) and gRPC")
    p.add_argument("artifacts", help="directory written by `kvae export` (manifest.json, onnx/...)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 exposes the server to the network")
    p.add_argument("--port", type=int, default=8000, help="HTTP port; 0 picks a free one")
    p.add_argument("--grpc-port", type=int, default=None,
                   help="also serve the Open Inference Protocol over gRPC on this port (Triton's is 8001; 0: a free one)")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="server processes sharing the port (default: one per core)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="onnxruntime intra-op threads per worker (default: cores / workers)")
    p.add_argument("--concurrency", type=_positive_int, default=1,
                   help="per worker: /v1 requests and large bodies run in a pool of this many threads")
    p.add_argument(
        "--max-batch-size", type=_positive_int, default=1024, help="largest batch (and /v1/generate n) accepted"
    )
    p.add_argument("--max-body-bytes", type=_positive_int, default=64 * 2**20, help="largest request body accepted")
    p.add_argument("--shutdown-delay", type=_non_negative_float, default=0.0,
                   help="seconds between SIGTERM (readiness turns 'not ready') and closing the port")
    p.add_argument("--drain-timeout", type=_non_negative_float, default=30.0,
                   help="seconds requests in flight get to finish once the port is closed")
    p.add_argument("--access-log", action="store_true", help="log every request on stderr")
    p.add_argument("--quiet", action="store_true", help="warnings and errors only on stderr")
    p.set_defaults(func=serve)
    return p


def _non_negative_float(text):
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, received {text}")
    return value


def generate(args):
    from .images import save_grid
    from .runtime import Runtime

    runtime = Runtime(args.artifacts, intra_op_num_threads=args.threads)
    save_grid(runtime.sample(args.n, args.seed, args.temperature, args.label), args.out, args.columns)
    print(f"wrote {args.n} samples (seed {args.seed}, temperature {args.temperature}) to {args.out}")
    return 0


def serve(args):
    from .server import Options, cores
    from .server import serve as run_server

    options = Options(
        args.artifacts, args.host, args.port, args.grpc_port, args.workers or cores(), args.threads,
        args.concurrency, args.max_batch_size, args.max_body_bytes, args.access_log, args.quiet,
        args.shutdown_delay, args.drain_timeout,
    )
    return run_server(options)


def main(argv=None):
    """`python -m kvae_serving ARTIFACTS [--host H] [--port P]` serves; `python -m kvae_serving generate ...` generates."""
    parser = argparse.ArgumentParser(prog="python -m kvae_serving", description="Serve kvae artifacts with onnxruntime.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_generate_parser(sub)
    add_serve_parser(sub)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] not in ("generate", "serve", "-h", "--help"):
        argv = ["serve", *argv]  # the default command
    args = parser.parse_args(argv)
    return run_command(args.command, args.func, args)
