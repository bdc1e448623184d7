"""Time to quality on the fashion-vamp recipe: `kvae train --preset fashion-vamp` against benchmarks.torch_vamp.

    python -m benchmarks.run --only vamp-race [--vamp-max-minutes M] [--vamp-max-epochs E]

Both contenders train the same recipe (kvae.config.PRESETS["fashion-vamp"], one dict
for both) in their own processes, one epoch at a time, taking turns (the order
reversed every other epoch). After each epoch the contender's weights go, off
the clock, to one evaluator process that runs kvae.evaluate.evaluate on them:
the same estimator, the same VampPrior log p(z) (the mixture over the encoded
pseudo-inputs, which travel with the weights), the same first `num_images`
test images of the published draw (kvae.data.protocol.evaluation_views) and the
same sampling seed for both.

Each epoch is screened with k = `screen_k`; the k = `k` evaluation that judges a
crossing runs when the screen says the next threshold may be near: before the
first k = `k` evaluation, when the screen is within `screen_margin` nats of it;
after, when the screen minus the gap last seen between the two estimates is
within `gap_margin` nats. A crossing of a threshold is the first epoch whose
k = `k` NLL is below it.

Clock: the sum of the contender's epochs as it spends them, kvae train's
including its validation pass and checkpoint, PyTorch's training only; worker
start-up and the evaluations are not on it. The race stops when both have
crossed every threshold, after `max_epochs` epochs, or at the first epoch
boundary after `max_minutes` minutes of the whole race (evaluations included).
The workers talk over pipes to this process; nothing uses the network.

A race takes hours. With `--vamp-work-dir DIR` its training state and its
record (DIR/race.json, written after every epoch) stay in DIR, and the same
command run again continues it where it stopped, as `kvae train` continues a
run: each contender resumes its own training exactly, and an epoch that ended
after the last record is recorded from the dump and report it left.
"""

import copy
import json
import os
import time

from benchmarks import harness
from benchmarks.report import steady_clock
from benchmarks.worker import dump_template

PRESET = "fashion-vamp"
TEST_DRAW = "published-777"  # kvae.data.protocol.draw_name(True), without importing kvae here

FULL = {
    "thresholds": [230.0, 229.0, 228.7, 228.0],  # 228.7: the published MLP VAE (228.70)
    "k": 1000, "num_images": 1000, "screen_k": 100, "screen_margin": 3.0, "gap_margin": 0.5,
    "max_epochs": 350, "max_minutes": 600.0,
    "train_limit": None, "val_limit": None, "overrides": {},
    # Before the race, a few short epochs of both PyTorch thread settings pick the one that races.
    "probe": {"train_limit": 5_000, "warmup": 1, "rounds": 2},
}
QUICK = {  # a smoke run: toy sizes and thresholds that the first epochs cross (all but the last)
    "thresholds": [100_000.0, 50_000.0, 1.0],
    "k": 10, "num_images": 20, "screen_k": 4, "screen_margin": 3.0, "gap_margin": 0.5,
    "max_epochs": 2, "max_minutes": 10.0,
    "train_limit": 200, "val_limit": 100, "overrides": {"num_pseudo_inputs": 10},
    "probe": {"train_limit": 200, "warmup": 0, "rounds": 1},
}

TORCH_CONFIGS = {"torch_vamp": {}, "torch_vamp_1thread": {"threads": 1}}


def recipe(settings, preset=PRESET):
    """The TrainConfig dict the contenders train: the preset, the settings' overrides, train_limit, seed 0."""
    from kvae.config import PRESETS

    return {**copy.deepcopy(PRESETS[preset]), **settings.get("overrides", {}),
            "train_limit": settings.get("train_limit"), "seed": 0}


#: The work folder's layout: kvae's run directory, PyTorch's checkpoint (its name + suffix), the race's record.
KVAE_RUN_DIR, CHECKPOINT_SUFFIX, RECORD = "kvae-vamp", ".pt", "race.json"


def training_state(work):
    """The names of the contenders' training state the folder `work` holds (none in a new folder)."""
    return sorted(n for n in os.listdir(work) if n == KVAE_RUN_DIR or n.endswith(CHECKPOINT_SUFFIX))


def specs(settings, tmp, torch_name, dump):
    """Worker specs: kvae, the PyTorch configuration `torch_name`, and the evaluator.

    Both contenders keep their training state in `tmp` (kvae its run directory,
    PyTorch a checkpoint), so a race run again on the same folder continues.
    """
    r = recipe(settings)
    return {
        "kvae": {"kind": "kvae", "config": {**r, "run_dir": os.path.join(tmp, KVAE_RUN_DIR)},
                 "dump": dump_template(dump, "kvae"), "val_limit": settings.get("val_limit")},
        torch_name: {"kind": "torch_vamp", "config": r, **TORCH_CONFIGS[torch_name],
                     "dump": dump_template(dump, torch_name),
                     "checkpoint": os.path.join(tmp, torch_name + CHECKPOINT_SUFFIX)},
        "evaluator": {"kind": "evaluator", "config": r, "num_images": settings["num_images"]},
    }


#: Settings a resumed race may change: how long it may still run.
RESUMABLE_SETTINGS = ("max_epochs", "max_minutes")


