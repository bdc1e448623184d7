"""The two kinds of failure a caller can act on."""


class ServingError(Exception):
    """Base class of the errors serving/ raises on purpose."""


class ArtifactError(ServingError):
    """The artifacts directory is missing, incomplete or corrupt: re-export it."""


class InputError(ServingError, ValueError):
    """A request or argument does not fit the model; the message says expected vs received."""
