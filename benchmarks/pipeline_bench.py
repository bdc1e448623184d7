"""The tf.data pipeline alone: CPU and wall time per image of kvae's train_dataset vs the frozen baseline.

    python -m benchmarks.pipeline_bench [--threads 1] [--rounds 5]

Both pipelines produce the same batches (checked here); each is iterated over
all 50,000 training images (batch 100, dynamic binarization), in turns.
`--threads 1` sets TF_NUM_INTRAOP/INTEROP_THREADS=1 first, which makes the
CPU time per image a steadier figure on a shared machine.
"""

import argparse
import os
import time


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--limit", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = str(args.threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    from benchmarks import pipeline_before
    from kvae.data import load_dataset, pipeline

    x = load_dataset("fashion_mnist").x_train[: args.limit]
    datasets = {"before": pipeline_before.train_dataset(x, 100, True, seed=0),
                "kvae": pipeline.train_dataset(x, 100, True, seed=0)}
    first = {k: [b.numpy() for b in ds.take(3)] for k, ds in datasets.items()}
    assert all(np.array_equal(a, b) for a, b in zip(first["before"], first["kvae"])), "the pipelines differ"
    for ds in datasets.values():
        for _ in ds:
            pass
    times = {k: [] for k in datasets}
    for r in range(args.rounds):
        for k in (list(datasets) if r % 2 == 0 else list(datasets)[::-1]):
            c, t = time.process_time(), time.perf_counter()
            for _ in datasets[k]:
                pass
            times[k].append(((time.process_time() - c) / len(x) * 1e6, (time.perf_counter() - t) / len(x) * 1e6))
    out = {}
    for k, v in times.items():
        out[k] = {"cpu_us_per_image": float(np.median([a for a, _ in v])), "wall_us_per_image": float(np.median([b for _, b in v]))}
        print(f"{k:>7}: {out[k]['cpu_us_per_image']:.2f} CPU-us per image, {out[k]['wall_us_per_image']:.2f} wall-us per image")
    return out


if __name__ == "__main__":
    main()
