"""Hides TensorFlow's start-up chatter from kvae's output, unless asked for (--verbose, KVAE_VERBOSE=1).

TensorFlow logs through absl before absl's logging is initialized, and such
lines ("I0000 ... port.cc:153] oneDNN custom operations are on ...") go
straight to file descriptor 2 whatever TF_CPP_MIN_LOG_LEVEL says. No library
setting removes them, so the command filters its own stderr at the file
descriptor: a pipe and a thread that drops lines in absl's INFO/WARNING
format and the few known start-up notices, and passes every other byte
(warnings, tracebacks, kvae's own messages) through unchanged.
"""

import atexit
import os
import re
import sys
import threading

NOISE = re.compile(
    rb"^(?:[IW]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] "  # absl INFO / WARNING lines
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags"
    rb"|E\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] oneDNN supports DT_INT32 only on platforms with AVX-512)"
)


def quiet_native_logs():
    """From now on, TensorFlow's start-up lines on stderr are dropped; everything else passes. Idempotent."""
    if getattr(quiet_native_logs, "active", False):
        return
    quiet_native_logs.active = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's own filter, for what goes through it
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_pass_through, args=(read_end, real), name="kvae-stderr", daemon=True)
    pump.start()

    def restore():
        sys.stderr.flush()
        os.dup2(real, 2)  # closes the pipe's last write end: the pump reads to the end and stops
        pump.join(timeout=5)

    atexit.register(restore)


def _pass_through(read_end, real):
    with os.fdopen(read_end, "rb") as pipe:
        for line in pipe:
            if not NOISE.match(line):
                os.write(real, line)
