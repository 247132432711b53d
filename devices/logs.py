"""Holding back the native log lines that TensorFlow and LiteRT print whatever their log level says."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

# absl logs before it is initialised, so TF_CPP_MIN_LOG_LEVEL does not silence these start-up and converter lines.
# Errors other than the known ones below still get through.
_NATIVE_NOISE = re.compile(
    r"^(?:[IW]\d{4} |WARNING: All log messages before absl::InitializeLog|INFO: |"
    r"E\d{4} .*(?:failed call to cuInit|Unable to register cu\w+ factory)|"
    r"To enable the following instructions|This TensorFlow binary is optimized)"
)


@contextlib.contextmanager
def quiet_native_logs():
    """Hold back native stderr chatter for the duration of the block.

    Lines that are not known noise are written back to stderr afterwards. ``EDGEX_DEBUG=1`` shows everything live.
    """
    if os.environ.get("EDGEX_DEBUG") == "1":
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [
                line
                for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not _NATIVE_NOISE.match(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
