"""Load: `kvae serve` under wrk, against KServe's ModelServer and a bare Starlette handler, on loopback.

    python -m benchmarks.load [--quick] [--duration S] [--rounds N] [--out PATH] [--no-kserve]

What is loaded: POST /v2/models/decoder/infer (Open Inference Protocol v2) on
the decoder of a latent-16 MLP and of a latent-16 conv model, each trained
briefly by `kvae train` and exported by `kvae export` once, then kept in
~/.cache/kvae-bench (or $KVAE_BENCH_CACHE): speed does not depend on quality.
Every request sends z and asks for x_mean only, so every server does the same
work: batch 1 and batch 64, JSON tensors and binary tensor data (the
Inference-Header-Content-Length extension, binary out as well), at 8 and 64
connections (the conv model at 8 only).

The servers, each a subprocess on 127.0.0.1 with a free port, in its own process group:
  kvae       `python -m kvae_serving ARTIFACTS` (= kvae serve) as shipped: one worker per core
  kvae_1w    the same with --workers 1 (MLP only): what the second worker adds
  kserve     KServe's ModelServer (its defaults: one worker) around an onnxruntime session with
             1 intra-op thread, spinning off (benchmarks/load_kserve.py), installed once by this
             benchmark into a throwaway venv in the cache (skipped, with a message, if that fails)
  bare       the floor: Starlette + uvicorn[standard] + orjson around the same session settings,
             as many workers as kvae (benchmarks/load_bare.py)
All of a model's servers are started together and health-checked; one request
of each case then checks each server's x_mean against onnxruntime run here
(a server that cannot answer a case is marked n/a for it, with the reason);
then each gets a short warm-up. The measurement alternates them: every round
runs every case on every server in turn (A B C A B C ..., the order rotated
each round), one `wrk -t1` run of `--duration` seconds each, so that the load
of a shared machine falls on all of them alike. Idle servers wait on a socket
and take no CPU. Tables give medians over rounds; ratios are medians of the
per-round ratios. wrk shares the cores with the server it loads, alike for all.
wrk corrects its latencies for coordinated omission: a stall (the server
descheduled by another job, say) counts for every request that would have
been sent during it, so p99 shows the machine's load; the report gives the
load average next to the numbers.

gRPC: kvae serve --grpc-port, loaded by tritonclient.grpc from threads of this
process (raw input contents), batch 1 and 64. The Python client holds one GIL:
its CPU use is reported, and near one core it, not the server, sets the pace.

Goals (MLP, batch-1 JSON, 8 connections): kvae >= 10x KServe and >= 1.0x the
bare handler in requests/s, p99 <= 2 ms, zero errors; and binary >= 1.5x JSON
at batch 64. Results go to benchmarks/results_load.json (--quick: a temp file).
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import tempfile
import time

from benchmarks import harness
from benchmarks.load_cache import LATENT_DIM, TRAIN_LIMIT, artifacts, kserve_python
from benchmarks.load_grpc import measure_grpc
from benchmarks.load_http import find_wrk, measure_http
from benchmarks.load_report import goals, ratios, render
from benchmarks.load_requests import cases_of
from benchmarks.load_servers import http_servers

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results_load.json")
ARCHITECTURES = ("mlp", "conv")
FULL = {"duration": 5, "rounds": 2, "warmup": 1, "connections": {"mlp": (8, 64), "conv": (8,)},
        "grpc_threads": 8}
QUICK = {"duration": 1, "rounds": 1, "warmup": 1, "connections": {"mlp": (8, 64), "conv": (8,)},
         "grpc_threads": 4}


def machine(wrk, kserve_version, cores):
    import onnxruntime
    import uvicorn

    version = subprocess.run([wrk, "--version"], capture_output=True, text=True)
    return {"cpu": harness.cpu_name(), "cores": cores, "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "uvicorn": uvicorn.__version__, "kserve": kserve_version,
            "wrk": (version.stdout or version.stderr).splitlines()[0] if (version.stdout or version.stderr) else None,
            "commit": harness.commit(), "loadavg_at_start": os.getloadavg()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 s per case, one round (numbers meaningless)")
    p.add_argument("--duration", type=int, help="seconds of load per case and server (whole seconds, wrk's unit; "
                   f"default {FULL['duration']}, --quick {QUICK['duration']})")
    p.add_argument("--rounds", type=int, help=f"rounds of every case on every server (default {FULL['rounds']})")
    p.add_argument("--no-kserve", action="store_true", help="skip KServe (and its one-time install)")
    p.add_argument("--out", help=f"JSON results (default {os.path.relpath(RESULTS)}; with --quick, a temp file)")
    args = p.parse_args(argv)
    settings = {**(QUICK if args.quick else FULL)}
    if args.duration is not None:
        settings["duration"] = max(1, args.duration)
    if args.rounds is not None:
        settings["rounds"] = max(1, args.rounds)
    out = args.out or (os.path.join(tempfile.gettempdir(), "kvae-load-quick.json") if args.quick else RESULTS)
    wrk = find_wrk()
    started = time.time()
    progress = harness.progress_since(started)
    cores = len(os.sched_getaffinity(0))
    folders = {arch: artifacts(arch, progress) for arch in ARCHITECTURES}
    kserve, kserve_version = (None, "--no-kserve") if args.no_kserve else kserve_python(progress)
    if kserve is None:
        progress(f"KServe skipped: {kserve_version}")
    runs = settings["rounds"] * (2 + sum(len(http_servers(arch, folders[arch], kserve, cores))
                                         * len(cases_of(settings["connections"][arch])) for arch in ARCHITECTURES))
    progress(f"{runs} load runs of {settings['duration']} s: about {runs * (settings['duration'] + 0.5) / 60:.0f} "
             "minutes, plus starting the servers")
    results = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "quick": args.quick,
               "machine": machine(wrk, kserve_version if kserve else None, cores),
               "settings": {**settings, "latent_dim": LATENT_DIM, "train_limit": TRAIN_LIMIT},
               "kserve": {"python": kserve, "version": kserve_version} if kserve else {"skipped": kserve_version},
               "http": {}}
    with tempfile.TemporaryDirectory(prefix="kvae-load-") as tmp:
        for arch in ARCHITECTURES:
            results["http"][arch] = measure_http(arch, folders[arch], settings, kserve, cores, wrk, tmp, progress)
        results["grpc"] = measure_grpc(folders["mlp"], settings, tmp, progress)
    results["ratios"] = ratios(results["http"])
    results["goals"] = goals(results["http"], results["ratios"])
    results["wall_s"] = time.time() - started
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    progress(f"Wrote {out}")
    print(render(results))
    return results


if __name__ == "__main__":
    main()
