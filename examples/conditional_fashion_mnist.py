"""Class-conditional generation on Fashion-MNIST, judged by a classifier.

1. `kvae train --num-classes 10`: a conditional VAE on the 50,000 training
   images (its run directory gets class_samples.png, one row per class).
2. `kvae export`: encoder (x, y) and decoder (z, y) as SavedModel and ONNX.
3. A small Keras CNN classifier, trained on the same 50,000 real images.
4. The ONNX decoder, in onnxruntime, generates `--per-class` images of each
   class from the prior (the contract's seeded z); the classifier labels
   them. Its accuracy says how often a sample shows the class that was asked
   for (10% by chance); its accuracy on the real test images is the ceiling.

    python examples/conditional_fashion_mnist.py --out runs/cvae-example [--epochs 20] [--quick]

Writes OUT/run (the kvae run), OUT/artifacts, OUT/onnx_class_samples.png and
OUT/report.json, and prints the numbers.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

from kvae.data import FASHION_MNIST_CLASSES

NUM_CLASSES = 10


def train_classifier(x_train, y_train, epochs, seed):
    """A small CNN, (n, 28, 28, 1) uint8 -> logits (n, 10); about 90% on the real test set after 3 epochs."""
    import keras

    keras.utils.set_random_seed(seed)
    classifier = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Rescaling(1 / 255.0),  # takes uint8 pixels; generated images are scaled back to 0..255
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.3),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(NUM_CLASSES),
    ])
    classifier.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    classifier.fit(x_train, y_train, epochs=epochs, batch_size=128, verbose=2)
    return classifier


def predict(classifier, images01):
    """Images with pixels in [0, 1] -> predicted class ids (n,)."""
    return np.argmax(classifier.predict(images01 * 255.0, batch_size=500, verbose=0), axis=1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/cvae-example")
    p.add_argument("--architecture", choices=["mlp", "conv"], default="mlp")
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--epochs", type=int, default=20, help="VAE training epochs")
    p.add_argument("--classifier-epochs", type=int, default=3)
    p.add_argument("--per-class", type=int, default=500, help="generated images per class")
    p.add_argument("--temperature", type=float, default=1.0, help="scale of the prior samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a smoke run: 2,000 images, 1 epoch each, 20 per class")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.classifier_epochs, args.per_class = 1, 1, 20

    from kvae_export import export_run
    from kvae.config import TrainConfig
    from kvae.data import load_dataset
    from kvae.train import train
    from kvae_serving import Runtime, images

    started = time.time()
    splits = load_dataset("fashion_mnist")
    limit = 2000 if args.quick else None
    run_dir, artifacts = os.path.join(args.out, "run"), os.path.join(args.out, "artifacts")
    config = TrainConfig(
        run_dir=run_dir, architecture=args.architecture, latent_dim=args.latent_dim, num_classes=NUM_CLASSES,
        epochs=args.epochs, seed=args.seed, train_limit=limit,
    )
    result = train(config, splits=splits, verbose=2)
    export_run(run_dir, artifacts, force=True)
    classifier = train_classifier(splits.x_train[:limit], splits.y_train[:limit], args.classifier_epochs, args.seed)

    # Real test images: the classifier's own accuracy, the ceiling for generated ones.
    real_accuracy = float((predict(classifier, splits.x_test / 255.0) == splits.y_test).mean())
    # Generated images, from the ONNX decoder alone.
    runtime = Runtime(artifacts)
    labels = np.repeat(np.arange(NUM_CLASSES), args.per_class)
    generated = runtime.sample(len(labels), seed=args.seed, temperature=args.temperature, labels=labels)
    predicted = predict(classifier, generated)
    per_class = {FASHION_MNIST_CLASSES[c]: float((predicted[labels == c] == c).mean()) for c in range(NUM_CLASSES)}
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), int)
    np.add.at(confusion, (labels, predicted), 1)
    # The same z with every label: one column per z, one row per class.
    z = runtime.sample_z(10, seed=args.seed + 1)
    rows = [runtime.decode(z, np.full(10, c)) for c in range(NUM_CLASSES)]
    images.save_grid(np.concatenate(rows), os.path.join(args.out, "onnx_class_samples.png"), columns=10)

    report = {
        "conditional_sample_accuracy": float((predicted == labels).mean()),
        "classifier_test_accuracy": real_accuracy,
        "chance": 1 / NUM_CLASSES,
        "per_class_accuracy": per_class,
        "confusion": confusion.tolist(),  # rows: requested class, columns: predicted class
        "samples_per_class": args.per_class,
        "temperature": args.temperature,
        "vae_test_metrics": result.test_metrics,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "seconds": round(time.time() - started, 1),
    }
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(
        f"classifier accuracy on class-conditional ONNX samples: {report['conditional_sample_accuracy']:.3f} "
        f"({len(labels)} samples, temperature {args.temperature}; chance 0.100); "
        f"on the real test images: {real_accuracy:.3f}"
    )
    for name, accuracy in per_class.items():
        print(f"  {name:<12} {accuracy:.3f}")
    print(f"report: {os.path.join(args.out, 'report.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
