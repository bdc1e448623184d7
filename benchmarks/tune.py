"""Tuning experiments: variants of kvae's fit (and the references) alternated in one run.

    python -m benchmarks.tune --arch mlp --rounds 5 --torch \
        --variant 'plain_adam={"optimizer": "keras.optimizers:Adam"}' \
        --variant 'spe1={"compile_overrides": {"steps_per_execution": 1}}' \
        --variant 'jit={"compile_overrides": {"jit_compile": true}}'

Each variant is a kvae worker (kvae.train.train with the overrides applied to
its compile / fit calls, another optimizer class or another
`train_dataset` as "module:function"); "kvae" (no overrides) is always
there. Prints medians and per-round ratios to "kvae"; BENCHMARKS.md's tuning
notes come from runs of this script.
"""

import argparse
import json
import tempfile

from benchmarks import harness
from benchmarks.run import contender_specs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=("mlp", "conv"), default="mlp")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--torch", action="store_true", help="add the PyTorch reference")
    p.add_argument("--keras-example", action="store_true", help="add the keras.io-style reference")
    p.add_argument("--variant", action="append", default=[], help="NAME=JSON worker overrides")
    p.add_argument("--save", help="write the raw epoch reports to this JSON file")
    p.add_argument("--torch-variant", action="append", default=[], help="NAME=JSON overrides of the PyTorch worker")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kvae-tune-") as tmp:
        base = contender_specs(args.arch, tmp, train_limit=args.train_limit)
        specs = {"kvae": base["kvae"]}
        for v in args.variant:
            name, _, overrides = v.partition("=")
            spec = json.loads(json.dumps(base["kvae"]))
            spec["config"]["run_dir"] += "-" + name
            spec.update(json.loads(overrides))
            specs[name] = spec
        if args.torch:
            specs["torch"] = base["torch"]
        for t in args.torch_variant:
            name, _, overrides = t.partition("=")
            specs[name] = {**base["torch"], **json.loads(overrides)}
        if args.keras_example:
            specs["keras_example"] = base["keras_example"]
        workers = harness.start_all(specs, tmp)
        try:
            reports = harness.alternate(workers, args.warmup, args.rounds)
        finally:
            harness.close_all(workers)
    summary = harness.throughput_summary(reports)
    if args.save:
        with open(args.save, "w") as f:
            json.dump({"args": vars(args), "reports": reports, "summary": summary}, f, indent=1)
    for name, s in summary.items():
        ratio = s["ratio_to"].get("kvae", {}).get("median")
        tr = s["ratio_to"].get("torch", {}).get("median")
        print(f"{name:>16}: {s['samples_per_s']:9,.0f} samples/s  {s['samples_per_cpu_s']:9,.0f} per CPU-s  "
              f"cores {s['cores_used']:.2f} others {s['others_cores'] or 0:.2f}  x kvae {ratio if ratio is None else round(ratio, 3)}  "
              f"x torch {tr if tr is None else round(tr, 3)}")
    return summary


if __name__ == "__main__":
    main()
