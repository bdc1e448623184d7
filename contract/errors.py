"""One error family for kvae, kvae_export and kvae_serving.

Every error kvae raises on purpose is a KvaeError: something the user can
fix, said with the fix ("... Received: ..."). Each kind carries the exit code
the `kvae` command ends with (`kvae <command>: error: <message>`) and the HTTP
status the server answers with. Kinds that used to be ValueError or
RuntimeError still are, so `except ValueError` keeps working.
"""


class KvaeError(Exception):
    """Base of kvae's errors. `exit_code`: for the command; `status`: for HTTP."""

    exit_code = 1
    status = 500


class ConfigError(KvaeError, ValueError):
    """A setting or argument is invalid: the message names it and what it accepts."""

    exit_code = 2
    status = 400


class InputError(KvaeError, ValueError):
    """A request or argument does not fit the model; the message says expected vs received."""

    exit_code = 2
    status = 400


class NotFoundError(InputError):
    """A request names a model or route that does not exist."""

    status = 404


class DataError(KvaeError, ValueError):
    """Training or evaluation data is missing, unreadable or malformed; the message names the files."""

    exit_code = 3
    status = 400


class RunDirError(KvaeError, ValueError):
    """A run directory is missing files, holds damaged ones, or belongs to another config."""

    exit_code = 4


class TrainingDiverged(KvaeError, RuntimeError):
    """The loss became NaN or infinite; the run directory keeps the last good epoch."""

    exit_code = 5


class ExportError(KvaeError, RuntimeError):
    """An export could not be written; nothing was published."""

    exit_code = 6


class VerificationError(ExportError):
    """An exported model does not reproduce Keras within the tolerance; nothing was published."""

    exit_code = 7


class ArtifactError(KvaeError):
    """An artifacts folder is missing, incomplete or corrupt: re-export it."""

    exit_code = 8
    status = 500


EXIT_CODES = {cls.__name__: cls.exit_code for cls in (
    KvaeError, ConfigError, InputError, DataError, RunDirError, TrainingDiverged, ExportError, VerificationError,
    ArtifactError,
)}
