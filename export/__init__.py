"""Export a trained kvae VAE as separate encoder and decoder models in SavedModel and ONNX.

A VampPrior VAE also gets its learned prior as two models: prior (a seeded
draw from the mixture, noise in, z out) and log_prior (z -> log p(z)). A
two-level HVAE (kvae.hvae.HVAE) gets format_version 3: encoder (x, noise ->
z, log q(z|x)), decoder, prior and log_prior on its flat code z = [z1 | z2].

    from . import export_run
    export_run("runs/fashion-mlp", "artifacts")

writes the folder described in ARTIFACTS.md, after proving that the
SavedModel and ONNX outputs equal the Keras outputs within 1e-5.
"""

from .api import ExportResult, export_run, export_vae
from .errors import ExportError

__all__ = ["ExportError", "ExportResult", "export_run", "export_vae"]
