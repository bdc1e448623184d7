"""Run by test_backends.py under KERAS_BACKEND=torch (or jax): fit a small VAE, save it, try to export.

    KERAS_BACKEND=torch python tests/backend_worker.py OUT_DIR
"""

import json
import sys

import keras
import numpy as np

from kvae import VAE, architectures
from kvae.data import load_dataset, pipeline

out = sys.argv[1]
BETA = 0.5  # not 1, so that a loss which ignores beta shows
x = pipeline.binarize_once(load_dataset().x_train[:1000])
encoder, decoder = architectures.build("mlp", (28, 28, 1), 4)
model = VAE(encoder, decoder, seed=0, beta=BETA)  # no free bits: loss = reconstruction + beta * KL exactly
model.compile(optimizer=keras.optimizers.Adam(1e-3))
history = model.fit(x, epochs=3, batch_size=100, verbose=0).history
model.save(f"{out}/model.keras")
z = np.random.default_rng(0).standard_normal((8, 4)).astype("float32")
np.save(f"{out}/z.npy", z)
np.save(f"{out}/decoded.npy", model.decode(z))
try:
    from kvae_export import export_vae

    export_vae(model, f"{out}/artifacts", check_images=x[:16])
    export_error = None
except Exception as e:  # the clear error is what the test checks
    export_error = f"{type(e).__name__}: {e}"
json.dump({"backend": keras.backend.backend(), "beta": BETA, "history": history, "export_error": export_error}, open(f"{out}/result.json", "w"))
