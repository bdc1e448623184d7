"""Time to quality of one preset, kvae alone: when `kvae train --preset NAME` crosses NLL thresholds.

    python -m benchmarks.crossing --preset fashion-mlp --work-dir DIR [--thresholds 230 229 228.7] [--max-minutes M]

The VampPrior race (benchmarks/vamp_race.py) times kvae against a PyTorch
reference of `fashion-vamp`; this times a preset that has no reference, with
the same parts: the kvae worker trains one epoch at a time and dumps its
weights, the evaluator scores every epoch off the clock (k = 100 screen, the
k = 1000 estimate that judges a crossing on the first 1,000 test images of the
published draw: vamp_race.FULL), and the clock is the sum of kvae's epochs with
their validation and checkpoint. DIR keeps the run directory and the record
(DIR/crossing.json, rewritten after every epoch); the same command run again
continues where it stopped. It prints one line per epoch and, at the end, each
threshold's epoch and clock.
"""

import argparse
import json
import os
import time

from benchmarks import harness, vamp_race
from benchmarks.worker import dump_template

RECORD, RUN_DIR = "crossing.json", "run"


def run(preset, settings, work, progress, max_minutes=None):
    """Races kvae alone on `preset` in the folder `work`; returns the record (also in work/RECORD).

    `max_minutes` bounds this sitting only; it is not part of the settings a
    continued record must match. A folder holding a run directory but no record
    is refused: that training cannot be counted on the clock.
    """
    record_path, run_dir = os.path.join(work, RECORD), os.path.join(work, RUN_DIR)
    resume = None
    if os.path.exists(run_dir) and not os.path.exists(record_path):
        raise ValueError(f"{work} holds a run directory ({RUN_DIR}) but no record ({RECORD}). "
                         f"Use an empty folder for a new measurement.")
    if os.path.exists(record_path):
        with open(record_path) as f:
            resume = json.load(f)
        try:
            vamp_race.check_resumable(resume, settings, preset)
        except ValueError as e:
            raise ValueError(f"{record_path}: {e}") from None
    r = vamp_race.recipe(settings, preset)
    dump = os.path.join(work, "weights")
    os.makedirs(dump, exist_ok=True)
    specs = {
        "kvae": {"kind": "kvae", "config": {**r, "run_dir": run_dir},
                 "dump": dump_template(dump, "kvae"), "val_limit": settings.get("val_limit")},
        "evaluator": {"kind": "evaluator", "config": r, "num_images": settings["num_images"]},
    }
    started = time.monotonic()
    wall_before = resume["wall_s"] if resume else 0.0
    result = {"preset": preset, "recipe": r, "settings": settings, "test_draw": vamp_race.TEST_DRAW,
              "wall_s": wall_before, "sittings": (resume["sittings"] + 1) if resume else 1}

    def save(state):
        result.update(state, wall_s=wall_before + time.monotonic() - started)
        with open(record_path + ".part", "w") as f:
            json.dump(result, f, indent=1)
        os.replace(record_path + ".part", record_path)

    workers = harness.start_all(specs, work)
    evaluator = workers.pop()
    previous = {k: resume[k] for k in ("curves", "crossed", "gaps")} if resume else None
    try:
        limits = {"max_minutes": max_minutes} if max_minutes else {}
        save(harness.race(workers, evaluator, dump, {**settings, **limits},
                          settings["thresholds"], progress,
                          started=started, on_epoch=save, resume=previous))
    finally:
        harness.close_all(workers + [evaluator])
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", required=True, help="a kvae train preset, e.g. fashion-mlp")
    p.add_argument("--work-dir", required=True, help="keeps the training state and the record; run again to continue")
    p.add_argument("--max-minutes", type=float,
                   help="stop at the first epoch boundary after this many minutes of this sitting")
    p.add_argument("--thresholds", type=float, nargs="+", default=vamp_race.FULL["thresholds"],
                   help=f"NLL thresholds in nats (default {' '.join(map(str, vamp_race.FULL['thresholds']))})")
    args = p.parse_args(argv)
    settings = {**{k: v for k, v in vamp_race.FULL.items() if k not in ("probe", "max_minutes")},
                "thresholds": sorted(args.thresholds, reverse=True)}
    os.makedirs(args.work_dir, exist_ok=True)
    try:
        result = run(args.preset, settings, args.work_dir, lambda msg: print(msg, flush=True), args.max_minutes)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    print(f"{args.preset}: stopped ({result['stopped']}) after {len(result['curves']['kvae'])} epochs, "
          f"{result['wall_s'] / 60:.1f} min in {result['sittings']} sitting(s)")
    curve = result["curves"]["kvae"]
    for t in settings["thresholds"]:
        epoch = result["crossed"]["kvae"].get(harness.threshold_key(t))
        if epoch is None:
            print(f"  {t:g} nats: not crossed")
        else:
            p = curve[epoch - 1]
            print(f"  {t:g} nats: epoch {epoch}, {p['clock_s']:.0f} s of kvae's clock "
                  f"({p['train_clock_s']:.0f} s training only), NLL {p['nll']:.2f} ± {p['nll_stderr']:.2f}")


if __name__ == "__main__":
    main()
