"""For tests that press Ctrl-C on a child process (``send_signal(SIGINT)``).

A test run started in the background (``cmd &``, nohup) ignores SIGINT, its children inherit that, and Python
in them then installs no KeyboardInterrupt handler, so the Ctrl-C a test sends does nothing. Spawn such children
inside :func:`children_take_ctrl_c`.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["children_take_ctrl_c"]


@contextmanager
def children_take_ctrl_c() -> Iterator[None]:
    """Handle SIGINT in this process while children start: ``exec`` resets a handled signal to its default (an
    ignored one stays ignored), so each child takes Ctrl-C. Main thread only, as ``signal.signal`` is."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
