"""Atomic publication of an artifacts folder.

Everything is built in a temporary sibling OUT.tmp-<random> and renamed into
place only after verification, so OUT is either the previous export or the
complete new one, never a half-written folder. Renames stay on one file
system because the temporary folder is a sibling.
"""

import contextlib
import os
import secrets
import shutil
import tempfile

from .errors import OutputExistsError


def check_target(out, force):
    if os.path.lexists(out) and not force:
        raise OutputExistsError(f"{out} already exists; pass --force (force=True) to replace it.")


@contextlib.contextmanager
def staging(out, force):
    """Yields an empty temporary folder next to `out`; it becomes `out` if the block succeeds.

    If the block raises (or is interrupted), the temporary folder is removed
    and `out` is left as it was.
    """
    check_target(out, force)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(out) + ".tmp-", dir=parent)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private (0700); artifacts are for servers to read
    try:
        yield tmp
        check_target(out, force)  # it may have appeared while we were building
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace(new, out):
    """Renames `new` to `out`; an existing `out` is renamed away first and deleted last."""
    if not os.path.lexists(out):
        os.rename(new, out)
        return
    old = f"{out}.old-{secrets.token_hex(4)}"
    os.rename(out, old)
    try:
        os.rename(new, out)
    except BaseException:
        os.rename(old, out)  # put the previous export back
        raise
    if os.path.isdir(old) and not os.path.islink(old):
        shutil.rmtree(old)
    else:
        os.remove(old)
