"""Runs the three experiments in order and writes DIR/results.json, DIR/report.md and the figures."""

import dataclasses
import json
import os
import time

from . import classifier, figures, generation, rbm, report, ring
from .scoring import Scorer


@dataclasses.dataclass(frozen=True)
class Sizes:
    train_limit: int | None  # first N training images (None: all 50,000)
    classifier_epochs: int
    n_samples: int  # generated images per sampler, and test images they are compared with
    latent_dim: int
    epochs: int  # autoencoder and VAE
    ring_train: int
    ring_samples: int
    ring_epochs: int
    ring_batch: int
    rbm_components: int
    rbm_epochs: int
    gibbs_steps: tuple


FULL = Sizes(None, 4, 10_000, 16, 20, 20_000, 10_000, 100, 128, 256, 15, (1, 10, 100, 1000))
QUICK = Sizes(2_000, 1, 500, 8, 2, 2_000, 2_000, 50, 32, 32, 1, (1, 10, 50))


def run_all(splits, out_dir, quick, seed, verbose=0, log=print):
    """Returns the results dict; `splits` as from kvae.data.load_dataset."""
    sizes = QUICK if quick else FULL
    os.makedirs(out_dir, exist_ok=True)
    if sizes.train_limit:
        splits = dataclasses.replace(splits, x_train=splits.x_train[: sizes.train_limit], y_train=splits.y_train[: sizes.train_limit])
    timings, start = {}, time.perf_counter()

    def stage(name):
        now = time.perf_counter()
        timings[name] = now - stage.last
        stage.last = now
        log(f"[experiments] {name} done in {timings[name]:.0f} s")

    stage.last = start
    net = classifier.train_classifier(splits.x_train, splits.y_train, splits.x_test, splits.y_test,
                                      sizes.classifier_epochs, seed, verbose=verbose)
    scorer = Scorer(net, splits.x_test[: sizes.n_samples], seed + 1)
    stage("classifier")
    gen, gen_images, vae = generation.run(splits, scorer, sizes.n_samples, sizes.latent_dim, sizes.epochs, seed + 10, verbose=verbose)
    figures.save_grids(gen_images, os.path.join(out_dir, "generation.png"))
    stage("generation")
    ring_results, points = ring.run(sizes.ring_train, sizes.ring_samples, sizes.ring_epochs, seed + 20,
                                     batch_size=sizes.ring_batch, verbose=verbose)
    figures.save_ring(points["data"], points["samples"], os.path.join(out_dir, "ring.png"))
    stage("ring")
    rbm_results, rbm_images = rbm.run(splits, scorer, vae, sizes.n_samples, sizes.rbm_components, sizes.rbm_epochs,
                                      sizes.gibbs_steps, seed + 30)
    figures.save_grids(rbm_images, os.path.join(out_dir, "rbm.png"))
    stage("rbm")
    timings["total"] = time.perf_counter() - start
    results = {
        "settings": {"quick": quick, "seed": seed, "n_train": len(splits.x_train), **dataclasses.asdict(sizes)},
        "timings": timings,
        "classifier": {"test_accuracy": net.test_accuracy},
        "generation": gen,
        "ring": ring_results,
        "rbm": rbm_results,
    }
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    report.write(results, out_dir)
    return results