def check_resumable(previous, settings, preset=PRESET):
    """Refuses to continue a race under another preset or other settings (its crossings would mix two races)."""
    keep = lambda d: {k: v for k, v in d.items() if k not in RESUMABLE_SETTINGS}
    if keep(json.loads(json.dumps(settings))) != keep(previous["settings"]) or previous.get("preset") != preset:
        raise ValueError("The saved race ran under another preset or other settings than these; only "
                         f"{', '.join(RESUMABLE_SETTINGS)} may change. Use a new work folder for a new race.")


def pick_torch(settings, tmp, progress):
    """Alternates short epochs of PyTorch's default threads and one thread; returns (faster name, probe summary)."""
    probe = settings.get("probe")
    if not probe:
        return "torch_vamp", None
    r = {**recipe(settings), "train_limit": probe["train_limit"]}
    progress(f"PyTorch threads for the race: {probe['rounds']} rounds of {probe['train_limit']:,} images each")
    workers = harness.start_all({name: {"kind": "torch_vamp", "config": r, **extra}
                                 for name, extra in TORCH_CONFIGS.items()}, tmp)
    try:
        reports = harness.alternate(workers, probe["warmup"], probe["rounds"], progress)
    finally:
        harness.close_all(workers)
    summary = harness.throughput_summary(reports)
    best = max(summary, key=lambda n: summary[n]["samples_per_s"])
    return best, {name: {"samples_per_s": s["samples_per_s"], "samples_per_s_all": s["samples_per_s_all"]}
                  for name, s in summary.items()}


def run(settings, tmp, progress, snapshot=None, resume=None):
    """The race, with its training state in the folder `tmp`.

    `snapshot(result)`, if given, is called after every recorded epoch with the
    result so far. `resume`: the last snapshot of a race stopped in the same
    folder; the probe is not run again, both contenders continue their training
    where it stopped (kvae train from its run directory, PyTorch from its
    checkpoint, each exactly), and the clocks and curves go on from the snapshot.
    """
    started = time.monotonic()
    if resume:
        check_resumable(resume, settings)
        torch_name, probe = resume["torch"], resume["probe"]
        progress(f"Resuming the race in {tmp}: " + ", ".join(
            f"{name} after epoch {len(curve)}" for name, curve in resume["curves"].items()))
    else:
        torch_name, probe = pick_torch(settings, tmp, progress)
    wall_before = resume["wall_s"] if resume else 0.0
    dump = os.path.join(tmp, "vamp-weights")
    os.makedirs(dump, exist_ok=True)
    workers = harness.start_all(specs(settings, tmp, torch_name, dump), tmp)
    evaluator = workers.pop()
    result = {
        "preset": PRESET, "recipe": recipe(settings), "settings": settings, "test_draw": TEST_DRAW,
        "torch": torch_name, "probe": probe, "contenders": [w.name for w in workers],
        "curves": None, "crossed": None, "gaps": None, "stopped": None, "wall_s": wall_before,
        "sittings": (resume.get("sittings", 1) + 1) if resume else 1,  # how many runs of the command it took
    }

    def on_epoch(state):
        result.update(state, wall_s=wall_before + time.monotonic() - started)
        if snapshot:
            snapshot(result)

    previous = {k: resume[k] for k in ("curves", "crossed", "gaps")} if resume else None
    try:
        result.update(harness.race(workers, evaluator, dump, settings, settings["thresholds"], progress,
                                   started=started, on_epoch=on_epoch, resume=previous))
    finally:
        harness.close_all(workers + [evaluator])
    result["wall_s"] = wall_before + time.monotonic() - started
    result["summary"] = summarize(result)
    if snapshot:
        snapshot(result)
    return result


def summarize(result):
    """Per threshold: each contender's crossing (epoch, clocks, NLL) and PyTorch's time over kvae's.

    `ratio` is PyTorch's clock over kvae's (goal >= 1.0). When only kvae crossed,
    PyTorch's whole clock gives a lower bound ("bound": ">="); when only PyTorch
    did, kvae's whole clock an upper bound ("<=").
    """
    kvae, torch_name = "kvae", result["torch"]
    out = []
    for t in sorted(result["settings"]["thresholds"], reverse=True):
        row = {"threshold": t}
        for name in (kvae, torch_name):
            curve = result["curves"].get(name, [])
            epoch = result["crossed"].get(name, {}).get(harness.threshold_key(t))
            if epoch is None:
                row[name] = {"epoch": None, "epochs_run": len(curve),
                             "clock_s": curve[-1]["clock_s"] if curve else None,
                             "train_clock_s": curve[-1]["train_clock_s"] if curve else None}
                continue
            p = curve[epoch - 1]
            row[name] = {"epoch": epoch, "clock_s": p["clock_s"], "train_clock_s": p["train_clock_s"],
                         "steady_clock_s": steady_clock(curve, epoch), "nll": p["nll"], "nll_stderr": p["nll_stderr"]}
        a, b = row[kvae], row[torch_name]
        row["ratio"] = row["train_ratio"] = row["steady_ratio"] = row["bound"] = None
        if a["epoch"] and b["epoch"]:
            row["ratio"] = b["clock_s"] / a["clock_s"]
            row["train_ratio"] = b["train_clock_s"] / a["train_clock_s"]
            row["steady_ratio"] = b["steady_clock_s"] / a["steady_clock_s"]
        elif a["epoch"] and b["clock_s"]:
            row["ratio"], row["bound"] = b["clock_s"] / a["clock_s"], ">="
        elif b["epoch"] and a["clock_s"]:
            row["ratio"], row["bound"] = b["clock_s"] / a["clock_s"], "<="
        out.append(row)
    return out
