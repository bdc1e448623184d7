"""FLOP counts of the models and the machine's fp32 matmul peak.

Counts are 2 * multiply-adds of the Dense / Conv2D / Conv2DTranspose layers
(activations, losses and the optimizer are left out: they are O(parameters)
or O(activations), well under 1% here). One training step costs about 3x the
forward pass: the forward pass, then the gradients with respect to the
activations and to the weights, each a matmul of the same size.
"""

import math
import time

TRAIN_FACTOR = 3


def layer_macs(layer):
    """Multiply-adds of one Keras layer per example (0 for layers without weights)."""
    kind = type(layer).__name__
    if kind == "Dense":
        return int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
    if kind in ("Conv2D", "Conv2DTranspose"):
        kh, kw, a, b = (int(d) for d in layer.kernel.shape)
        if kind == "Conv2D":  # kernel (kh, kw, in, out): one MAC per output position, tap and in/out pair
            out_h, out_w = (int(d) for d in layer.output.shape[1:3])
            return out_h * out_w * kh * kw * a * b
        # Conv2DTranspose kernel (kh, kw, out, in): every input position scatters a kh x kw x out patch
        in_h, in_w = (int(d) for d in layer.input.shape[1:3])
        return in_h * in_w * kh * kw * a * b
    return 0


def model_macs(model):
    """Multiply-adds per example of a functional Keras model (nested models included)."""
    total = 0
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            total += model_macs(layer)
        else:
            total += layer_macs(layer)
    return total


def vae_flops(vae):
    """{"encoder", "decoder", "forward", "train"}: FLOPs per example of a kvae.VAE."""
    enc, dec = 2 * model_macs(vae.encoder), 2 * model_macs(vae.decoder)
    return {"encoder": enc, "decoder": dec, "forward": enc + dec, "train": TRAIN_FACTOR * (enc + dec)}


def peak_matmul_gflops(n=1024, seconds=3.0, repeats=5):
    """fp32 GFLOP/s of a TF n x n matmul chain in a tf.function: the best of `repeats` timed bursts.

    The best burst, not the median: the peak is what the cores can do when they
    are ours, and other jobs on a shared machine only ever lower it.
    """
    import tensorflow as tf

    a = tf.random.normal((n, n), seed=1)
    b = tf.random.normal((n, n), seed=2) / math.sqrt(n)

    @tf.function
    def chain(a, steps):
        for _ in tf.range(steps):
            a = tf.matmul(a, b)
        return tf.reduce_sum(a)

    chain(a, tf.constant(2)).numpy()  # trace and warm up
    t = time.perf_counter()
    chain(a, tf.constant(4)).numpy()
    per = (time.perf_counter() - t) / 4
    steps = max(2, int(seconds / repeats / per))
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        chain(a, tf.constant(steps)).numpy()
        rates.append(2 * n**3 * steps / (time.perf_counter() - t) / 1e9)
    return {"gflops": max(rates), "gflops_median": sorted(rates)[len(rates) // 2], "bursts": rates, "n": n}


def dense_step_gemms(model, batch):
    """(m, k, n) of every matmul in one training step of the Dense layers of `model`.

    Per Dense layer of kernel (i, o): the forward x @ W (batch, i)·(i, o), the
    weight gradient x^T @ dy (i, batch)·(batch, o), and the input gradient
    dy @ W^T (batch, o)·(o, i), which the encoder's first layer does not need
    (nothing upstream of it trains).
    """
    shapes = []
    for sub in (model.encoder, model.decoder):
        dense = [layer for layer in sub.layers if type(layer).__name__ == "Dense"]
        for j, layer in enumerate(dense):
            i, o = (int(d) for d in layer.kernel.shape)
            shapes += [(batch, i, o), (i, batch, o)]
            if not (sub is model.encoder and j == 0):
                shapes.append((batch, o, i))
    return shapes


def gemm_floor(shapes, library, steps=200, repeats=5):
    """Seconds per training step spent in the step's matmuls alone (best of `repeats` bursts).

    library "tensorflow" (one tf.function looping over the matmuls, so no
    Python between them) or "torch" (the calls from Python, as an eager
    training loop makes them). The floor a framework's step cannot go under
    with these kernels: everything else in the step (activations, loss,
    optimizer, input pipeline, dispatch) comes on top.
    """
    if library == "tensorflow":
        import tensorflow as tf

        pairs = [(tf.random.normal((m, k)), tf.random.normal((k, n))) for m, k, n in shapes]

        @tf.function
        def run(count):
            total = tf.constant(0.0)
            for _ in tf.range(count):
                for a, b in pairs:
                    total += tf.matmul(a, b)[0, 0]
            return total

        def burst(count):
            run(tf.constant(count)).numpy()
    else:
        import torch

        pairs = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]

        def burst(count):
            with torch.no_grad():
                for _ in range(count):
                    for a, b in pairs:
                        torch.mm(a, b)

    burst(5)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        burst(steps)
        best = min(best, (time.perf_counter() - t) / steps)
    return best
