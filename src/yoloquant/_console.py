"""What the command line prints besides its own output: warnings as one log line, library chatter off.

The CLI owns its process, so it may set what a library must not (STYLE.md 3): it does so only for the
duration of one command, and restores Python's warning handling afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import TextIO

from yoloquant._optional import available

__all__ = ["console"]

log = logging.getLogger("yoloquant")

# Warnings whose content the printed table already shows (the noisy-latency marker and its footnote).
_SHOWN_IN_TABLE = (r"latency of .* is noisy",)


def _as_log_line(  # noqa: PLR0917 - the signature of warnings.showwarning
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` replacement: one ``WARNING`` line, without the source file and code line."""
    log.warning("%s", str(message).strip().splitlines()[0] if str(message).strip() else category.__name__)


@contextlib.contextmanager
def console(*, quiet: bool = False) -> Iterator[None]:
    """Within this block, Python warnings are one log line each and ONNX Runtime logs errors only when quiet.

    Example:
        >>> with console(quiet=True):  # doctest: +SKIP
        ...     pipe.run("runs/x")
    """
    with warnings.catch_warnings():
        warnings.showwarning = _as_log_line
        for pattern in _SHOWN_IN_TABLE:
            warnings.filterwarnings("ignore", message=pattern)
        if quiet and available("onnxruntime"):
            from yoloquant.backends.ort.engine import log_errors_only

            log_errors_only()
        yield
