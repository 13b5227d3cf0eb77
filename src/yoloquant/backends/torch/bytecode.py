"""Whether this Python keeps compiled bytecode (``.pyc``) for torch's compiler stack.

Without it every process compiles about 1,500 modules of ``torch._dynamo``, inductor and sympy from source again:
on the lent H200 a saved precompiled engine (batch 1 and 16) loaded in 4.6-4.8 s with ``.pyc`` files and in
9.3-10.6 s without (``benchmarks/gpu_torch.py --phase load-bytecode``; docs/gpu.md).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import sys
from pathlib import Path

__all__ = ["has_bytecode", "warn_if_compiled_from_source"]

log = logging.getLogger(__name__)


def has_bytecode(source: Path) -> bool:
    """A ``.pyc`` of ``source`` is where this Python looks for one (``sys.pycache_prefix`` and ``-O`` included)."""
    return Path(importlib.util.cache_from_source(str(source))).is_file()


@functools.cache
def warn_if_compiled_from_source(source: Path) -> bool:
    """Log a warning, once per process, when the already imported module ``source`` has no ``.pyc`` (so Python
    compiled it, and will compile it again in the next process); True when it warned."""
    if has_bytecode(source):
        return False
    why = "; PYTHONDONTWRITEBYTECODE is set" if sys.flags.dont_write_bytecode else ""
    log.warning(
        "this Python keeps no .pyc files for torch's compiler stack (%s has none%s): every process compiles it "
        "from source again, about 5 s of each engine load on an H200. Run `python -m compileall -q %s` once, or "
        "set PYTHONPYCACHEPREFIX to a writable folder and leave PYTHONDONTWRITEBYTECODE unset",
        source,
        why,
        source.parents[1],
    )
    return True
