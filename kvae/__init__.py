"""kvae: variational autoencoders for Keras 3 that can leave Python.

The public classes load lazily (PEP 562), so `import kvae` and the `kvae`
command line start without importing Keras and TensorFlow until they are used.
"""

import importlib

__version__ = "0.1.0"

_PUBLIC = {"VAE": "kvae.vae", "Autoencoder": "kvae.autoencoder", "Sampling": "kvae.layers"}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'kvae' has no attribute {name!r}")
