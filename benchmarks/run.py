"""The benchmark: `python -m benchmarks.run [--quick] [--only train,inference,quality,vamp-race]`.

Writes benchmarks/results.json and the generated section of BENCHMARKS.md.
Every comparison is a ratio measured in this run on this machine: the
contenders live in separate processes and take turns (one epoch each, the
order rotated every round), and the tables report medians.

The parts: train, inference, quality (the default set) and vamp-race (hours:
benchmarks/vamp_race.py). A run of some parts keeps the others' last results
from results.json, marked with the date and commit of the run that made them.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from benchmarks import harness, vamp_race
from benchmarks.worker import dump_template

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results.json")
MARKDOWN = os.path.join(os.path.dirname(HERE), "BENCHMARKS.md")

# What the issue compares: the MLP of the IWAE paper and the keras.io conv model.
MODELS = {
    "mlp": {"architecture": "mlp", "latent_dim": 50, "batch_size": 100},
    "conv": {"architecture": "conv", "latent_dim": 2, "batch_size": 128},
}
# Full epochs of the conv model on all 50,000 images take over a minute each
# here; its throughput is measured on full epochs of the first 12,800 images
# (100 batches), the same images for all three contenders.
FULL = {
    "train_limit": {"mlp": None, "conv": 12_800},
    "warmup": 1, "rounds": {"mlp": 5, "conv": 4},
    # Each epoch's weights are screened with k = 100 (about 1 s); the k = 1000
    # evaluation (about 10 s) runs once the screen is within `screen_margin`
    # nats of the threshold. k = 1000 is tighter than k = 100 by well under a
    # nat here (both are recorded wherever both ran), so no crossing is missed.
    "quality": {"k": 1000, "num_images": 1000, "threshold": 240.0, "max_epochs": 40,
                "screen_k": 100, "screen_margin": 3.0},
    "inference": {"calls_per_block": {"1": 300, "1024": 10}, "blocks": 7},
    "vamp_race": vamp_race.FULL,
}
QUICK = {
    "train_limit": {"mlp": 2_000, "conv": 512},
    "warmup": 1, "rounds": {"mlp": 2, "conv": 2},
    "quality": {"k": 20, "num_images": 100, "threshold": 240.0, "max_epochs": 2, "train_limit": 2_000,
                "screen_k": 5, "screen_margin": 1000.0},
    "inference": {"calls_per_block": {"1": 30, "1024": 2}, "blocks": 2},
    "vamp_race": vamp_race.QUICK,
}
PARTS = {  # --only names -> the results.json keys they write
    "train": ("training", "step_floor"), "inference": ("inference",), "quality": ("quality",),
    "vamp-race": ("vamp_race",),
}
TEST_DRAW = vamp_race.TEST_DRAW  # the evaluator's test images: kvae.data.protocol's published draw


def contender_specs(model, tmp, train_limit=None, dump=None):
    """Worker specs of the three contenders for one model."""
    m = MODELS[model]
    config = {
        "run_dir": os.path.join(tmp, f"kvae-{model}"), "architecture": m["architecture"],
        "latent_dim": m["latent_dim"], "batch_size": m["batch_size"], "train_limit": train_limit,
        "epochs": 10_000, "learning_rate": 1e-3, "lr_schedule": "constant", "seed": 0,
    }
    common = {"architecture": m["architecture"], "latent_dim": m["latent_dim"], "batch_size": m["batch_size"],
              "train_limit": train_limit, "seed": 0}

    def dumped(name):
        return {"dump": dump_template(dump, name)} if dump else {}

    one_thread = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    return {
        "kvae": {"kind": "kvae", "config": config, **dumped("kvae")},
        "keras_example": {"kind": "keras_example", **common, **dumped("keras_example")},
        "torch": {"kind": "torch", **common, **dumped("torch")},
        "torch_1thread": {"kind": "torch", "threads": 1, **common, **dumped("torch_1thread")},
        "kvae_1thread": {"kind": "kvae", "env": one_thread, **dumped("kvae_1thread"),
                         "config": {**config, "run_dir": config["run_dir"] + "-1thread"}},
    }


def bench_training(settings, tmp, progress):
    out = {}
    for model in ("mlp", "conv"):
        progress(f"Training throughput, {model}")
        specs = contender_specs(model, tmp, settings["train_limit"][model])
        workers = harness.start_all(specs, tmp)
        try:
            reports = harness.alternate(workers, settings["warmup"], settings["rounds"][model], progress)
        finally:
            harness.close_all(workers)
        out[model] = {
            "summary": harness.throughput_summary(reports),
            "vs_best_torch": harness.ratio_to_best(reports, "kvae", ["torch", "torch_1thread"]),
            "reports": reports,
            "train_limit": settings["train_limit"][model],
            **MODELS[model],
        }
    return out


def model_flops():
    from benchmarks import flops
    from kvae.config import TrainConfig
    from kvae.train import build_model

    out = {}
    for name, m in MODELS.items():
        vae = build_model(TrainConfig(architecture=m["architecture"], latent_dim=m["latent_dim"]), (28, 28, 1))
        out[name] = flops.vae_flops(vae)
    return out


def step_floor():
    """Seconds per MLP training step spent in its matmuls alone, in TF and in PyTorch (benchmarks.flops)."""
    from benchmarks import flops
    from kvae.config import TrainConfig
    from kvae.train import build_model

    m = MODELS["mlp"]
    vae = build_model(TrainConfig(architecture="mlp", latent_dim=m["latent_dim"]), (28, 28, 1))
    shapes = flops.dense_step_gemms(vae, m["batch_size"])
    return {"batch_size": m["batch_size"], "gemms": len(shapes),
            "flops_per_example": sum(2 * a * b * c for a, b, c in shapes) / m["batch_size"],
            **{f"{lib}_s": flops.gemm_floor(shapes, lib) for lib in ("tensorflow", "torch")}}


def bench_quality(settings, tmp, progress, torch_name="torch_1thread"):
    """Time to quality: alternate epochs of kvae and PyTorch, evaluate each epoch's weights off the clock.

    `torch_name`: the PyTorch configuration to race, the faster one in this
    run's throughput measurement when there is one.
    """
    q = settings["quality"]
    dump = os.path.join(tmp, "weights")
    os.makedirs(dump, exist_ok=True)
    specs = contender_specs("mlp", tmp, q.get("train_limit"), dump=dump)
    specs = {"kvae": specs["kvae"], torch_name: specs[torch_name]}
    specs["kvae"]["config"]["run_dir"] += "-quality"
    specs["evaluator"] = {"kind": "evaluator", "architecture": "mlp", "latent_dim": MODELS["mlp"]["latent_dim"],
                          "num_images": q["num_images"]}
    workers = harness.start_all(specs, tmp)
    evaluator = workers.pop()
    try:
        race = harness.race(workers, evaluator, dump, q, [q["threshold"]], progress)
    finally:
        harness.close_all(workers + [evaluator])
    key = harness.threshold_key(q["threshold"])
    curves = race["curves"]
    crossed = {name: curves[name][c[key] - 1] for name, c in race["crossed"].items() if key in c}
    return {"settings": {**q, "test_draw": TEST_DRAW}, "curves": curves, "crossed": crossed, "torch": torch_name}


def bench_inference(settings, tmp, progress):
    """Runs benchmarks.inference in its own process (TF, onnxruntime and PyTorch together)."""
    path = os.path.join(tmp, "inference.json")
    cmd = [sys.executable, "-m", "benchmarks.inference", "--out", path, "--settings", json.dumps(settings["inference"])]
    if settings is QUICK:
        cmd.append("--quick")
    progress("Inference")
    subprocess.run(cmd, check=True, cwd=harness.ROOT)
    with open(path) as f:
        return json.load(f)


def machine():
    import keras
    import numpy
    import onnxruntime
    import tensorflow as tf
    import torch

    return {
        "cpu": harness.cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(), "tensorflow": tf.__version__,
        "keras": keras.__version__, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__, "torch_threads": torch.get_num_threads(), "commit": harness.commit(),
        "loadavg_at_start": os.getloadavg(),
    }


def carry_over(results, path, parts):
    """Copies into `results` the parts not run this time from the results.json at `path`.

    results["carried"][key] records the run each copied part comes from (its
    date, commit and fp32 peak), so the report can say so.
    """
    if not os.path.exists(path):
        return
    with open(path) as f:
        previous = json.load(f)
    origin = {"date": previous.get("date"), "commit": previous.get("machine", {}).get("commit"),
              "peak_gflops": max((p["gflops"] for p in previous.get("peak", [])), default=None)}
    for part, keys in PARTS.items():
        if part in parts:
            continue
        for key in keys:
            if key in previous:
                results[key] = previous[key]
                results.setdefault("carried", {})[key] = previous.get("carried", {}).get(key, origin)


def load_race(work, record):
    """The race saved in the folder `work` (its record, vamp_race.RECORD), or None for a new race there.

    A folder with a contender's training state but no record is refused: that
    training cannot be attributed to a race's clock.
    """
    os.makedirs(work, exist_ok=True)
    if os.path.exists(record):
        with open(record) as f:
            return json.load(f)
    stale = vamp_race.training_state(work)
    if stale:
        raise SystemExit(f"{work} holds training state ({', '.join(sorted(stale))}) but no race record "
                         f"({os.path.basename(record)}). Use an empty folder for a new race.")
    return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="toy sizes: a smoke run of every part, numbers meaningless")
    p.add_argument("--only", default="train,inference,quality",
                   help=f"comma-separated parts to run, of {', '.join(PARTS)} (vamp-race takes hours)")
    p.add_argument("--vamp-max-minutes", type=float, help="vamp-race: stop after this many minutes (default "
                   f"{vamp_race.FULL['max_minutes']:g}; it stops by itself once both cross every threshold)")
    p.add_argument("--vamp-max-epochs", type=int, help=f"vamp-race: at most this many epochs each "
                   f"(default {vamp_race.FULL['max_epochs']})")
    p.add_argument("--vamp-work-dir", help="vamp-race: keep its training state and record in this folder, and "
                   "continue the race saved there, if any (default: a temp folder, removed at the end)")
    p.add_argument("--results", help=f"JSON output (default {os.path.relpath(RESULTS)}; with --quick, a temp file)")
    p.add_argument("--markdown", help=f"file whose generated section is (re)written (default "
                   f"{os.path.relpath(MARKDOWN)}; with --quick, none: the tables are printed)")
    args = p.parse_args(argv)
    if not args.quick:  # a smoke run never overwrites the real results
        args.results, args.markdown = args.results or RESULTS, args.markdown or MARKDOWN
    elif not args.results:
        args.results = os.path.join(tempfile.gettempdir(), "kvae-bench-quick.json")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    settings = QUICK if args.quick else FULL
    parts = set(args.only.split(","))
    unknown = parts - set(PARTS)
    if unknown:
        p.error(f"--only: unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    race_settings = {**settings["vamp_race"]}
    if args.vamp_max_minutes is not None:
        race_settings["max_minutes"] = args.vamp_max_minutes
    if args.vamp_max_epochs is not None:
        race_settings["max_epochs"] = args.vamp_max_epochs
    started = time.time()
    progress = harness.progress_since(started)
    from benchmarks import flops, report

    results = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "quick": args.quick,
               "machine": machine(), "flops": model_flops()}
    progress("fp32 matmul peak")
    results["peak"] = [flops.peak_matmul_gflops(seconds=1.0 if args.quick else 3.0)]
    with tempfile.TemporaryDirectory(prefix="kvae-bench-") as tmp:
        if "train" in parts:
            results["training"] = bench_training(settings, tmp, progress)
            progress("Matmul floor of an MLP training step")
            results["step_floor"] = step_floor()
            results["peak"].append(flops.peak_matmul_gflops(seconds=1.0 if args.quick else 3.0))
        if "inference" in parts:
            results["inference"] = bench_inference(settings, tmp, progress)
        if "quality" in parts:
            torch_name = "torch_1thread"
            if "training" in results:
                mlp = results["training"]["mlp"]["summary"]
                torch_name = max(("torch", "torch_1thread"), key=lambda n: mlp[n]["samples_per_s"])
            results["quality"] = bench_quality(settings, tmp, progress, torch_name)
        if "vamp-race" in parts:
            progress(f"Time to quality, {vamp_race.PRESET}: kvae train vs benchmarks.torch_vamp (at most "
                     f"{race_settings['max_epochs']} epochs each, {race_settings['max_minutes']:g} minutes)")
            work = args.vamp_work_dir or tmp
            partial = os.path.join(work, vamp_race.RECORD) if args.vamp_work_dir else os.path.join(
                tempfile.gettempdir(), "kvae-vamp-race.partial.json")
            resume = load_race(work, partial) if args.vamp_work_dir else None
            if resume:
                try:
                    vamp_race.check_resumable(resume, race_settings)
                except ValueError as e:
                    raise SystemExit(f"{partial}: {e}") from None
            progress(f"  the race so far is kept in {partial} after every epoch")

            def snapshot(race):
                with open(partial + ".part", "w") as f:
                    json.dump(race, f, indent=1)
                os.replace(partial + ".part", partial)

            results["vamp_race"] = vamp_race.run(race_settings, work, progress, snapshot, resume=resume)
    if not args.quick:
        carry_over(results, args.results, parts)
    results["peak"].append(flops.peak_matmul_gflops(seconds=1.0 if args.quick else 3.0))
    results["wall_s"] = time.time() - started
    with open(args.results, "w") as f:
        json.dump(results, f, indent=1)
    if args.markdown:
        report.update_markdown(args.markdown, report.render(results))
    progress(f"Wrote {args.results}" + (f" and {args.markdown}" if args.markdown else ""))
    print(report.render(results))
    return results


if __name__ == "__main__":
    main()
