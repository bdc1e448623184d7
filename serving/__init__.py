"""Serving kvae artifacts with onnxruntime: Python runtime, CLI and an Open Inference Protocol server.

Knows only the artifact contract (ARTIFACTS.md); never imports tensorflow, keras or kvae.
Imports are lazy so that `kvae --help` does not pay for onnxruntime.
"""

__all__ = ["Runtime", "ArtifactError", "InputError"]


def __getattr__(name):
    if name == "Runtime":
        from .runtime import Runtime

        return Runtime
    if name in ("ArtifactError", "InputError"):
        from . import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'serving' has no attribute {name!r}")
