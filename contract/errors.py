"""One error family for kvae, kvae_export and kvae_serving.

Every error kvae raises on purpose is a KvaeError: something the user can
fix, said with the fix ("... Received: ..."). Each kind carries the exit code
the `kvae` command ends with (`kvae <command>: error: <message>`) and the HTTP
status the server answers with. Kinds that used to be ValueError or
RuntimeError still are, so `except ValueError` keeps working.

    exit  kind               what went wrong
    1     KvaeError, OSError anything else kvae reports (an OSError: a file could not be read or written)
    2     ConfigError        a setting or argument: a bad flag, a path that does not exist, a run
                             directory or artifacts folder that is not one, an output that exists (--force)
    2     InputError         a request or argument that does not fit the model (HTTP 400; NotFoundError 404)
    3     DataError          training or evaluation data missing, unreadable or malformed
    4     RunDirError        a run directory whose files are damaged
    5     TrainingDiverged   the loss became NaN or infinite
    6     ExportError        an export could not be written
    7     VerificationError  the exported models do not reproduce Keras
    8     ArtifactError      an artifacts folder is incomplete or corrupt (hash mismatch, unreadable ONNX)
"""

import sys


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
    """A run directory holds damaged files (unreadable JSON, a model that does not load): the message says which."""

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


# Usage errors that are also another kind, so that `except FileNotFoundError` / `except ExportError` /
# `except ArtifactError` keep catching them: they exit 2, as ConfigError does.


class MissingPathError(ConfigError, FileNotFoundError):
    """A path argument does not exist, or is not what the command needs (a run directory, an evaluated run)."""


class OutputExistsError(ConfigError, ExportError):
    """The output folder exists and --force (force=True) was not given."""


class MissingArtifactsError(MissingPathError, ArtifactError):
    """The artifacts folder given does not exist or holds no manifest.json: not an artifacts folder at all."""


class MissingDataError(MissingPathError, DataError):
    """The data folder given (--image-folder) does not exist."""


def run_command(command, handler, args):
    """Runs a command's handler and returns its exit code; the one place kvae's errors meet the terminal.

    A KvaeError becomes one line on stderr, `kvae COMMAND: error: MESSAGE`, and its kind's exit code;
    an OSError (a file that cannot be read or written, a port in use) the same line and 1. Anything
    else is a bug and keeps its traceback.
    """
    try:
        return handler(args)
    except KvaeError as e:
        print(f"kvae {command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"kvae {command}: error: {e}", file=sys.stderr)
        return 1
