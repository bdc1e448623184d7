"""kvae: variational autoencoders for Keras 3 that can leave Python."""

__version__ = "0.1.0"

# Importing the classes registers them with Keras, so that
# `import kvae; keras.saving.load_model("model.keras")` works.
from kvae.autoencoder import Autoencoder  # noqa: E402
from kvae.hvae import HVAE  # noqa: E402
from kvae.layers import Sampling  # noqa: E402
from kvae.optimizers import FusedAdam  # noqa: E402  (the optimizer in `kvae train`'s checkpoints)
from kvae.vae import VAE  # noqa: E402

__all__ = ["VAE", "HVAE", "Autoencoder", "Sampling", "FusedAdam", "__version__"]
