"""Atomic publication of an artifacts folder.

Everything is built in a temporary sibling OUT.tmp-<random> and put in place only after
verification, so OUT is either the previous export or the complete new one, never a
half-written folder. Renames stay on one file system because the temporary folder is a sibling.

Replacing an existing OUT is one atomic step. On Linux, renameat2(RENAME_EXCHANGE) swaps the
new folder and the old one in a single system call: OUT names the previous export until the
instant it names the new one, and never nothing; the old folder, now under the temporary
name, is deleted afterwards. Why this and not OUT as a symlink to a versioned folder flipped
with os.replace (also atomic, and portable): that changes what OUT is, a link with versioned
folders beside it, which whoever copies, mounts, rsyncs or serves the folder (Triton's model
repository, `kvae serve`, the tests' "nothing beside OUT" rule) would see; the exchange keeps
OUT a plain folder and leaves nothing beside it. Where the exchange is unavailable (not Linux,
glibc older than 2.28, a file system without RENAME_EXCHANGE), OUT is renamed away and the new
folder renamed into place: two renames, with a window of microseconds in which OUT is missing.

A reader that opens files one by one while OUT is swapped can still see the old manifest and a
new file; serving checks every file it loads against the manifest's sha256, so that reads as an
ArtifactError ("re-export"), never as a silent mix.

An export killed midway leaves OUT.tmp-* (a half-built folder or, right after the exchange, the
old one) or OUT.old-* (the fallback's); the next export to OUT deletes them.

Exports to one OUT are serialized by fcntl.flock on a lock file beside it, .OUT.lock, held from
before the temporary folder is made until OUT is published: the second export waits (and says
so on stderr), then publishes in turn, or fails with "already exists" without force. Debris is
only deleted under the lock, so it is never another live export's temporary folder. The lock
file is removed when the export ends (a killed export leaves it; the next one reuses it).
"""

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
import sys
import tempfile

from .errors import OutputExistsError

try:
    import fcntl
except ImportError:  # Windows: no flock; exports there are not serialized
    fcntl = None

_AT_FDCWD = -100  # linux/fcntl.h
_RENAME_EXCHANGE = 2  # linux/fs.h: atomically exchange oldpath and newpath


def check_target(out, force):
    if os.path.lexists(out) and not force:
        raise OutputExistsError(f"{out} already exists; pass --force (force=True) to replace it.")


@contextlib.contextmanager
def staging(out, force):
    """Yields an empty temporary folder next to `out`; it becomes `out` if the block succeeds.

    If the block raises (or is interrupted), the temporary folder is removed
    and `out` is left as it was. The whole block runs under `out`'s lock (lock()).
    """
    check_target(out, force)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    with lock(out):
        check_target(out, force)  # another export may have published it while we waited
        remove_debris(out)
        tmp = tempfile.mkdtemp(prefix=os.path.basename(out) + ".tmp-", dir=parent)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private (0700); artifacts are for servers to read
        try:
            yield tmp
            check_target(out, force)  # something other than kvae may have made it while we were building
            _replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def lock_path(out):
    """The lock file that serializes exports to `out`: .NAME.lock beside it."""
    parent, name = os.path.split(out)
    return os.path.join(parent, f".{name}.lock")


@contextlib.contextmanager
def lock(out):
    """Holds an exclusive flock on lock_path(out) for the block; waits for another holder, saying so once."""
    if fcntl is None:
        yield
        return
    path = lock_path(out)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"kvae export: another export is writing {out}; waiting for it to finish (lock {path}).",
                      file=sys.stderr, flush=True)
                fcntl.flock(fd, fcntl.LOCK_EX)
            # The holder before us removes the file when it is done: if the name now leads to another
            # file (or none), our lock is on a removed file and locks nothing; take the new one.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still holding the lock: waiters on this file then retry (see above)
        os.close(fd)


def remove_debris(out):
    """Deletes OUT.tmp-* and OUT.old-* folders that interrupted exports to `out` left beside it.

    Call it only while holding lock(out): every such folder is then stale, none a live export's.
    """
    parent, name = os.path.split(out)
    pattern = re.compile(re.escape(name) + r"\.(tmp|old)-[A-Za-z0-9_]+")
    for entry in os.listdir(parent):
        if pattern.fullmatch(entry):
            path = os.path.join(parent, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)


def _replace(new, out):
    """Puts the folder `new` at `out` in one atomic step where the system allows (see the module's docstring).

    An existing `out` ends up under the name `new` (exchange) or OUT.old-* (fallback) and is deleted last.
    """
    if not os.path.lexists(out):
        os.rename(new, out)
        return
    if _exchange(new, out):
        old = new  # the exchange left the previous export under the temporary name
    else:
        old = f"{out}.old-{secrets.token_hex(4)}"
        os.rename(out, old)
        try:
            os.rename(new, out)
        except BaseException:
            os.rename(old, out)  # put the previous export back
            raise
    if os.path.isdir(old) and not os.path.islink(old):
        shutil.rmtree(old, ignore_errors=True)  # what a kill leaves here, the next export removes
    else:
        os.remove(old)


def _renameat2():
    """libc's renameat2, or None where there is none (not Linux, glibc < 2.28)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _exchange(a, b):
    """Atomically swaps the paths `a` and `b` (both exist); False where the system cannot, OSError if it fails."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):  # kernel or file system without it
        return False
    raise OSError(err, os.strerror(err), a, None, b)
