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
    r"To enable the following instructions|This TensorFlow binary is optimized|"
    r"fully_quantize: \d+, inference_type: |"
    r"ERROR: Subgraph reshaping is enabled by default)"  # XNNPACK's latest-features flag, harmless
)


@contextlib.contextmanager
def _held_back(fd: int, stream):
    """Redirect file descriptor ``fd`` to a temporary file; replay the lines that are not noise to ``stream``."""
    try:
        stream.flush()
        saved = os.dup(fd)
    except (OSError, ValueError, AttributeError):  # no real file descriptor (embedded interpreters, captured IO)
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), fd)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
            os.dup2(saved, fd)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines(keepends=True) if not _NATIVE_NOISE.match(line)]
            if kept:
                stream.write("".join(kept))
                stream.flush()


@contextlib.contextmanager
def quiet_native_logs():
    """Hold back native log lines (C++ code writes them to the process's stdout and stderr) during the block.

    Lines that are not known noise are written back afterwards. ``EDGEX_DEBUG=1`` shows everything live.
    """
    if os.environ.get("EDGEX_DEBUG") == "1":
        yield
        return
    with _held_back(2, sys.stderr), _held_back(1, sys.stdout):
        yield
